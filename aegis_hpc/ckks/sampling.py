"""Cryptographic randomness for secrets, errors and uniform polynomials.

Everything bulk comes from ChaCha20 (RFC 8439) in counter mode, key = a
32-byte seed from os.urandom, so secret material never touches numpy's PRNG,
and the same function runs as numpy (the reference) and as a CUDA kernel
(backend.kernels, bit-identical): randomness is generated where the ring
lives, with no host round trip.

- Uniform halves `a` of keys and encryptions (tens of MB per switching key
  at N = 2^16): nonce = (the prime, a label word, 0), one stream per prime,
  32-bit words masked to the prime's bit length and rejected at or above it
  (no bias), so a key's `a` is regenerated from its seed on any machine (key
  files store seeds).
- Small coefficients (`SmallSampler`): nonce = (two words of SHA-256 of a
  label, draw number). Uniform ternary: coefficient i is word i mod 3, minus 1;
  the word 2^32 - 1 is rejected (2^32 - 1 = 3 * 1431655765: no bias) and
  replaced by word i + n, then i + 2n, ..., so each coefficient depends on its
  own words and a GPU thread makes its coefficients alone. Centred binomial
  with eta <= 32: words i and n + i for coefficient i, popcount of the low eta
  bits of one minus that of the other. A public-key encryption's v, e0, e1 are
  three consecutive draws, made in one kernel on the GPU
  (backend.kernels.encryption_noise).
- The sparse ternary secrets (a fixed Hamming weight: a Fisher-Yates shuffle,
  sequential) come from SHAKE-256 of the seed and a label (`Stream`) on the host.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..backend import to_numpy

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


UNIFORM_STREAM = "chacha20-rfc8439-v1"   # the seed -> uniform `a` map; key files record it
_SIGMA = np.array([0x61707865, 0x3320646E, 0x79622D32, 0x6B206574], dtype=np.uint32)
_UNIFORM_LABEL = 0x61656769   # "aegi": the nonce word of uniform `a` halves


def _rotl(x, k):
    return (x << np.uint32(k)) | (x >> np.uint32(32 - k))


def chacha20_rows(key_words, nonces, counter0: int, blocks: int) -> np.ndarray:
    """(rows, blocks * 16) uint32 ChaCha20 keystream words (RFC 8439, 20 rounds):
    row r under nonce nonces[r], block counters counter0 ... The numpy reference of
    backend.kernels.chacha20_rows."""
    nonces = np.asarray(nonces, dtype=np.uint32).reshape(-1, 3)
    rows = len(nonces)
    s = np.empty((16, rows, blocks), dtype=np.uint32)
    s[0:4] = _SIGMA[:, None, None]
    s[4:12] = np.asarray(key_words, dtype=np.uint32)[:, None, None]
    s[12] = (np.arange(blocks, dtype=np.uint64) + counter0).astype(np.uint32)[None, :]
    s[13:16] = nonces.T[:, :, None]
    x = s.copy()

    def qr(a, b, c, d):
        x[a] += x[b]; x[d] ^= x[a]; x[d] = _rotl(x[d], 16)
        x[c] += x[d]; x[b] ^= x[c]; x[b] = _rotl(x[b], 12)
        x[a] += x[b]; x[d] ^= x[a]; x[d] = _rotl(x[d], 8)
        x[c] += x[d]; x[b] ^= x[c]; x[b] = _rotl(x[b], 7)

    with np.errstate(over="ignore"):
        for _ in range(10):
            qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
            qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
        x += s
    return np.ascontiguousarray(x.transpose(1, 2, 0)).reshape(rows, blocks * 16)


def _key_words(seed: bytes):
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes")
    return np.frombuffer(seed, dtype="<u4")


def uniform_mod(seed: bytes, primes, n: int, xp=np) -> object:
    """(len(primes), n) uint64 (on xp's device), row i uniform mod primes[i]: its own
    ChaCha20 stream (nonce = (prime, label, 0)), words masked to the prime's bit
    length, those below it kept in order (rejection: no bias). A row depends on its
    prime alone, so any subset of rows regenerates the same values."""
    key = _key_words(seed)
    primes = [int(q) for q in primes]
    nonces = np.array([[q, _UNIFORM_LABEL, 0] for q in primes], dtype=np.uint32)
    masks = np.array([(1 << q.bit_length()) - 1 for q in primes], dtype=np.uint32)[:, None]
    qs = np.array(primes, dtype=np.uint32)[:, None]
    # 3n words: n accepted with overwhelming probability (acceptance > 1/2); a short row draws on
    blocks = -(-3 * n // 16)
    words = _keystream(xp)(key, nonces, 0, blocks) & xp.asarray(masks)
    ok = words < xp.asarray(qs)
    pos = xp.cumsum(ok, axis=1) - 1
    out = xp.zeros((len(primes), n), dtype=xp.uint64)
    keep = ok & (pos < n)
    rows = xp.broadcast_to(xp.arange(len(primes))[:, None], ok.shape)
    out[rows[keep], pos[keep]] = words[keep]
    short = np.flatnonzero(to_numpy(ok.sum(axis=1)) < n)
    for i in short:                 # never in practice: P(Bin(3n, 1/2) < n) is negligible
        got, counter = to_numpy(words[i][ok[i]]), blocks
        while got.size < n:
            more = chacha20_rows(key, nonces[i], counter, blocks)[0] & masks[i]
            got = np.concatenate([got, more[more < qs[i]]])
            counter += blocks
        out[i] = xp.asarray(got[:n].astype(np.uint64))
    return out


def sparse_ternary(stream: Stream, n: int, hamming_weight: int) -> np.ndarray:
    """Int8 coefficients in {-1, 0, 1} with exactly `hamming_weight` non-zeros."""
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


def _popcount32(x):
    """Set bits of each uint32 (SWAR: numpy and cupy alike)."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return (x * 0x01010101) >> 24


TERNARY_REJECT = 0xFFFFFFFF   # the one word outside 3 * floor(2^32 / 3)


class SmallSampler:
    """Small coefficients (ternary secrets, centred-binomial errors) from a 32-byte
    seed and a label, generated where xp lives; every draw is its own ChaCha20
    stream (nonce = label hash, draw number), so draws are independent and a seed
    gives the same coefficients on numpy and on the GPU."""

    def __init__(self, seed: bytes, label: str, xp=np):
        self._key = _key_words(seed)
        self._label = np.frombuffer(hashlib.sha256(label.encode()).digest()[:8], dtype="<u4")
        self._draw = 0
        self.xp = xp

    def next_draws(self, count: int):
        """(key words, label words, first draw number) of the next `count` draws, which
        are then spent: for a kernel that makes several draws at once."""
        first = self._draw
        self._draw += count
        return self._key, self._label, first

    def _stream(self, draw: int, word0: int, count: int):
        """Words word0 .. word0 + count of draw `draw`'s stream (word0 a multiple of 16)."""
        nonce = np.array([[self._label[0], self._label[1], draw]], dtype=np.uint32)
        return _keystream(self.xp)(self._key, nonce, word0 // 16, -(-count // 16))[0, :count]

    def _words(self, count: int):
        return self._stream(self.next_draws(1)[2], 0, count)

    def ternary(self, n: int, reject: int = TERNARY_REJECT):
        """(n,) int64 uniform on {-1, 0, 1}. `reject` is a test hook (a word that occurs
        in a test's stream exercises the redraw); only the default is unbiased."""
        if n % 16:
            raise ValueError("ternary draws take a multiple of 16 coefficients")
        xp = self.xp
        draw = self.next_draws(1)[2]
        words = self._stream(draw, 0, n)
        bad = words == reject
        lap = 1
        while bool(bad.any()):          # probability about n * 2^-32 per draw
            more = self._stream(draw, lap * n, n)
            words = xp.where(bad, more, words)
            bad &= more == reject
            lap += 1
        return (words % 3).astype(xp.int64) - 1

    def centered_binomial(self, n: int, eta: int):
        """(n,) int64: eta bits minus eta bits (variance eta / 2)."""
        if not 0 < eta <= 32:
            raise ValueError("centred binomial needs 0 < eta <= 32")
        xp = self.xp
        words = self._words(2 * n).reshape(2, n) & xp.uint32((1 << eta) - 1)
        counts = _popcount32(words).astype(xp.int64)
        return counts[0] - counts[1]


def _keystream(xp):
    if xp is np:
        return chacha20_rows
    from ..backend import kernels

    return kernels.chacha20_rows
