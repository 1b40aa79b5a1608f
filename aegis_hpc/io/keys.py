"""Key files: secret-key (client only, mode 0600) and public-keys (public, relin, Galois,
and optionally the bootstrapping encapsulation keys).

Uniform `a` halves are stored as their 32-byte seeds and regenerated on read
with the same generator the key generation used (KeyGenerator.uniform), which
roughly halves the public-key file. `seed_compression=False` stores them too.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np

from ..backend import to_numpy
from ..ckks import Context
from ..ckks.keys import EvaluationKeys, PublicKey, SecretKey, SwitchingKey, galois_element_conjugate
from ..ckks.sampling import SEED_BYTES, UNIFORM_STREAM
from . import container, params as params_io
from .container import FormatError


class LooseSecretKeyWarning(UserWarning):
    pass


def secret_key_id(sk: SecretKey) -> str:
    """Short public name of a secret key (a hash of it): links eval.h5 to its secret.h5."""
    return hashlib.sha256(b"aegis-hpc key id|" + np.asarray(sk.coeffs, np.int8).tobytes()).hexdigest()[:16]


def eval_key_id(path) -> str | None:
    """The key_id an evaluation-key file records (None for files without one)."""
    with container.open_checked(path, "public-keys") as f:
        value = f.attrs.get("key_id")
    return value.decode() if isinstance(value, bytes) else value


def _context_for(f, ctx):
    """The caller's context if its fingerprint matches the file's, else one built from the file."""
    if ctx is None:
        return Context(params_io.read_group(f))
    fp = container.fingerprint_of(f)
    if fp != ctx.params.fingerprint:
        raise FormatError(f"{f.filename}: parameter fingerprint {fp} does not match "
                          f"{ctx.params.fingerprint} of the given context")
    return ctx


# ---- secret key -----------------------------------------------------------------
def write_secret_key(path, params, sk: SecretKey, force: bool = False) -> None:
    if sk.fingerprint != params.fingerprint:
        raise FormatError("secret key belongs to another parameter set than the one given")
    with container.create(path, "secret-key", params.fingerprint, force=force, secret=True) as f:
        params_io.write_group(f, params)
        g = f.create_group("secret_key")
        g.attrs["key_id"] = secret_key_id(sk)
        container.new_dataset(g, "coeffs", (params.n,), np.int8, data=np.asarray(sk.coeffs, np.int8))


def read_secret_key(path, ctx: Context | None = None):
    """(context, SecretKey). The NTT form is recomputed from the ternary coefficients."""
    path = os.fspath(path)
    with container.open_checked(path, "secret-key") as f:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            warnings.warn(LooseSecretKeyWarning(
                f"{path} is readable by other users (mode {mode:o}); chmod 600 it"), stacklevel=2)
        ctx = _context_for(f, ctx)
        p = ctx.params
        g = container.group(f, "secret_key")
        coeffs = container.dataset(g, "coeffs", np.int8, (p.n,))[()]
        if not np.all(np.abs(coeffs.astype(np.int16)) <= 1):
            raise FormatError(f"{path}: secret key coefficients are not ternary")
        if p.secret_hamming_weight is not None and np.count_nonzero(coeffs) != p.secret_hamming_weight:
            raise FormatError(f"{path}: secret key hamming weight differs from the parameter set's")
    ntt = ctx.keygenerator.small_to_ntt(coeffs, list(range(len(p.qp))))
    return ctx, SecretKey(coeffs=coeffs, ntt=ntt, fingerprint=p.fingerprint)


# ---- public material ----------------------------------------------------------------
def _rotation_label(element: int, n: int):
    """Rotation step k with 5^k = element mod 2N, -1 for conjugation (what inspect shows)."""
    if element == galois_element_conjugate(n):
        return -1
    x = 1
    for k in range(n // 2):
        if x == element:
            return k
        x = x * 5 % (2 * n)
    raise FormatError(f"galois element {element} is not a power of 5 mod 2N")


def has_bootstrap_keys(keys: EvaluationKeys) -> bool:
    return getattr(keys, "bootstrap", None) is not None


def _write_switching_key(g, swk: SwitchingKey, store_a: bool) -> None:
    b = to_numpy(swk.b).astype(np.uint32)
    container.new_dataset(g, "b", b.shape, np.uint32, data=b)
    container.new_dataset(g, "seeds", (len(swk.seeds), SEED_BYTES), np.uint8,
                          data=np.frombuffer(b"".join(swk.seeds), np.uint8).reshape(-1, SEED_BYTES))
    if store_a:
        container.new_dataset(g, "a", b.shape, np.uint32, data=to_numpy(swk.a).astype(np.uint32))


def write_eval_keys(path, params, keys: EvaluationKeys, force: bool = False,
                    seed_compression: bool = True, key_id: str | None = None) -> None:
    """Public-keys file (kind public-keys): public key, relinearisation and Galois keys, and
    the bootstrapping keys (`keys.bootstrap`, from Context.keygen(bootstrap=True)) if any."""
    if keys.public is None or keys.relin is None:
        raise FormatError("an evaluation-key file needs both the public and the relinearisation key")
    boot = getattr(keys, "bootstrap", None)
    extra = (boot.to_ephemeral, boot.from_ephemeral) if boot is not None else ()
    for k in (keys.public, keys.relin, *keys.galois.values(), *extra):
        if k.fingerprint != params.fingerprint:
            raise FormatError("evaluation keys belong to another parameter set than the one given")
    with container.create(path, "public-keys", params.fingerprint, force=force) as f:
        f.attrs["seed_compression"] = bool(seed_compression)
        f.attrs["uniform_stream"] = UNIFORM_STREAM
        if key_id:
            f.attrs["key_id"] = key_id
        params_io.write_group(f, params)
        pub = f.create_group("public")
        b = to_numpy(keys.public.b).astype(np.uint32)
        container.new_dataset(pub, "b", b.shape, np.uint32, data=b)
        container.new_dataset(pub, "seed", (SEED_BYTES,), np.uint8,
                              data=np.frombuffer(keys.public.seed, np.uint8))
        if not seed_compression:
            container.new_dataset(pub, "a", b.shape, np.uint32,
                                  data=to_numpy(keys.public.a).astype(np.uint32))
        _write_switching_key(f.create_group("relin"), keys.relin, not seed_compression)
        gal = f.create_group("galois")
        for element in sorted(keys.galois):
            g = gal.create_group(str(int(element)))
            g.attrs["element"] = int(element)
            g.attrs["rotation"] = _rotation_label(int(element), params.n)
            _write_switching_key(g, keys.galois[element], not seed_compression)
        if boot is not None:
            g = f.create_group("bootstrap")
            _write_switching_key(g.create_group("to_ephemeral"), boot.to_ephemeral, not seed_compression)
            _write_switching_key(g.create_group("from_ephemeral"), boot.from_ephemeral, not seed_compression)


def _seeds(g, count):
    raw = container.dataset(g, "seeds", np.uint8, (count, SEED_BYTES))[()]
    return tuple(bytes(row) for row in raw)


def _read_switching_key(g, ctx, digits: int | None = None, rows: list | None = None) -> SwitchingKey:
    """digits, rows: a truncated key (the first digits, these params.qp rows instead of
    kg.key_rows), as the encapsulation key towards the ephemeral secret is."""
    p, kg = ctx.params, ctx.keygenerator
    key_rows = rows if rows is not None else kg.key_rows
    shape = (digits or len(p.digits_at(p.max_level)), len(key_rows), p.n)
    b = container.dataset(g, "b", np.uint32, shape)[()]
    moduli = [p.qp[i] for i in key_rows]
    container.below_moduli(b, moduli, f"{g.file.filename}: {g.name}/b")
    seeds = _seeds(g, shape[0])
    # the key was drawn as uniform(seed, rows) on these rows (KeyGenerator.switching_key),
    # regenerated where the ring lives (the GPU kernel on a GPU: no host round trip)
    xp = ctx.xp
    a = xp.stack([kg.uniform(s, key_rows).astype(np.uint32) for s in seeds])
    if "a" in g:
        _check_stored_a(g, to_numpy(a), shape)
    return SwitchingKey(b=xp.asarray(b), a=a, seeds=seeds, fingerprint=p.fingerprint)


def _check_stored_a(g, regenerated, shape) -> None:
    stored = container.dataset(g, "a", np.uint32, shape)[()]
    if not np.array_equal(stored, regenerated.astype(np.uint32)):
        raise FormatError(f"{g.file.filename}: {g.name}/a does not match its seed")


def read_eval_keys(path, ctx: Context | None = None):
    """(context, EvaluationKeys). Refuses secret-key files."""
    with container.open_checked(path, "public-keys") as f:
        stream = f.attrs.get("uniform_stream")
        if stream != UNIFORM_STREAM:
            raise FormatError(f"{path}: its uniform key halves come from {stream or 'SHAKE-256 (before chacha20)'}, "
                              f"this version regenerates them with {UNIFORM_STREAM}: generate the keys again")
        ctx = _context_for(f, ctx)
        p, kg, xp = ctx.params, ctx.keygenerator, ctx.xp
        pub = container.group(f, "public")
        q_idx = list(range(len(p.q)))
        b = container.dataset(pub, "b", np.uint32, (len(p.q), p.n))[()]
        container.below_moduli(b, p.q, f"{path}: /public/b")
        seed = bytes(container.dataset(pub, "seed", np.uint8, (SEED_BYTES,))[()])
        a = kg.uniform(seed, q_idx)
        if "a" in pub:
            _check_stored_a(pub, to_numpy(a), (len(p.q), p.n))
        public = PublicKey(b=xp.asarray(b.astype(np.uint64)), a=a, seed=seed, fingerprint=p.fingerprint)
        relin = _read_switching_key(container.group(f, "relin"), ctx)
        galois = {}
        for name, g in container.group(f, "galois").items():
            element = int(container.attr(g, "element", "i"))
            if name != str(element) or element % 2 == 0 or not 0 < element < 2 * p.n:
                raise FormatError(f"{path}: /galois/{name} is not a valid Galois element")
            galois[element] = _read_switching_key(g, ctx)
        keys = EvaluationKeys(public=public, relin=relin, galois=galois, fingerprint=p.fingerprint)
        keys.bootstrap = _read_bootstrap_keys(container.group(f, "bootstrap"), ctx) if "bootstrap" in f else None
    return ctx, keys


def _read_bootstrap_keys(g, ctx):
    from ..ckks.bootstrap import EncapsulationKeys
    from ..ckks.bootstrap.bootstrapper import encapsulation_rows

    # the key towards the sparse secret is published on P' and the primes of level 0 only
    down = _read_switching_key(container.group(g, "to_ephemeral"), ctx, digits=1,
                               rows=encapsulation_rows(ctx.params))
    return EncapsulationKeys(to_ephemeral=down, from_ephemeral=_read_switching_key(
        container.group(g, "from_ephemeral"), ctx))
