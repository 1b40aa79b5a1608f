"""Ciphertext and plaintext containers (evaluation form, RNS limbs)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..backend import residue_dtype


@dataclass
class Plaintext:
    """NTT form. A plaintext of fewer slots than N/2 is a polynomial in
    X^(N/(2*slots)), whose NTT values (bit-reversed order) come in runs of
    r = N/(2*slots) equal values; a compact one (run = r) keeps one value per
    run: (limbs, N/r), r times less memory (linear-transform weights)."""
    data: object          # (limbs, N) of backend.residue_dtype(), or (limbs, N/run) uint32 when compact
    level: int
    scale: float
    slots: int
    fingerprint: str
    is_complex: bool = False
    run: int = 1

    def expanded(self, xp) -> "Plaintext":
        """The same plaintext with (limbs, N) data of the backend's residue word."""
        if self.run == 1:
            return self
        return replace(self, data=xp.repeat(self.data.astype(residue_dtype(), copy=False), self.run, axis=-1),
                       run=1)


@dataclass
class Ciphertext:
    data: object          # (2, limbs, N) of backend.residue_dtype(), NTT form; limb i is mod params.q[i]
    level: int
    scale: float
    slots: int
    fingerprint: str
    is_complex: bool = False

    @property
    def limbs(self) -> int:
        return self.data.shape[-2]

    def copy(self) -> "Ciphertext":
        return replace(self, data=self.data.copy())

    def with_data(self, data, **changes) -> "Ciphertext":
        # the constructor directly: dataclasses.replace costs ~10 us, and every
        # evaluator op makes one of these
        fields = {"level": self.level, "scale": self.scale, "slots": self.slots,
                  "fingerprint": self.fingerprint, "is_complex": self.is_complex}
        fields.update(changes)
        return Ciphertext(data, **fields)
