"""Secret, public and key-switching keys, and their generation.

Key-switching keys use the hybrid (GHS/HPS) gadget: digit j of the Q primes
gets swk_j = (-a_j*s + e_j + P*[s_from]_{digit j}, a_j) over Q*P, i.e. the
gadget entry is P on the primes of digit j and 0 elsewhere. That form stays
valid when a ciphertext has fewer limbs: the unused rows are just ignored.
Rows are stored P first, then Q, so the rows a level needs are a prefix.
The `a_j` halves are uniform from a 32-byte seed each and can be regenerated
from it (the key files store seeds only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend import get_xp, to_numpy
from .params import ERROR_ETA
from .sampling import SmallSampler, Stream, fresh_seed, sparse_ternary, uniform_mod


@dataclass
class SecretKey:
    coeffs: np.ndarray      # int8 ternary (N,) on the host
    ntt: object             # xp uint64 (|Q|+|P|, N), rows in params.qp order
    fingerprint: str


@dataclass
class PublicKey:
    b: object               # xp uint64 (|Q|, N)
    a: object               # xp uint64 (|Q|, N), = uniform(seed)
    seed: bytes
    fingerprint: str


@dataclass
class SwitchingKey:
    """Key switching s_from -> s; arrays (dnum, |P|+|Q|, N) uint32, rows P first."""
    b: object
    a: object
    seeds: tuple
    fingerprint: str


@dataclass
class EvaluationKeys:
    """Everything the server needs; never holds secret material."""
    public: PublicKey | None
    relin: SwitchingKey | None
    galois: dict = field(default_factory=dict)   # galois element -> SwitchingKey
    fingerprint: str = ""

    def has_galois(self, element: int) -> bool:
        return element in self.galois


def galois_element_for_rotation(k: int, n: int) -> int:
    """X -> X^(5^k mod 2N) rotates the N/2 slots left by k."""
    return pow(5, k % (n // 2), 2 * n)


def galois_element_conjugate(n: int) -> int:
    return 2 * n - 1


def switching_key_rows(params, level: int, special: int) -> list:
    """Rows (params.qp indices) of a switching key for ciphertexts at `level` or below over
    the first `special` special primes: P_0..P_{special-1}, then Q_0..Q_{limbs-1}."""
    nq = len(params.q)
    return list(range(nq, nq + special)) + list(range(params.limbs_at(level)))


class KeyGenerator:
    def __init__(self, params, ring):
        self.params = params
        self.ring = ring
        self.xp = get_xp()
        nq, npr = len(params.q), len(params.p)
        self.all_idx = list(range(nq + npr))
        self.key_rows = list(range(nq, nq + npr)) + list(range(nq))  # P first, then Q

    def small_to_ntt(self, coeffs, idx):
        """Signed integer coefficients (..., N) (host or device, |c| < 2^63) -> NTT form
        (..., len(idx), N) over the primes `idx` (the reduction runs where the ring lives)."""
        xp = self.xp
        q = xp.asarray(np.array([self.params.qp[i] for i in idx], dtype=np.int64))[:, None]
        c = xp.asarray(coeffs).astype(xp.int64)[..., None, :]
        return self.ring.ntt((c % q).astype(np.uint64), idx)

    def encryption_noise(self, idx, message=None):
        """(3, len(idx), N) NTT form over the primes `idx`: the ternary v and the errors
        e0 + m and e1 of a public-key encryption (c0 = v pk.b + e0 + m, c1 = v pk.a + e1),
        from a fresh seed; `message` holds m's integer coefficients (N,) or is None. The
        NTT is linear, so m rides in e0's transform instead of one of its own; on the
        GPU one kernel draws and reduces all three (backend.kernels.encryption_noise)."""
        small, n = self.small("enc-pk"), self.params.n
        if self.ring._gpu:
            from ..backend import kernels

            res = kernels.encryption_noise(small, n, ERROR_ETA, self.ring.q_col(idx), message)
            return self.ring.ntt(res, idx)
        v, e0, e1 = small.ternary(n), small.centered_binomial(n, ERROR_ETA), small.centered_binomial(n, ERROR_ETA)
        if message is not None:
            e0 = e0 + np.asarray(message, dtype=np.int64)
        return self.small_to_ntt(np.stack([v, e0, e1]), idx)

    @staticmethod
    def rlwe_b(a, s_ntt, e, qc):
        """-a*s + e mod q (NTT form): the `b` half of an RLWE sample."""
        return (qc - a * s_ntt % qc + e) % qc

    def small(self, label: str, seed: bytes | None = None) -> SmallSampler:
        """A sampler of secrets and errors on the ring's device, from a fresh seed."""
        return SmallSampler(fresh_seed() if seed is None else seed, label, self.xp)

    def error_ntt(self, small: SmallSampler, idx):
        return self.small_to_ntt(small.centered_binomial(self.params.n, ERROR_ETA), idx)

    def secret_key(self) -> SecretKey:
        h = self.params.secret_hamming_weight
        s = (self.small("secret").ternary(self.params.n) if h is None
             else sparse_ternary(Stream(fresh_seed(), "secret"), self.params.n, h))
        return SecretKey(coeffs=to_numpy(s).astype(np.int8), ntt=self.small_to_ntt(s, self.all_idx),
                         fingerprint=self.params.fingerprint)

    def uniform(self, seed: bytes, idx):
        """Uniform rows over the primes `idx` from a 32-byte seed (ChaCha20, sampling.py),
        generated where the ring lives (numpy or the GPU kernel, the same values)."""
        primes = [self.params.qp[i] for i in idx]
        return uniform_mod(seed, primes, self.params.n, self.xp)

    def public_key(self, sk: SecretKey) -> PublicKey:
        xp = self.xp
        q_idx = list(range(len(self.params.q)))
        seed = fresh_seed()
        a = self.uniform(seed, q_idx)
        e = self.error_ntt(self.small("pk-error"), q_idx)
        qc = self.ring.q_col(q_idx)
        b = self.rlwe_b(a, sk.ntt[: len(q_idx)], e, qc)
        return PublicKey(b=b, a=a, seed=seed, fingerprint=self.params.fingerprint)

    def switching_key(self, sk: SecretKey, s_from_ntt, level: int | None = None,
                      special: int | None = None) -> SwitchingKey:
        """s_from_ntt: (|Q|+|P|, N) in params.qp row order.

        level, special: a key only for ciphertexts at `level` or below, over the first
        `special` special primes (gadget P' = their product) and digits_at(level): the
        rows switching_key_rows(params, level, special), nothing at a larger modulus.
        Default: all.
        """
        xp, p = self.xp, self.params
        level = p.max_level if level is None else level
        special = special or len(p.p)
        rows = switching_key_rows(p, level, special)
        qc = self.ring.q_col(rows)
        s_rows = sk.ntt[xp.asarray(np.array(rows))]
        from_rows = s_from_ntt[xp.asarray(np.array(rows))]
        n_p = special
        big_p = 1
        for x in p.p[:special]:
            big_p *= x
        p_mod = np.array([big_p % p.qp[i] for i in rows], dtype=np.uint64)[:, None]
        p_mod = xp.asarray(p_mod)
        gadget_term = from_rows * p_mod % qc
        bs, as_, seeds = [], [], []
        for j, digit in enumerate(p.digits_at(level)):
            seed = fresh_seed()
            a = self.uniform(seed, rows)
            e = self.error_ntt(self.small(f"swk-error-{j}"), rows)
            b = self.rlwe_b(a, s_rows, e, qc)
            sel = [n_p + i for i in digit]
            b[sel] = (b[sel] + gadget_term[sel]) % qc[sel]
            bs.append(b.astype(np.uint32))
            as_.append(a.astype(np.uint32))
            seeds.append(seed)
        return SwitchingKey(b=xp.stack(bs), a=xp.stack(as_), seeds=tuple(seeds),
                            fingerprint=p.fingerprint)

    def relin_key(self, sk: SecretKey) -> SwitchingKey:
        qc = self.ring.q_col(self.all_idx)
        return self.switching_key(sk, sk.ntt * sk.ntt % qc)

    def galois_key(self, sk: SecretKey, element: int) -> SwitchingKey:
        perm = self.ring.automorphism_permutation(element)
        return self.switching_key(sk, sk.ntt[:, perm])
