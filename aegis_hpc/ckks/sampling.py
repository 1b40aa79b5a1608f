"""Cryptographic randomness for secrets, errors and uniform polynomials.

Every stream is SHAKE-256 of a 32-byte seed plus a domain label. Fresh seeds
come from os.urandom, so secret material never touches numpy's PRNG; a
uniform polynomial can be regenerated from its seed, which is what lets key
files store the `a` halves of keys as 32 bytes.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

SEED_BYTES = 32


def fresh_seed() -> bytes:
    return os.urandom(SEED_BYTES)


class Stream:
    """Deterministic byte stream: SHAKE-256(seed || label)."""

    def __init__(self, seed: bytes, label: bytes | str = b""):
        if len(seed) != SEED_BYTES:
            raise ValueError(f"seed must be {SEED_BYTES} bytes")
        if isinstance(label, str):
            label = label.encode()
        self._base = seed + b"|" + label
        self._counter = 0

    def read(self, nbytes: int) -> bytes:
        # A counter per request keeps calls independent without holding the XOF state.
        self._counter += 1
        return hashlib.shake_256(self._base + self._counter.to_bytes(8, "little")).digest(nbytes)

    def uint32(self, count: int) -> np.ndarray:
        return np.frombuffer(self.read(4 * count), dtype=np.uint32)


def uniform_mod(stream: Stream, primes, n: int) -> np.ndarray:
    """(len(primes), n) uint64, each row uniform mod its prime (rejection sampling, no bias)."""
    out = np.empty((len(primes), n), dtype=np.uint64)
    for i, q in enumerate(primes):
        mask = (1 << int(q).bit_length()) - 1
        got = np.empty(0, dtype=np.uint32)
        while got.size < n:
            draw = stream.uint32(2 * n + 64) & np.uint32(mask)
            got = np.concatenate([got, draw[draw < q]])
        out[i] = got[:n]
    return out


def ternary(stream: Stream, n: int, hamming_weight: int | None = None) -> np.ndarray:
    """Int8 coefficients in {-1, 0, 1}: uniform, or exactly `hamming_weight` non-zeros."""
    if hamming_weight is None:
        got = np.empty(0, dtype=np.uint8)
        while got.size < n:
            b = np.frombuffer(stream.read(2 * n), dtype=np.uint8)
            got = np.concatenate([got, b[b < 255]])  # 255 = 3*85: unbiased mod 3
        return (got[:n] % 3).astype(np.int8) - 1
    if not 0 < hamming_weight <= n:
        raise ValueError("hamming weight out of range")
    # Fisher-Yates on indices with rejection-sampled uniform integers.
    idx = np.arange(n)
    words = iter(stream.uint32(4 * n))
    for i in range(hamming_weight):
        span = n - i
        limit = (1 << 32) - ((1 << 32) % span)
        while True:
            w = int(next(words))
            if w < limit:
                break
        j = i + w % span
        idx[i], idx[j] = idx[j], idx[i]
    out = np.zeros(n, dtype=np.int8)
    signs = np.frombuffer(stream.read(hamming_weight), dtype=np.uint8) & 1
    out[idx[:hamming_weight]] = np.where(signs == 1, 1, -1).astype(np.int8)
    return out


def centered_binomial(stream: Stream, n: int, eta: int) -> np.ndarray:
    """Int64 error coefficients: sum of eta bits minus sum of eta bits (sigma = sqrt(eta/2))."""
    nbytes = (2 * eta * n + 7) // 8
    bits = np.unpackbits(np.frombuffer(stream.read(nbytes), dtype=np.uint8))[: 2 * eta * n]
    bits = bits.reshape(n, 2, eta).sum(axis=2, dtype=np.int64)
    return bits[:, 0] - bits[:, 1]
