"""Canonical-embedding encoder: N/2 complex slots <-> integer polynomial coefficients.

Slot j is the evaluation at zeta^(5^j) (zeta = exp(i*pi/N)), so the Galois
map X -> X^(5^k) rotates slots left by k and X -> X^(2N-1) conjugates them.
Both directions are one length-N FFT: the values at all odd powers of zeta
are N * ifft(m_k * zeta^k). Fewer slots (a power of two) are replicated to
fill N/2, which makes a rotation by k act as a cyclic rotation of the short
vector.
"""

from __future__ import annotations

import numpy as np

from .bits import pow2_at_least


class EncodingError(ValueError):
    pass


_SUB: dict = {}


def _sub_encoder(n: int) -> "Encoder":
    """The encoder of the ring of degree n (a sparse plaintext's own ring)."""
    if n not in _SUB:
        _SUB[n] = Encoder(int(np.log2(n)))
    return _SUB[n]


class Encoder:
    def __init__(self, log_n: int):
        n = 1 << log_n
        self.n = n
        self.max_slots = n // 2
        exps = np.empty(self.max_slots, dtype=np.int64)
        e = 1
        for j in range(self.max_slots):
            exps[j] = e
            e = e * 5 % (2 * n)
        self._slot_pos = (exps - 1) // 2            # position among odd powers
        self._conj_pos = n - 1 - self._slot_pos      # position of the conjugate point
        k = np.arange(n)
        self._twist = np.exp(1j * np.pi * k / n)
        self._untwist = np.conj(self._twist)
        # Encoding needs the points at even positions only: the odd ones are their
        # conjugates (position n-1-p), so m_k + i m_{k+n/2} = (2/n) zeta^-k FFT(even)[k],
        # one complex FFT of n/2 points. Each slot lands at an even position either
        # itself or as its conjugate; _even_slot[i] is the slot at even position 2i.
        odd = self._slot_pos % 2 == 1
        even_pos = np.where(odd, n - 1 - self._slot_pos, self._slot_pos) // 2
        self._even_slot = np.empty(self.max_slots, dtype=np.int64)
        self._even_slot[even_pos] = np.arange(self.max_slots)
        self._even_conj = odd[self._even_slot]
        self._half_untwist = self._untwist[: n // 2] * (2.0 / n)

    def slots_for(self, count: int, slots: int | None = None) -> int:
        if count > self.max_slots:
            raise EncodingError(f"{count} values do not fit in the {self.max_slots} slots of this ring")
        if slots is None:
            slots = pow2_at_least(count)
        if slots & (slots - 1) or not 1 <= slots <= self.max_slots:
            raise EncodingError(f"slot count must be a power of two in 1..{self.max_slots}, got {slots}")
        if count > slots:
            raise EncodingError(f"{count} values do not fit in {slots} slots (max {self.max_slots})")
        return slots

    def to_coefficients(self, values, scale: float, slots: int | None = None):
        """Rounded integer coefficients (int64, length N) of values * scale, and the slot count."""
        coeffs, slots = self.to_coefficients_many(np.asarray(values).ravel()[None, :], scale, slots)
        return coeffs[0], slots

    def to_coefficients_many(self, rows, scale: float, slots: int | None = None):
        """to_coefficients of each row of a 2-D array, with one batched FFT (a
        linear transform's diagonals: hundreds of vectors, one call). numpy's
        FFT runs the same 1-D plan on every row, so each row's coefficients
        are bit-identical to encoding it alone."""
        small, slots = self.sparse_coefficients_many(rows, scale, slots)
        stride = self.max_slots // slots
        coeffs = np.zeros((small.shape[0], self.n), dtype=np.int64)
        coeffs[:, ::stride] = small
        return coeffs, slots

    def sparse_coefficients_many(self, rows, scale: float, slots: int | None = None):
        """The coefficients that can be non-zero, (rows, 2 slots) int64: a vector of
        `slots` slots tiled over N/2 is a polynomial in X^(N / (2 slots)), m(X) =
        m'(X^(N / 2 slots)) with m' its encoding in the ring of degree 2 slots; so
        one FFT of size 2 slots per row (not N). Coefficient k of m' is coefficient
        k N / (2 slots) of m."""
        z = np.asarray(rows)
        real = not np.iscomplexobj(z)
        z = z.astype(np.float64 if real else np.complex128, copy=False)
        if z.ndim != 2:
            raise EncodingError("expected a 2-D array of value vectors")
        if not np.all(np.isfinite(z)):
            raise EncodingError("values contain NaN or infinity")
        slots = self.slots_for(z.shape[1], slots)
        sub = self if 2 * slots == self.n else _sub_encoder(2 * slots)
        if z.shape[1] < slots:
            full = np.zeros((z.shape[0], slots), dtype=z.dtype)
            full[:, : z.shape[1]] = z
            z = full
        even = z[:, sub._even_slot]
        if not real:
            even[:, sub._even_conj] = np.conj(even[:, sub._even_conj])
        spectrum = np.fft.fft(even, axis=-1)
        spectrum *= sub._half_untwist
        m = np.empty((z.shape[0], sub.n))
        half = sub.n // 2
        np.multiply(spectrum.real, scale, out=m[:, :half])
        np.multiply(spectrum.imag, scale, out=m[:, half:])
        if np.max(np.abs(m), initial=0.0) >= 2.0 ** 62:
            raise EncodingError(f"values too large for scale 2^{np.log2(scale):.1f} (coefficients overflow 2^62)")
        return np.rint(m).astype(np.int64), slots

    def from_coefficients(self, coeffs, scale: float, slots: int):
        """Slots (complex128, length `slots`) of a polynomial with real (float or int) coefficients."""
        m = np.asarray(coeffs, dtype=np.float64) / scale
        points = self.n * np.fft.ifft(m * self._twist)
        return points[self._slot_pos[:slots]]
