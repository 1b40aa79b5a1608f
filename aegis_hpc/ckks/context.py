"""The one object a user holds: parameters, tables, encoder, key generation, en/decryption."""

from __future__ import annotations

import hashlib

import numpy as np

from ..backend import get_xp, residue_dtype, to_numpy
from . import params as params_mod
from .ciphertext import Ciphertext, Plaintext
from .encoder import Encoder
from .evaluator import EvaluationError, Evaluator
from .keys import (EvaluationKeys, KeyGenerator, PublicKey, SecretKey, galois_element_conjugate,
                   galois_element_for_rotation)
from .keyswitch import KeySwitcher
from .ntt import RingTables
from .params import ERROR_ETA
from .rns import crt_centered_small
from .sampling import fresh_seed

ENCODE_BATCH_BYTES = 256 << 20


class Context:
    def __init__(self, params: params_mod.Parameters):
        self.params = params
        self.xp = get_xp()
        self.ring = RingTables(params.qp, params.log_n)
        self.encoder = Encoder(params.log_n)
        self.keygenerator = KeyGenerator(params, self.ring)
        self._key_switchers: dict = {}

    def key_switcher(self, special: int | None = None) -> KeySwitcher:
        """The key switcher over the first `special` special primes (default all). It
        holds no key, only per-level tables (basis converters, kernel constants: seconds
        to build at N=2^16), so every evaluator of this context shares one."""
        ks = self._key_switchers.get(special)
        if ks is None:
            ks = self._key_switchers[special] = KeySwitcher(self.params, self.ring, special)
        return ks

    @classmethod
    def from_preset(cls, name: str) -> "Context":
        return cls(params_mod.preset(name))

    @property
    def max_level(self) -> int:
        return self.params.max_level

    @property
    def slots(self) -> int:
        return self.params.slots

    # ---- keys -----------------------------------------------------------
    def keygen(self, rotations=(), conjugate: bool = False, bootstrap: bool = False):
        """(secret key, evaluation keys) with Galois keys for exactly the rotations asked for."""
        if bootstrap:
            from .bootstrap import add_bootstrap_keys, bootstrap_rotations

            rotations, conjugate = list(rotations) + bootstrap_rotations(self.params), True
        kg = self.keygenerator
        sk = kg.secret_key()
        keys = EvaluationKeys(public=kg.public_key(sk), relin=kg.relin_key(sk),
                              fingerprint=self.params.fingerprint)
        self.add_rotation_keys(sk, keys, rotations, conjugate)
        if bootstrap:
            add_bootstrap_keys(self, sk, keys)
        return sk, keys

    def add_rotation_keys(self, sk, keys, rotations=(), conjugate=False):
        n = self.params.n
        elements = {galois_element_for_rotation(int(r), n) for r in rotations if int(r) % (n // 2)}
        if conjugate:
            elements.add(galois_element_conjugate(n))
        for g in sorted(elements - set(keys.galois)):
            keys.galois[g] = self.keygenerator.galois_key(sk, g)
        return keys

    # ---- encoding -------------------------------------------------------
    def encode(self, values, level: int | None = None, scale: float | None = None,
               slots: int | None = None) -> Plaintext:
        z = np.asarray(values).ravel()
        return self.encode_many(z[None, :], level, scale, slots)[0]

    def encode_many(self, rows, level: int | None = None, scale: float | None = None,
                    slots: int | None = None, compact: bool = False) -> list:
        """One Plaintext per row of a 2-D array, encoded as one batch (one FFT
        on the host, one reduction and one NTT on the device): a linear
        transform's diagonals cost one call instead of hundreds. `compact`
        keeps one value per run of equal NTT values, as uint32 (residues
        < 2^31): N/(2*slots) * 2 times less memory, the same products."""
        level = self.params.max_level if level is None else level
        limbs = self.params.limbs_at(level)
        scale = self.params.scale_at(level) if scale is None else scale
        rows = np.asarray(rows)
        # only every stride-th coefficient of a sparse plaintext can be non-zero: the
        # host computes those (an FFT of 2 slots per row), the device spreads them
        small, slots = self.encoder.sparse_coefficients_many(rows, scale, slots)
        stride = self.params.slots // slots
        xp = self.xp
        q = xp.asarray(np.array(self.params.q[:limbs], dtype=np.int64))[:, None]
        # the residues of a batch take limbs x N words per row, three times over
        # (int64, residue words, NTT): ENCODE_BATCH_BYTES bounds that transient
        step = max(1, ENCODE_BATCH_BYTES // (limbs * self.params.n * 8))
        run = stride if compact else 1
        data = []
        for lo in range(0, len(small), step):
            part = xp.asarray(small[lo:lo + step])[:, None, :] % q
            res = xp.zeros((part.shape[0], limbs, self.params.n), dtype=residue_dtype())
            res[..., ::stride] = part.astype(residue_dtype())
            res = self.ring.ntt(res, list(range(limbs)))
            data.extend(xp.ascontiguousarray(res[..., ::run]).astype(np.uint32) if run > 1 else res)
        complex_rows = np.iscomplexobj(rows) and bool(np.any(np.imag(rows)))
        return [Plaintext(data=d, level=level, scale=scale, slots=slots,
                          fingerprint=self.params.fingerprint,
                          is_complex=bool(complex_rows and np.any(np.imag(row))), run=run)
                for d, row in zip(data, rows)]

    def decode(self, pt: Plaintext):
        coeffs = self._base_coefficients(pt.expanded(self.xp).data[: self.params.base_primes])
        return self._finish(self.encoder.from_coefficients(coeffs, pt.scale, pt.slots), pt.is_complex)

    def _base_coefficients(self, base_ntt):
        base = list(range(self.params.base_primes))
        coeff = self.ring.intt(base_ntt, base)
        return to_numpy(crt_centered_small(coeff, self.params.q[: self.params.base_primes]))

    @staticmethod
    def _finish(z, is_complex):
        return z if is_complex else z.real.copy()

    # ---- encryption -----------------------------------------------------
    def encrypt(self, values, key, level: int | None = None, slots: int | None = None,
                seed: bytes | None = None) -> Ciphertext:
        """Encrypt a vector with a SecretKey (symmetric) or the PublicKey / EvaluationKeys.

        `seed` (secret-key encryption only) derives the randomness from a secret
        32-byte seed instead of os.urandom, for a key holder whose re-encryptions
        must come out bit-identical on every rank; never reuse a seed.
        """
        if isinstance(key, EvaluationKeys):
            key = key.public
        if getattr(key, "fingerprint", None) != self.params.fingerprint:
            raise EvaluationError("encryption key does not belong to this parameter set")
        if seed is not None and not isinstance(key, SecretKey):
            raise EvaluationError("a fixed encryption seed is only for secret-key encryption")
        if isinstance(key, PublicKey) and not isinstance(values, Plaintext):
            return self._encrypt_public(values, key, level, slots)
        pt = values if isinstance(values, Plaintext) else self.encode(values, level=level, slots=slots)
        pt_data = pt.expanded(self.xp).data
        xp, kg = self.xp, self.keygenerator
        limbs = self.params.limbs_at(pt.level)
        idx = list(range(limbs))
        qc = self.ring.q_col(idx)
        if isinstance(key, SecretKey):
            a_seed, e_seed = (fresh_seed(), fresh_seed()) if seed is None else _split_seed(seed)
            a = kg.uniform(a_seed, idx)
            e = kg.error_ntt(kg.small("enc-error", e_seed), idx)
            c0 = (kg.rlwe_b(a, key.ntt[:limbs], e, qc) + pt_data) % qc
            data = xp.stack([c0, a]).astype(residue_dtype(), copy=False)
        elif isinstance(key, PublicKey):
            data = self._public_halves(key, kg.encryption_noise(idx), qc)
            data[0] = self.ring.add_mod(data[0], pt_data, qc)
        else:
            raise EvaluationError(f"cannot encrypt with a {type(key).__name__}")
        return Ciphertext(data=data, level=pt.level, scale=pt.scale, slots=pt.slots,
                          fingerprint=self.params.fingerprint, is_complex=pt.is_complex)

    def _public_halves(self, pk: PublicKey, noise, qc):
        """(v pk.b + noise[1], v pk.a + noise[2]) mod q, v = noise[0]: one pass per half."""
        limbs = noise.shape[1]
        data = self.xp.empty((2, limbs, self.params.n), dtype=residue_dtype())
        self.ring.mul_add(noise[0], pk.b[:limbs], noise[1], qc, out=data[0])
        self.ring.mul_add(noise[0], pk.a[:limbs], noise[2], qc, out=data[1])
        return data

    def _encrypt_public(self, values, pk: PublicKey, level, slots):
        """Public-key encryption of values: the message's coefficients go into the error
        e0 before its NTT (Encoder.to_coefficients, then KeyGenerator.encryption_noise),
        so the message costs no transform or pass of its own."""
        level = self.params.max_level if level is None else level
        idx = list(range(self.params.limbs_at(level)))     # checks the level
        z = np.asarray(values).ravel()
        scale = self.params.scale_at(level)
        coeffs, slots = self.encoder.to_coefficients(z, scale, slots)
        qc = self.ring.q_col(idx)
        data = self._public_halves(pk, self.keygenerator.encryption_noise(idx, coeffs), qc)
        return Ciphertext(data=data, level=level, scale=scale, slots=slots, fingerprint=self.params.fingerprint,
                          is_complex=bool(np.iscomplexobj(z) and np.any(np.imag(z))))

    def decrypt(self, ct: Ciphertext, sk: SecretKey):
        """Slots of the message (float, or complex for complex ciphertexts)."""
        if not isinstance(sk, SecretKey):
            raise EvaluationError("decryption needs the SecretKey")
        for obj, what in ((ct, "ciphertext"), (sk, "secret key")):
            if obj.fingerprint != self.params.fingerprint:
                raise EvaluationError(f"{what} belongs to another parameter set "
                                      f"({obj.fingerprint[:16]}… vs {self.params.fingerprint[:16]}…)")
        b = self.params.base_primes
        qc = self.ring.q_col(range(b))
        m = (ct.data[0, :b] + ct.data[1, :b] * sk.ntt[:b] % qc) % qc
        coeffs = self._base_coefficients(m)
        return self._finish(self.encoder.from_coefficients(coeffs, ct.scale, ct.slots), ct.is_complex)

    def evaluator(self, keys: EvaluationKeys | None = None) -> Evaluator:
        return Evaluator(self, keys)


def _split_seed(seed: bytes):
    """Two independent 32-byte seeds (uniform part, error) from one caller seed."""
    return (hashlib.sha256(b"uniform|" + seed).digest(), hashlib.sha256(b"error|" + seed).digest())
