"""Refresh by bootstrapping: what the encoder needs from the parameter set and the keys.

Bootstrapping (ckks/bootstrap) is accurate for slot values within about
[-1, 1]: EvalMod sees coefficients / Q0, and its sine (with the arcsine step)
is exact to ~2^-25 only while the coefficients stay below the scale. Every
refresh site of the encoder carries the bound of its value (nn/functions.py,
nn/block.py, derived from nn/domains.py: by construction where the weights
give a usable bound, else measured on the calibration corpus with a margin);
nn/ops.py divides by the power of two B at or above it before bootstrapping
and multiplies back after, so a refresh's absolute error is B times
bootstrapping's. The mirror reports, per site, how much of its bound a value
used (`Stats.domain_use`; `python -m aegis_hpc.nn.accuracy --mirror-only`).
"""

from __future__ import annotations

from ..ckks.bootstrap import bootstrap_rotations
from . import approx as approx_mod
from .ops import SPARE_LEVELS, DepthError

# the most levels one step of the encoder asks for at once (LayerNorm's input:
# its square and the scaled square), plus the level the 1/B before a bootstrap takes
MIN_REFRESH_LEVELS = 2 + SPARE_LEVELS + 1


def prepare(ops, name: str, layers: int, slots: int) -> list:
    """The layer approximations for `ops`; for --refresh bootstrap it refuses
    parameters that leave too few levels after bootstrapping (deep polynomials
    are refreshed inside, so any depth works above this floor)."""
    approx = approx_mod.build(name, layers)
    if ops.refresh_mode == "bootstrap":
        if ops.refresh_level < MIN_REFRESH_LEVELS:
            raise DepthError(f"bootstrapping leaves {ops.refresh_level} levels; model {name} needs "
                             f"{MIN_REFRESH_LEVELS} (two products and the 1/B before the next bootstrap): "
                             "use a parameter set with more levels")
        if getattr(ops, "ctx", None) is not None:
            ops.boot_slots = slot_counts(name, ops.ctx.params)
    return approx


def slot_counts(name: str, params) -> list:
    """Slot counts bootstrapping runs at: the ring's (every token-block ciphertext has
    B S slots, and n slots are also any multiple of n, the vector tiled; each slot
    count needs its own rotation keys, ~300 MB each at N=2^16, so one count serves)."""
    return [params.slots]


def required_rotations(name: str, params) -> list:
    """Rotation steps of bootstrapping at every slot count `name` refreshes at
    (keygen --bootstrap --for-model; conjugation comes on top)."""
    return sorted({r for c in slot_counts(name, params) for r in bootstrap_rotations(params, slots=c)})
