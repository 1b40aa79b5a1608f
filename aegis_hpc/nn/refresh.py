"""Refresh by bootstrapping: what the encoder needs from the parameter set and the keys.

Bootstrapping (ckks/bootstrap) is accurate for slot values within about
[-1, 1]: EvalMod sees coefficients / Q0, and its sine (with the arcsine step)
is exact to 2^-24 of the message (n16-boot) only while the coefficients stay
below the scale, which slots within [-1, 1] guarantee (ckks/bootstrap/mod1.py). Every
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


# A bootstrap (n16-boot) costs about as much as this many key switches at the top
# level: 139 ms against 1.16 ms for a key switch of 48 rows x 7 digits (one H200,
# bench/results/ops-nvidia-h200-cupy-n16-l24.md), scaled by keyswitch_cost
BOOTSTRAP_TOP_KEYSWITCHES = 65


def keyswitch_cost(params):
    """Relative cost of a key switch at a level: ModUp's NTTs, (limbs + |P|) rows per
    digit, dominate it."""
    def cost(level):
        return (params.limbs_at(level) + len(params.p)) * len(params.digits_at(level))
    return cost


def input_level(name: str, tokens: int, params, layers: int | None = None) -> int:
    """The level to encrypt a `tokens`-token input at for server-only inference: the
    one of least estimated cost (key switches outside polynomials weighted by their
    level's cost, bootstraps by BOOTSTRAP_TOP_KEYSWITCHES). From the top level the
    first layer runs on up to 2.5x the limbs later layers see; a lower start may cost
    a few refreshes more. The schedule depends on the length alone (refreshes are
    decided by levels, never by values), so the mirror runs on zeros: the client
    picks the level without looking at its data's values."""
    import numpy as np

    from . import mirror, models
    from .ops import bootstrap_level

    cost = keyswitch_cost(params)
    low = bootstrap_level(params)
    # the start level shapes the first two layers' schedule only: from the third on,
    # refreshes and levels are the same from every start (MiniLM and bert-base at
    # 128 tokens, starts 10..27), so two layers decide (a 512-token MiniLM in ~1 min)
    layers = min(2, models.config(name).layers if layers is None else layers)
    boot = BOOTSTRAP_TOP_KEYSWITCHES * cost(params.max_level)
    zeros = [np.zeros((tokens, models.config(name).hidden))]
    best = None
    for level in range(low, params.max_level + 1):
        try:
            stats = mirror.run(name, zeros, layers, params.slots, level, "bootstrap", low, keyswitch_cost=cost)[1]
        except DepthError:            # a start whose schedule reaches a refresh without the level for its 1/B
            continue
        estimate = stats.ops.get("work", 0.0) + boot * stats.refreshes
        if best is None or estimate < best[0]:
            best = (estimate, level)
    return best[1]
