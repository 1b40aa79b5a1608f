"""One set of slot operations, three implementations.

The encoder (block.py, functions.py) is written once against this interface.
`CipherOps` runs it on CKKS ciphertexts. `PlainOps` runs it on float64 slot
vectors (the plaintext mirror): the same polynomials, masks, rotations and
refresh points, so whatever separates it from the float model is
approximation error and whatever separates the encrypted run from it is
encryption noise. `MatrixOps` runs the non-linear steps (functions.py) on
whole float64 tensors (nn.mirror.encode): the same approximations, fast
enough for a corpus, with no layout and no levels.

`need(x, levels, tag, bound)` is where a ciphertext may be refreshed: `tag`
names the site (and token), `bound` is the largest |value| the site can hold
for inputs inside the domains (nn/domains.py). Bootstrapping divides by the
power of two at or above it; the key holder of `--refresh client` refuses a
value beyond it (DomainError, naming the site); the mirrors record how much
of it each site used (`Stats.domain_use`), and so does every polynomial's
input against its interval [-1, 1].
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..ckks.evaluator import LevelMatch
from ..ckks.polynomial import evaluate_chebyshev
from .domains import DomainError


class DepthError(RuntimeError):
    pass


# Keep results off level 0 where possible: there only the base primes (~2^62)
# hold value * scale. One spare level gives them room.
SPARE_LEVELS = 1
# series of lower degree are evaluated at the least depth (baby steps of 2)
MIN_DEPTH_BELOW = 16
# a refreshed value may exceed its bound by this factor before the key holder
# refuses it (encryption noise on values that sit on the bound)
BOUND_SLACK = 1.0 + 1e-6


@dataclass
class Stats:
    refreshes: int = 0
    ops: dict = field(default_factory=dict)
    # site -> largest |value| / bound at a refresh site, or |input| of a polynomial
    # on [-1, 1]; above 1 the value left the domain the site was built for
    domain_use: dict = field(default_factory=dict)

    def tick(self, name, n=1):
        self.ops[name] = self.ops.get(name, 0) + n

    def use(self, site, value):
        if value > self.domain_use.get(site, -1.0):
            self.domain_use[site] = float(value)

    def worst(self):
        """(site, use) of the largest domain use, or (None, 0)."""
        if not self.domain_use:
            return None, 0.0
        site = max(self.domain_use, key=self.domain_use.get)
        return site, self.domain_use[site]


def refresh_site(tag: str) -> str:
    """A tag without its token, key group and feature chunk ids: one site of the circuit."""
    return re.sub(r"/[tghc]\d+", "", tag)


def _per_value(arg, n: int) -> list:
    """need_many's levels or bound: one per value, or one for all n."""
    return list(arg) if isinstance(arg, (list, tuple)) else [arg] * n


def _abs_max(v) -> float:
    v = np.asarray(v)
    return float(np.abs(v).max()) if v.size else 0.0


# ---------------------------------------------------------------- mirror
@dataclass
class PV:
    v: np.ndarray
    level: int

    @property
    def slots(self):
        return self.v.size


class PlainEvaluator(LevelMatch):
    """The ckks.Evaluator level rules on PV vectors, for evaluate_chebyshev in the mirror."""

    def adjust(self, ct, level):
        return ct if ct.level == level else PV(ct.v, level)

    def rescale(self, ct):
        return PV(ct.v, ct.level - 1)

    def add(self, a, b):
        a, b = self.match(a, b)
        return PV(a.v + b.v, a.level)

    def sub(self, a, b):
        a, b = self.match(a, b)
        return PV(a.v - b.v, a.level)

    def add_const(self, a, c):
        return PV(a.v + c, a.level)

    def mul_int(self, a, k):
        return PV(a.v * k, a.level)

    def mul_const(self, a, c, rescale=False):
        return PV(a.v * c, a.level - 1 if rescale else a.level)

    def mul(self, a, b, rescale=False):
        a, b = self.match(a, b)
        return PV(a.v * b.v, a.level - 1 if rescale else a.level)

    def square(self, a, rescale=False):
        return self.mul(a, a, rescale)


class _Refreshing:
    """need() and cheb() shared by the mirror and the encrypted ops: when to refresh
    and how polynomials deeper than the levels between refreshes are evaluated."""

    refresh_mode: str
    max_level: int
    refresh_level: int
    stats: Stats

    @property
    def period(self) -> int:
        return refresh_period(self.refresh_mode, self.max_level, self.refresh_level)

    def need(self, x, levels, tag, bound):
        self._observe(refresh_site(tag), x, bound)
        if x.level >= min(levels + SPARE_LEVELS, self.refresh_level):
            return x
        if self.refresh_mode == "none":
            raise DepthError(f"out of levels at {tag}: {x.level} left, {levels} needed "
                             "(use --refresh client or bootstrap)")
        self.stats.refreshes += 1
        return self._refresh(x, tag, bound)

    def need_many(self, xs, levels, tags, bound):
        """need() of several values at one time; levels and bound: one for all or one
        per value. With bootstrapping, two values that both need a refresh share one:
        x/Bx + i y/By is bootstrapped and a conjugation separates them again (two real
        messages ride in one complex one)."""
        levels, bounds = _per_value(levels, len(xs)), _per_value(bound, len(xs))
        out, todo = list(xs), []
        for k, (x, tag) in enumerate(zip(xs, tags)):
            self._observe(refresh_site(tag), x, bounds[k])
            if x.level < min(levels[k] + SPARE_LEVELS, self.refresh_level):
                todo.append(k)
        if self.refresh_mode != "bootstrap":
            for k in todo:
                out[k] = self.need(xs[k], levels[k], tags[k], bounds[k])
            return out
        # a pair's 1/(2B) takes a level even where B = 1: pair only values that have one
        pairable = [k for k in todo if xs[k].level >= 1]
        for a, b in zip(pairable[0::2], pairable[1::2]):
            self.stats.refreshes += 1
            out[a], out[b] = self._refresh_pair(xs[a], xs[b], tags[a], (bounds[a], bounds[b]))
        alone = [k for k in todo if xs[k].level < 1] + pairable[len(pairable) // 2 * 2:]
        for k in alone:
            out[k] = self.need(xs[k], levels[k], tags[k], bounds[k])
        return out

    def cheb(self, x, series, tag, bound):
        """series(x) for a series on [-1, 1]; x's bound is the refresh bound of its input.
        Degrees from 16 up take baby steps of ~sqrt(degree): one level more than the
        least depth, a quarter of the products at degree 255."""
        return self.cheb_many([x], series, [tag], bound)[0]

    def cheb_many(self, xs, series, tags, bound):
        """cheb() of several values at one site: their input refreshes are shared two by
        two (need_many); refreshes inside a deep series stay one per value."""
        for x, tag in zip(xs, tags):
            self._observe_input(refresh_site(tag) + "#in", x)
        min_depth = series.degree < MIN_DEPTH_BELOW
        depth = series.depth(min_depth)
        if depth <= self.period or self.refresh_mode == "none":
            return [self._evaluate(x, series, None, min_depth) for x in self.need_many(xs, depth, tags, bound)]

        def hook(tag):
            return lambda ct, levels, key, b: self.need(ct, levels, f"{tag}/{key}", b * bound)

        return [self._evaluate(x, series, hook(tag), min_depth)
                for x, tag in zip(self.need_many(xs, 1, tags, bound), tags)]

    def _observe(self, site, x, bound):
        pass

    def _observe_input(self, site, x):
        pass


class PlainOps(_Refreshing):
    """float64 mirror. Levels are tracked with the evaluator's rules so that
    refreshes happen at the same points as in the encrypted run."""

    def __init__(self, max_level: int, refresh: str = "client", refresh_level: int | None = None,
                 keyswitch_cost=None):
        """keyswitch_cost(level): the relative cost of a key switch at `level`; the
        products and rotations outside polynomials add up to stats.ops["work"]."""
        self.max_level = max_level
        self.refresh_mode = refresh
        self.refresh_level = max_level if refresh_level is None else refresh_level
        self.stats = Stats()
        self._ev = PlainEvaluator()
        self._ks_cost = keyswitch_cost

    def _work(self, level, n=1):
        if self._ks_cost is not None:
            self.stats.tick("work", n * self._ks_cost(level))

    def encrypt(self, vec, slots):
        v = np.zeros(slots)
        v[: len(vec)] = vec
        return PV(v, self.max_level)

    def decrypt(self, x):
        return x.v.copy()

    def level(self, x):
        return x.level

    def add(self, a, b):
        return self._ev.add(a, b)

    def sub(self, a, b):
        return self._ev.sub(a, b)

    def add_const(self, a, c):
        return PV(a.v + c, a.level)

    def add_plain(self, a, vec, key=None):
        return PV(a.v + np.resize(vec, a.slots), a.level)

    def mul(self, a, b):
        self.stats.tick("mul")
        self._work(min(a.level, b.level))
        return self._ev.mul(a, b, rescale=True)

    def mul_plain(self, a, vec, key=None):
        return PV(a.v * np.resize(vec, a.slots), a.level - 1)

    def mul_const(self, a, c):
        return PV(a.v * c, a.level - 1)

    def mul_int(self, a, k):
        return PV(a.v * k, a.level)

    def rotate(self, a, k):
        self.stats.tick("rotate")
        self._work(a.level)
        return PV(np.roll(a.v, -k), a.level)

    def rotate_many(self, a, ks):
        return {k: self.rotate(a, k) for k in ks}

    def lintrans(self, a, lt):
        """a: the input chunks (a list) of a BlockTransform, or one vector of a LinearTransform."""
        level = min(x.level for x in a) if isinstance(a, list) else a.level
        self.stats.tick("rotate", lt.key_switches())
        self._work(level, lt.key_switches())
        if not isinstance(a, list):
            return PV((a.v.reshape(-1, lt.period) @ _dense(lt).T).ravel(), a.level - 1)
        P = lt.period
        outs = []
        for j in range(lt.outputs):
            y = sum((x.v.reshape(-1, P) @ _dense_block(lt, j, i).T).ravel() for i, x in enumerate(a))
            outs.append(PV(y, level - 1))
        return outs

    def view(self, a, slots):
        if slots >= a.slots:
            return PV(np.tile(a.v, slots // a.slots), a.level)
        return PV(a.v[:slots].copy(), a.level)

    def _evaluate(self, x, series, hook, min_depth):
        return evaluate_chebyshev(self._ev, x, series, min_depth=min_depth, need=hook)

    def _observe(self, site, x, bound):
        self.stats.use(site, _abs_max(x.v) / bound)

    def _observe_input(self, site, x):
        self.stats.use(site, _abs_max(x.v))

    def _refresh(self, x, tag, bound):
        if self.refresh_mode == "bootstrap":
            _check_prescale(x.level, _boot_divisor(bound), tag)
        return PV(x.v.copy(), self.refresh_level)

    def _refresh_pair(self, x, y, tag, bounds):
        return PV(x.v.copy(), self.refresh_level), PV(y.v.copy(), self.refresh_level)


def _dense(lt):
    """The transform's (block) matrix, built once (the mirror applies it per block)."""
    m = getattr(lt, "_dense", None)
    if m is None:
        m = lt._dense = lt.block_matrix()
    return m


def _dense_block(lt, j, i):
    cache = lt.__dict__.setdefault("_dense_blocks", {})
    if (j, i) not in cache:
        cache[(j, i)] = lt.block_matrix(j, i)
    return cache[(j, i)]


class Chunks(tuple):
    """One value of a feature-chunked layout: its chunk ciphertexts in feature order
    (nn/packing.py; a single chunk where the hidden size fits one row)."""


def _chunk_tags(tag, n):
    return [tag] if n == 1 else [f"{tag}/h{c}" for c in range(n)]


class ChunkOps:
    """The ops interface on Chunks: every operation chunk by chunk, a plain
    ciphertext beside Chunks stands for itself in every chunk (a token's sum over
    its features), a 2-D plaintext (chunks, slots) gives each chunk its row. A
    refresh of Chunks refreshes its chunks together (need_many: two share a
    bootstrap); tags name the chunk (/h<c>) where there are several. Everything
    else is the wrapped ops'."""

    def __init__(self, ops):
        self.base = ops

    def __getattr__(self, name):
        return getattr(self.base, name)

    @staticmethod
    def _width(*xs):
        return next((len(x) for x in xs if isinstance(x, Chunks)), None)

    def _map(self, f, *xs):
        n = self._width(*xs)
        if n is None:
            return f(*xs)
        return Chunks(f(*(x[c] if isinstance(x, Chunks) else x for x in xs)) for c in range(n))

    def add(self, a, b):
        return self._map(self.base.add, a, b)

    def sub(self, a, b):
        return self._map(self.base.sub, a, b)

    def mul(self, a, b):
        return self._map(self.base.mul, a, b)

    def add_const(self, a, c):
        return self._map(lambda x: self.base.add_const(x, c), a)

    def mul_const(self, a, c):
        return self._map(lambda x: self.base.mul_const(x, c), a)

    def mul_int(self, a, k):
        return self._map(lambda x: self.base.mul_int(x, k), a)

    def rotate(self, a, k):
        return self._map(lambda x: self.base.rotate(x, k), a)

    def view(self, a, slots):
        return self._map(lambda x: self.base.view(x, slots), a)

    def level(self, a):
        return min(self.base.level(x) for x in a) if isinstance(a, Chunks) else self.base.level(a)

    def rotate_many(self, a, ks):
        if not isinstance(a, Chunks):
            return self.base.rotate_many(a, ks)
        per = [self.base.rotate_many(x, ks) for x in a]
        return {k: Chunks(p[k] for p in per) for k in ks}

    def _plain(self, f, a, vec, key):
        vec = np.asarray(vec)
        if vec.ndim == 1:
            return self._map(lambda x: f(x, vec, key), a)
        n = vec.shape[0]
        if isinstance(a, Chunks) and len(a) != n:
            raise ValueError(f"a plaintext of {n} chunks on a value of {len(a)}")
        xs = a if isinstance(a, Chunks) else [a] * n
        keys = [key] if n == 1 else [None if key is None else (key, c) for c in range(n)]
        return Chunks(f(x, vec[c], keys[c]) for c, x in enumerate(xs))

    def add_plain(self, a, vec, key=None):
        return self._plain(self.base.add_plain, a, vec, key)

    def mul_plain(self, a, vec, key=None):
        return self._plain(self.base.mul_plain, a, vec, key)

    def lintrans(self, a, lt):
        """A BlockTransform of Chunks (or a list of FFN chunks) -> Chunks of its outputs."""
        return Chunks(self.base.lintrans(list(a), lt))

    # ---- refreshes: Chunks flattened into the wrapped need_many / cheb_many ----------
    def _flatten(self, xs, tags, *per_value):
        flat, flat_tags, spans = [], [], []
        extra = [[] for _ in per_value]
        for k, (x, tag) in enumerate(zip(xs, tags)):
            parts = list(x) if isinstance(x, Chunks) else [x]
            spans.append((len(flat), len(parts), isinstance(x, Chunks)))
            flat += parts
            flat_tags += _chunk_tags(tag, len(parts)) if isinstance(x, Chunks) else [tag]
            for e, v in zip(extra, per_value):
                e += [v[k]] * len(parts)
        return flat, flat_tags, extra, spans

    @staticmethod
    def _regroup(out, spans):
        return [Chunks(out[lo:lo + n]) if chunked else out[lo] for lo, n, chunked in spans]

    def need(self, x, levels, tag, bound):
        if not isinstance(x, Chunks):
            return self.base.need(x, levels, tag, bound)
        return Chunks(self.base.need_many(list(x), levels, _chunk_tags(tag, len(x)), bound))

    def need_many(self, xs, levels, tags, bound):
        xs = list(xs)
        if not any(isinstance(x, Chunks) for x in xs):
            return self.base.need_many(xs, levels, tags, bound)
        flat, flat_tags, (lv, bd), spans = self._flatten(xs, tags, _per_value(levels, len(xs)),
                                                         _per_value(bound, len(xs)))
        return self._regroup(self.base.need_many(flat, lv, flat_tags, bd), spans)

    def cheb(self, x, series, tag, bound):
        return self.cheb_many([x], series, [tag], bound)[0]

    def cheb_many(self, xs, series, tags, bound):
        xs = list(xs)
        if not any(isinstance(x, Chunks) for x in xs):
            return self.base.cheb_many(xs, series, tags, bound)
        flat, flat_tags, _, spans = self._flatten(xs, tags)
        return self._regroup(self.base.cheb_many(flat, series, flat_tags, bound), spans)


class MatrixOps:
    """The non-linear steps on whole float64 tensors (rows of any shape, slot-wise
    arithmetic); no levels, no layout. Polynomials are evaluated as the series they
    are (the encrypted recursion gives the same values up to rounding)."""

    refresh_mode = "none"

    def __init__(self):
        self.stats = Stats()

    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def add_const(self, a, c):
        return a + c

    def add_plain(self, a, vec, key=None):
        return a + vec

    def mul(self, a, b):
        return a * b

    def mul_plain(self, a, vec, key=None):
        return a * vec

    def mul_const(self, a, c):
        return a * c

    def need(self, x, levels, tag, bound):
        self.stats.use(refresh_site(tag), _abs_max(x) / bound)
        return x

    def need_many(self, xs, levels, tags, bound):
        return [self.need(x, levels, tag, b) for x, tag, b in zip(xs, tags, _per_value(bound, len(xs)))]

    def cheb(self, x, series, tag, bound):
        self.stats.use(refresh_site(tag) + "#in", _abs_max(x))
        return series(x)

    def cheb_many(self, xs, series, tags, bound):
        return [self.cheb(x, series, tag, bound) for x, tag in zip(xs, tags)]


# ---------------------------------------------------------------- encrypted
class KeyHolder:
    """The party that owns the secret key. `--refresh client` sends it
    intermediate ciphertexts to decrypt and re-encrypt at the top level: it
    SEES THOSE INTERMEDIATE VALUES. In the demo it lives in the server
    process; every output names the mode and counts the round trips.

    It refuses a value beyond its site's bound (DomainError naming the site):
    an input outside the domains the approximations were built for stops the
    run there, instead of overflowing somewhere later.

    Re-encryption randomness is derived from a secret run seed and the
    refresh's tag, so a refresh gives the same ciphertext whichever rank asks
    (bit-for-bit equal outputs across rank counts)."""

    def __init__(self, ctx, sk, seed: bytes | None = None):
        import os

        self.ctx, self.sk = ctx, sk
        self.seed = seed if seed is not None else os.urandom(32)
        self.count = 0

    def refresh(self, ct, tag: str, bound: float | None = None):
        self.count += 1
        values = self.ctx.decrypt(ct, self.sk)
        peak = _abs_max(np.abs(values))
        if bound is not None and not peak <= bound * BOUND_SLACK:
            raise DomainError(f"value {peak:.4g} at {refresh_site(tag)} is outside its bound {bound:.4g}: "
                              "the input lies outside the domain the model's approximations were built for")
        seed = hashlib.sha256(self.seed + tag.encode()).digest()
        return self.ctx.encrypt(values, self.sk, level=self.ctx.params.max_level, slots=ct.slots, seed=seed)


class CipherOps(_Refreshing):
    def __init__(self, ctx, evaluator, refresh: str = "client", key_holder: KeyHolder | None = None):
        self.ctx, self.ev = ctx, evaluator
        self.max_level = ctx.params.max_level
        self.refresh_mode = refresh
        self.key_holder = key_holder
        if refresh == "client" and key_holder is None:
            raise ValueError("--refresh client needs a key holder")
        self.refresh_level = bootstrap_level(ctx.params) if refresh == "bootstrap" else self.max_level
        self.boot_slots = None   # slot counts with bootstrapping keys (refresh.prepare); None: any
        self.stats = Stats()
        self._pt_cache = {}

    def level(self, x):
        return x.level

    def _encode(self, vec, key, level, scale, slots):
        """The plaintext of vec, cached under the caller's key. A key must name one
        vector: a hit is checked against the vector it was made from (a key that left
        out a layer's constant once gave bert-base's later layers another layer's mask)."""
        vec = np.asarray(vec, dtype=np.float64)
        ck = (key, level, round(scale, 6), slots) if key is not None else None
        hit = self._pt_cache.get(ck) if ck else None
        if hit is not None:
            pt, made_from = hit
            if made_from is not vec and not np.array_equal(made_from, vec):
                raise RuntimeError(f"plaintext cache key {key!r} names two different vectors")
            return pt
        pt = self.ctx.encode(np.resize(vec, slots), level=level, scale=scale, slots=slots)
        if ck:
            self._pt_cache[ck] = (pt, vec)
        return pt

    def add(self, a, b):
        return self.ev.add(a, b)

    def sub(self, a, b):
        return self.ev.sub(a, b)

    def add_const(self, a, c):
        return self.ev.add_const(a, float(c))

    def add_plain(self, a, vec, key=None):
        return self.ev.add(a, self._encode(vec, key, a.level, a.scale, a.slots))

    def mul(self, a, b):
        self.stats.tick("mul")
        return self.ev.mul(a, b, rescale=True)

    def mul_plain(self, a, vec, key=None):
        scale = self.ev.rescale_target_scale(a.scale, a.level)
        # The encoder rounds into int64: at a 2^54 scale a mask of ~1e3 would
        # overflow. Encode it over 2^k and multiply back exactly.
        peak = float(np.max(np.abs(vec), initial=0.0)) * scale
        k = max(0, math.ceil(math.log2(peak / 2.0 ** 60))) if peak > 2.0 ** 60 else 0
        if k:
            vec = np.asarray(vec, dtype=np.float64) / 2.0 ** k
            key = None if key is None else (key, "over", k)
        out = self.ev.mul_plain(a, self._encode(vec, key, a.level, scale, a.slots), rescale=True)
        return self.ev.mul_int(out, 1 << k) if k else out

    def mul_const(self, a, c):
        return self.ev.mul_const(a, float(c), rescale=True)

    def mul_int(self, a, k):
        return self.ev.mul_int(a, int(k))

    def rotate(self, a, k):
        self.stats.tick("rotate")
        return self.ev.rotate(a, k)

    def rotate_many(self, a, ks):
        self.stats.tick("rotate", len(ks))
        return self.ev.rotate_hoisted(a, ks)

    def lintrans(self, a, lt):
        self.stats.tick("rotate", lt.key_switches())
        return lt.evaluate(self.ev, a, rescale=True)

    def view(self, a, slots):
        return a.with_data(a.data, slots=slots)

    def _evaluate(self, x, series, hook, min_depth):
        return evaluate_chebyshev(self.ev, x, series, min_depth=min_depth, need=hook)

    def _refresh(self, x, tag, bound):
        if self.refresh_mode == "bootstrap":
            return self._bootstrap(x, tag, bound)
        return self.key_holder.refresh(x, tag, bound)

    def _refresh_pair(self, x, y, tag, bounds):
        """x, y (real, |x| <= Bx, |y| <= By, level >= 1) refreshed by one bootstrap of
        x / 2Bx + i y / 2By: then 2 Re = x / Bx and 2 Im = y / By, taken apart by one
        conjugation (z + conj z, (z - conj z)(-i)); mul_int(B) restores each."""
        ev = self.ev
        bx, by = (_boot_divisor(b) for b in bounds)
        xs, ys = ev.mul_const(x, 0.5 / bx, rescale=True), ev.mul_const(y, 0.5 / by, rescale=True)
        z = self._bootstrap_slots(ev.add(xs, ev.mul_by_i(ys)))
        conj = ev.conjugate(z)
        re = ev.add(z, conj)
        im = ev.mul_by_i(ev.sub(z, conj), negate=True)
        re.is_complex = im.is_complex = False
        return tuple(ev.mul_int(v, b) if b > 1 else v for v, b in ((re, bx), (im, by)))

    def _bootstrap(self, x, tag, bound):
        """EvalMod is exact only for slot values within about [-1, 1] (coefficients up to
        the scale, bootstrap/mod1.py): divide by the power of two B at or above the
        site's bound on the way in, multiply back (mul_int: exact, no level) on the way out."""
        b = _boot_divisor(bound)
        _check_prescale(x.level, b, tag)
        if b > 1:
            x = self.ev.mul_const(x, 1.0 / b, rescale=True)
        y = self._bootstrap_slots(x)
        return self.ev.mul_int(y, b) if b > 1 else y

    def _bootstrap_slots(self, x):
        """ev.bootstrap of x at a slot count with keys: n slots are also any multiple of
        n (the vector tiled), so the smallest such count at or above x's is used."""
        slots = next((c for c in self.boot_slots or () if c >= x.slots), x.slots)
        y = self.ev.bootstrap(x.with_data(x.data, slots=slots))
        return y.with_data(y.data, slots=x.slots)


# ---------------------------------------------------------------- refresh bookkeeping
def _boot_divisor(bound: float) -> int:
    """The power of two at or above a site's bound (bootstrapping wants |values| <= 1)."""
    return 1 << max(0, math.ceil(math.log2(max(bound, 1e-300))))


def bootstrap_level(params) -> int:
    """Level a bootstrapped ciphertext comes back at (parameters alone decide it)."""
    from ..ckks.bootstrap import default_config

    return params.max_level - default_config(params).depth()


def refresh_period(mode: str, max_level: int, refresh_level: int) -> int:
    """Levels a polynomial may use between refreshes. With bootstrapping one level
    is kept for the 1/B before the next bootstrap."""
    return refresh_level - SPARE_LEVELS if mode == "bootstrap" else max_level


def _check_prescale(level, b, tag):
    if b > 1 and level < 1:
        raise DepthError(f"bootstrap refresh at {tag} needs a level for its 1/{b:g} and has none")
