"""Ciphertext and plaintext containers (evaluation form, RNS limbs)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class Plaintext:
    data: object          # xp uint64 (limbs, N), NTT form
    level: int
    scale: float
    slots: int
    fingerprint: str
    is_complex: bool = False


@dataclass
class Ciphertext:
    data: object          # xp uint64 (2, limbs, N), NTT form; limb i is mod params.q[i]
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
        return replace(self, data=data, **changes)
