"""One set of slot operations, two implementations.

The encoder (block.py) is written once against this interface. `PlainOps`
runs it on float64 slot vectors (the "plaintext mirror": the same
polynomials, Newton steps, masks, rotations and refresh points as the
encrypted run, so whatever separates it from the exact float model is
approximation error, and whatever separates the encrypted run from it is
encryption noise). `CipherOps` runs it on CKKS ciphertexts.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

import numpy as np


class DepthError(RuntimeError):
    pass


# Keep results off level 0 where possible: there only the base primes (~2^62)
# hold value * scale, so e.g. Goldschmidt's 1/x (up to ~1e6) would wrap at the
# "demo" scale 2^46. One spare level gives them room.
SPARE_LEVELS = 1


@dataclass
class Stats:
    refreshes: int = 0
    ops: dict = field(default_factory=dict)
    # bootstrap refreshes: largest |value| / B the mirror saw (above 1 the bound was too small)
    boot_peak: float = 0.0

    def tick(self, name, n=1):
        self.ops[name] = self.ops.get(name, 0) + n


# ---------------------------------------------------------------- mirror
@dataclass
class PV:
    v: np.ndarray
    level: int

    @property
    def slots(self):
        return self.v.size


class PlainOps:
    """float64 mirror. Levels are tracked with the evaluator's rules so that
    refreshes happen at the same points as in the encrypted run."""

    def __init__(self, max_level: int, refresh: str = "client", refresh_level: int | None = None,
                 bounds: "RefreshBounds | None" = None, record: dict | None = None):
        self.max_level = max_level
        self.refresh_mode = refresh
        self.refresh_level = max_level if refresh_level is None else refresh_level
        self.bounds = bounds
        self.record = record    # site -> largest |value| seen at need() (RefreshBounds.measure)
        self.stats = Stats()

    @property
    def period(self) -> int:
        return refresh_period(self.refresh_mode, self.max_level, self.refresh_level)

    def encrypt(self, vec, slots):
        v = np.zeros(slots)
        v[: len(vec)] = vec
        return PV(v, self.max_level)

    def decrypt(self, x):
        return x.v.copy()

    def level(self, x):
        return x.level

    def add(self, a, b):
        return PV(a.v + b.v, min(a.level, b.level))

    def sub(self, a, b):
        return PV(a.v - b.v, min(a.level, b.level))

    def add_const(self, a, c):
        return PV(a.v + c, a.level)

    def add_plain(self, a, vec, key=None):
        return PV(a.v + np.resize(vec, a.slots), a.level)

    def mul(self, a, b):
        self.stats.tick("mul")
        return PV(a.v * b.v, min(a.level, b.level) - 1)

    def mul_plain(self, a, vec, key=None):
        return PV(a.v * np.resize(vec, a.slots), a.level - 1)

    def mul_const(self, a, c):
        return PV(a.v * c, a.level - 1)

    def mul_int(self, a, k):
        return PV(a.v * k, a.level)

    def rotate(self, a, k):
        self.stats.tick("rotate")
        return PV(np.roll(a.v, -k), a.level)

    def rotate_many(self, a, ks):
        return {k: self.rotate(a, k) for k in ks}

    def lintrans(self, a, lt):
        self.stats.tick("rotate", lt.key_switches())
        m = np.zeros((lt.slots, lt.slots))
        rows = np.arange(lt.slots)
        for k, d in lt.diagonals.items():
            m[rows, (rows + k) % lt.slots] = d
        return PV(m @ a.v, a.level - 1)

    def cheb(self, a, series):
        return PV(series(a.v), a.level - series.depth())

    def view(self, a, slots):
        if slots >= a.slots:
            return PV(np.tile(a.v, slots // a.slots), a.level)
        return PV(a.v[:slots].copy(), a.level)

    def need(self, x, levels, tag):
        if self.record is not None:
            site = refresh_site(tag)
            self.record[site] = max(self.record.get(site, 0.0), float(np.abs(x.v).max()))
        if x.level >= min(levels + SPARE_LEVELS, self.refresh_level):
            return x
        return self._refresh(x, levels, tag)

    def _refresh(self, x, levels, tag):
        if self.refresh_mode == "none":
            raise DepthError(f"out of levels at {tag}: {x.level} left, {levels} needed "
                             "(use --refresh client or bootstrap)")
        self.stats.refreshes += 1
        if self.refresh_mode != "bootstrap":
            return PV(x.v.copy(), self.refresh_level)
        b = self.bounds.of(tag)
        _check_prescale(x.level, b, tag)
        self.stats.boot_peak = max(self.stats.boot_peak, float(np.abs(x.v).max()) / b)
        # same two scalings as CipherOps (exact in float64 for a power of two)
        return PV(x.v * (1.0 / b) * b, self.refresh_level)


# ---------------------------------------------------------------- encrypted
class KeyHolder:
    """The party that owns the secret key. `--refresh client` sends it
    intermediate ciphertexts to decrypt and re-encrypt at the top level: it
    SEES THOSE INTERMEDIATE VALUES. In the demo it lives in the server
    process; every output names the mode and counts the round trips.

    Re-encryption randomness is derived from a secret run seed and the
    refresh's tag, so a refresh gives the same ciphertext whichever rank asks
    (bit-for-bit equal outputs across rank counts)."""

    def __init__(self, ctx, sk, seed: bytes | None = None):
        import os

        self.ctx, self.sk = ctx, sk
        self.seed = seed if seed is not None else os.urandom(32)
        self.count = 0

    def refresh(self, ct, tag: str):
        self.count += 1
        values = self.ctx.decrypt(ct, self.sk)
        seed = hashlib.sha256(self.seed + tag.encode()).digest()
        return self.ctx.encrypt(values, self.sk, level=self.ctx.params.max_level, slots=ct.slots, seed=seed)


class CipherOps:
    def __init__(self, ctx, evaluator, refresh: str = "client", key_holder: KeyHolder | None = None,
                 bounds: "RefreshBounds | None" = None):
        self.ctx, self.ev = ctx, evaluator
        self.max_level = ctx.params.max_level
        self.refresh_mode = refresh
        self.key_holder = key_holder
        if refresh == "client" and key_holder is None:
            raise ValueError("--refresh client needs a key holder")
        self.refresh_level = bootstrap_level(ctx.params) if refresh == "bootstrap" else self.max_level
        self.bounds = bounds
        self.boot_slots = None   # slot counts with bootstrapping keys (refresh.prepare); None: any
        self.stats = Stats()
        self._pt_cache = {}

    @property
    def period(self) -> int:
        return refresh_period(self.refresh_mode, self.max_level, self.refresh_level)

    def level(self, x):
        return x.level

    def _encode(self, vec, key, level, scale, slots):
        ck = (key, level, round(scale, 6), slots) if key is not None else None
        pt = self._pt_cache.get(ck) if ck else None
        if pt is None:
            pt = self.ctx.encode(np.resize(np.asarray(vec, dtype=np.float64), slots),
                                 level=level, scale=scale, slots=slots)
            if ck:
                self._pt_cache[ck] = pt
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
        # The encoder rounds into int64: at a 2^54 scale a mask of ~1e3 (Goldschmidt's
        # sqrt(A) on V) would overflow. Encode it over 2^k and multiply back exactly.
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

    def cheb(self, a, series):
        return self.ev.evaluate_chebyshev(a, series)

    def view(self, a, slots):
        return a.with_data(a.data, slots=slots)

    def need(self, x, levels, tag):
        if x.level >= min(levels + SPARE_LEVELS, self.refresh_level):
            return x
        if self.refresh_mode == "none":
            raise DepthError(f"out of levels at {tag}: {x.level} left, {levels} needed "
                             "(use --refresh client or bootstrap)")
        self.stats.refreshes += 1
        if self.refresh_mode == "bootstrap":
            return self._bootstrap(x, tag)
        return self.key_holder.refresh(x, tag)

    def _bootstrap(self, x, tag):
        """EvalMod is exact only for slot values within about [-1, 1] (coefficients up to
        the scale, bootstrap/mod1.py): divide by the site's bound B (a power of two,
        nn/refresh.py) on the way in, multiply back (mul_int: exact, no level) on the way out."""
        b = self.bounds.of(tag)
        _check_prescale(x.level, b, tag)
        if b > 1:
            x = self.ev.mul_const(x, 1.0 / b, rescale=True)
        # n slots are also any multiple of n (the vector tiled): use a count with keys
        slots = next((c for c in self.boot_slots or () if c >= x.slots), x.slots)
        y = self.ev.bootstrap(x.with_data(x.data, slots=slots))
        y = y.with_data(y.data, slots=x.slots)
        return self.ev.mul_int(y, b) if b > 1 else y


# ---------------------------------------------------------------- refresh bookkeeping
def refresh_site(tag: str) -> str:
    """A refresh tag without its token and group ids: one bound per site of the circuit."""
    return re.sub(r"/[tg]\d+", "", tag)


def bootstrap_level(params) -> int:
    """Level a bootstrapped ciphertext comes back at (parameters alone decide it)."""
    from ..ckks.bootstrap import default_config

    return params.max_level - default_config(params).depth()


def refresh_period(mode: str, max_level: int, refresh_level: int) -> int:
    """Levels a polynomial may use between refreshes (approx.build's max_level). With
    bootstrapping one level is kept for the 1/B before the next bootstrap."""
    return refresh_level - SPARE_LEVELS if mode == "bootstrap" else max_level


def _check_prescale(level, b, tag):
    if b > 1 and level < 1:
        raise DepthError(f"bootstrap refresh at {tag} needs a level for its 1/{b:g} and has none")
