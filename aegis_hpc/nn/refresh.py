"""Refresh by bootstrapping: where a polynomial may run, and the bound B of each site.

Bootstrapping (ckks/bootstrap) is accurate for slot values within about
[-1, 1]: EvalMod sees coefficients / Q0, and its sine (with the arcsine step)
is exact to ~2^-25 only while the coefficients stay below the scale. Values at
the refresh sites of the encoder reach thousands (Goldschmidt's 1/x and the
numerator it multiplies), so every refresh divides by a per-site bound B and
multiplies back afterwards (nn/ops.py CipherOps._bootstrap); the absolute
error of a refresh is then B times bootstrapping's.

B is measured, like the approximation ranges of calibration/*.json: the
plaintext mirror runs the calibration sentences (inputs/sentences.txt) and
records the largest |value| at each site (the tag without token and group
ids); B is the power of two at or above twice that. The mirror checks the
bound again on its own inputs (Stats.boot_peak). A site the calibration never
reached gets the largest B of all (a safe, less precise bound).

Limitation: B covers inputs like the calibration sentences. Inputs unlike them
exceed some bounds (a one- or two-token fragment without [CLS]/[SEP] reaches
1.9-3.3 B at tiny's softmax sites), and a bootstrap of |x| > B is wrong without
any error being raised: check such inputs with the mirror (Stats.boot_peak < 1)
or recalibrate on representative text.
"""

from __future__ import annotations

import math

from ..ckks.bootstrap import bootstrap_rotations
from . import approx as approx_mod
from . import models
from .ops import SPARE_LEVELS, DepthError, refresh_site

MARGIN = 2.0
# the measuring mirror never runs out of levels, so it never refreshes
_MEASURE_LEVELS = 1000
_MEASURED: dict = {}


class RefreshBounds:
    def __init__(self, peaks: dict):
        self.peaks = dict(peaks)
        self.b = {s: float(2.0 ** max(0, math.ceil(math.log2(max(MARGIN * v, 1e-300)))))
                  for s, v in self.peaks.items()}
        self.fallback = max(self.b.values(), default=1.0)
        self.misses = 0

    def of(self, tag: str) -> float:
        b = self.b.get(refresh_site(tag))
        if b is None:
            self.misses += 1
            return self.fallback
        return b


def measure(name: str, layers: int, slots: int) -> RefreshBounds:
    key = (models.canonical_name(name), layers, slots)
    if key not in _MEASURED:
        from . import mirror
        from .calibrate import default_sentences_path, read_sentences

        emb = models.embed_text(name, read_sentences(default_sentences_path()))
        peaks: dict = {}
        mirror.run(name, emb, layers, slots, _MEASURE_LEVELS, refresh="none", record=peaks)
        _MEASURED[key] = RefreshBounds(peaks)
    return _MEASURED[key]


def prepare(ops, name: str, layers: int, slots: int) -> list:
    """The layer approximations for `ops` (their degrees fit ops.period) and, for
    --refresh bootstrap, the site bounds; refuses parameters that leave too few
    levels after bootstrapping for the model's polynomials."""
    approx = approx_mod.build(models.load_calibration(name), layers, ops.period)
    if ops.refresh_mode == "bootstrap":
        depth = max(s.depth() for a in approx for s in (a.gelu, a.exp, a.invsqrt1, a.invsqrt2))
        if ops.refresh_level < depth + SPARE_LEVELS:
            raise DepthError(f"bootstrapping leaves {ops.refresh_level} levels; model {name} needs "
                             f"{depth + SPARE_LEVELS} (a depth-{depth} polynomial and the 1/B before "
                             "the next bootstrap): use a parameter set with more levels")
        if ops.bounds is None:
            ops.bounds = measure(name, layers, slots)
        if getattr(ops, "ctx", None) is not None:
            ops.boot_slots = slot_counts(name, ops.ctx.params)
    return approx


def slot_counts(name: str, params) -> list:
    """Slot counts bootstrapping runs at: a token's S, and S*G_max for every attention
    group (each slot count needs its own rotation keys, ~300 MB each at N=2^16, so
    S*G slots are bootstrapped as S*G_max: the same plaintext, tiled)."""
    from .packing import Layout

    layout = Layout(models.config(name), params.slots)
    return sorted({layout.S, layout.S * layout.G_max})


def required_rotations(name: str, params) -> list:
    """Rotation steps of bootstrapping at every slot count `name` refreshes at
    (keygen --bootstrap --for-model; conjugation comes on top)."""
    return sorted({r for c in slot_counts(name, params) for r in bootstrap_rotations(params, slots=c)})
