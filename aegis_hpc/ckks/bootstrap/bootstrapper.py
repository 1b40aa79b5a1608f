"""RNS-CKKS bootstrapping: ModRaise -> CoeffToSlot -> EvalMod -> SlotToCoeff.

Full slots (N/2) split the coefficients into two real ciphertexts and run
EvalMod on each; n < N/2 slots first take the trace to the subring of the
sparse message (SubSum, log2(N/2n) rotations). From n <= N/32 on, both halves
then ride in one ciphertext of 2n slots (dft.lift_split / lift_merge), one
EvalMod; N/4 to N/16 slots split like full slots (see _Pipeline).

Scale bookkeeping. After ModRaise the ciphertext decrypts to t = m + Q0*I
modulo the whole chain (Q0 = product of the base primes). Its scale attribute
is set to 2*K'*Q0, which *is* the constant 1/(2K') of the circuit: CoeffToSlot
then yields (t_lo + i t_hi)/(2K'*Q0) in bit-reversed order, and the
conjugation split gives the real vectors v/K', v = t/Q0, ready for EvalMod
(K' = K + 1/4, see mod1.py). Folding constants into scales costs no
precision; folding them into plaintext diagonals would round them. The
plaintext scales of the DFT stages share the drop from 2K'*Q0 to the table
scale evenly, so no stage is encoded at a small scale, and the last stage
lands exactly on the table (so EvalMod's products stay on it, see
params.py). SlotToCoeff carries q0/(2*pi*Delta_in) the same way, and lands
on the table at the output level.

Sparse-secret encapsulation (Bossuat et al., "Bootstrapping for approximate
homomorphic encryption with negligible failure-probability by using sparse
secret encapsulation", ACNS 2022). The overflow I of ModRaise grows like
sqrt(h) with the secret's Hamming weight h, and EvalMod's degree with |I|.
The main secret stays dense (the 128-bit table assumes uniform ternary);
only for ModRaise the level-0 ciphertext is switched to an ephemeral sparse
secret s' (weight 32), and switched back right after at the top level. The
key s -> s' is published only on the primes of level 0 and two special
primes, a small modulus at which a sparse secret is still hard; the key
s' -> s encrypts s' under the dense s over the whole chain like any other
switching key.

Security of s -> s' (an RLWE sample under s', h = 32). No published table
covers h = 32 at N = 2^16 that we could find: the HE standard's bound (1747
bits) assumes a dense ternary secret, and of Bossuat et al., "Security
Guidelines for Implementing Homomorphic Encryption" (ePrint 2024/463) we
had only the abstract, no sparse-secret table. The reference point is thus
Lattigo's choice, the implementation of the paper above: its bootstrapping
(EphemeralSecretWeight 32 by default) generates this key with
GenEncapsulationSwitchingKeys on the primes Q()[:1] and P()[:1] only
(tuneinsight/lattigo, ckks/bootstrapping/bootstrapper.go), ~2^60 * ~2^61 =
2^121 at N = 2^16 in its N16QP1546H192H32 set. Ours: Q0 (the base primes)
and as few special primes P' as keep the key-switching noise small
(encapsulation_special: P' >= Q0/2, two 31-bit primes), 2^124 at n16-boot,
checked against ENCAPSULATION_MAX_LOG_QP (Lattigo's 121 bits plus the 3 that
31-bit primes cost) at key generation. Smaller rings get the bound scaled by
N/2^16 (the dense table's rate), so a secure chain below 2^16 is refused
rather than guessed. The price is the switch's noise, ~Q0/P' ~ 1 times the
key's error instead of Q0/P ~ 2^-124 times it: at n16-boot (CPU, N=2^16) ModRaise's noise
goes from 2^6.0 to 2^9.3 (std, coefficients of scale 2^55), and the level-0
slots switched to s' are off by 2^-30.8 instead of 2^-42.6 (max). Most of
that is one fixed pattern: ModUp's output x + u*Q0 is not centred, so its
mean (~Q0) times the key error lands on the all-ones polynomial, whose slot
image peaks at ~N/pi. Still 2^-9.6 of the bootstrapping error (2^-21.2).

Precision is set by the message ratio R = Q0/Delta_in: an error e in v
becomes R*e in the output, while sin(2*pi*v)/(2*pi) differs from m/Q0 by a
relative (2*pi*|m|/Q0)^2/6 <= (2*pi/R)^2/6. The presets use Q0 ~ 2^62 (two
31-bit primes) over Delta = 2^54 (the n16 chain needs 2^54 for a stable scale
table), so R = 2^8: a small R keeps the amplified DFT/EvalMod noise low, and
the arcsine step (mod1.py) removes the sine error that a small R brings for
messages whose coefficients approach Delta.

Error budget (decrypting each stage with the secret key, n16-boot's chain at
N=2^12..2^14; every noise term grows ~N^1.5: rescale noise ~N with a dense
secret, times sqrt(n) through SlotToCoeff). With the whole chain at 2^54 the
output error was EvalMod's own noise, ~2^10 times a fresh rescale noise:
the square u = 2y^2 - 1 near y = 0 and the sine series amplify their rescale
noise by up to 2*pi*K'^2 in v (mod1.py), and R*sqrt(n) carries that to the
output. CoeffToSlot's noise (its rotations run boosted to 2^60, _boost) was
~2^3.5 smaller, and key switching after the centred ModDown (keyswitch.py) is
as small as a rescale. So n16-boot raises the scale of
CoeffToSlot's output level and of the levels of EvalMod's square and series
(params.py): at 2^59 measured 2^-22.4 -> 2^-26.0 at N=2^12, 2^-23.4 at N=2^14,
~2^-21.1 at N=2^16 (one H200); at 2^60 ~2^-22.0 at N=2^16, the most the
128-bit bound leaves room for. The polynomial's approximation error, 2^-26.6 at
N=2^16 in the float model, comes next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...backend import residue_dtype
from ...backend.graphs import GraphCache
from ...backend.graphs import enabled as graphs_enabled
from ..ciphertext import Ciphertext
from ..keys import SecretKey, SwitchingKey, switching_key_rows
from ..rns import crt_centered_small
from ..sampling import Stream, fresh_seed, sparse_ternary
from . import dft
from .mod1 import EvalMod, default_k_range


class BootstrapError(ValueError):
    pass


@dataclass(frozen=True)
class BootstrapConfig:
    cts_levels: int
    stc_levels: int
    k_range: int
    double_angle: int
    sine_degree: int | None = None      # None: smallest 2^j-1 meeting ~2^-44
    ephemeral_weight: int | None = 32   # None: ModRaise under the main secret itself
    arcsine: bool = True                # exact for large coefficients, costs 2 levels (mod1.py)
    message_boost_bits: int = 0         # scale m up by 2^b before ModRaise: R = Q0/(2^b Delta)

    def depth(self) -> int:
        return self.cts_levels + self.stc_levels + self.evalmod().depth

    def evalmod(self) -> EvalMod:
        return EvalMod(self.k_range, self.double_angle, self.sine_degree, arcsine=self.arcsine)


# sparse slot counts n with n * LIFT_MAX_SHARE <= N run one EvalMod on 2n lifted slots (_Pipeline)
LIFT_MAX_SHARE = 32

EPHEMERAL_WEIGHT = 32
# log2 of the modulus the key towards the weight-32 secret may have at N >= 2^16: Lattigo's
# Q0*P0 (121 bits, module docstring) plus 3 bits for our two-prime Q0 and P' of 31-bit primes
ENCAPSULATION_MAX_LOG_QP = 124.0
BOOST_SCALE_BITS = 60  # scale the DFT stages rotate at (Bootstrapper._boost)


def default_config(params) -> BootstrapConfig:
    """The configuration follows from the parameters alone (never from a preset's name):
    keys made for one name must serve the same chain loaded from a file.

    N <= 2^12: 2 + 2 DFT levels (few slots, rotations are cheap). Larger rings:
    4 levels for CoeffToSlot (it runs on the most limbs, so fewer rotations
    there pay most) and 3 for SlotToCoeff, and message ratio 2^7 (see
    BootstrapConfig.message_boost_bits): at N=2^16 EvalMod's noise outweighs the
    sine term a smaller ratio brings (<= 2^-24.1 of the message with the minimax
    arcsine step, mod1.py; 2^-21.1 with the Taylor one).
    """
    h = params.secret_hamming_weight
    eph = None if h is not None and h <= EPHEMERAL_WEIGHT else EPHEMERAL_WEIGHT
    k = default_k_range(params.n, h if eph is None else eph)
    r = max(2, math.ceil(math.log2(max(k, 1))) - 1)
    small = params.log_n <= 12
    return BootstrapConfig(cts_levels=2 if small else 4, stc_levels=2 if small else 3, k_range=k,
                           double_angle=r, ephemeral_weight=eph, message_boost_bits=0 if small else 1)


@dataclass
class EncapsulationKeys:
    """Switching keys main secret -> ephemeral sparse secret (level 0 only) and back."""
    to_ephemeral: SwitchingKey
    from_ephemeral: SwitchingKey


def encapsulation_special(params) -> int:
    """Special primes of the key towards the ephemeral secret: the fewest with P' >= Q0/2.

    Its key-switching noise is ~Q0/P' times a key's error summed over N terms, so
    P' ~ Q0 keeps it near a fresh encryption's; more primes only enlarge the
    modulus the sparse secret is exposed at.
    """
    q0 = math.prod(params.q[: params.limbs_at(0)])
    for k in range(1, len(params.p) + 1):
        if 2 * math.prod(params.p[:k]) >= q0:
            return k
    return len(params.p)


def encapsulation_rows(params) -> list:
    """Rows (params.qp indices) of the key towards the ephemeral secret: P', then Q_0."""
    return switching_key_rows(params, 0, encapsulation_special(params))


def encapsulation_log_modulus(params) -> float:
    return sum(math.log2(params.qp[i]) for i in encapsulation_rows(params))


def check_encapsulation_security(params) -> float:
    """log2 of the key's modulus; BootstrapError past the bound (module docstring) on a
    secure chain. Insecure test rings are not checked: nothing there is secure."""
    log_qp = encapsulation_log_modulus(params)
    bound = ENCAPSULATION_MAX_LOG_QP * min(1.0, params.n / 2 ** 16)
    if not params.insecure and log_qp > bound:
        raise BootstrapError(f"the key towards the weight-{EPHEMERAL_WEIGHT} ephemeral secret would have "
                             f"log2(modulus) {log_qp:.1f} > {bound:.1f} at N=2^{params.log_n} (no security "
                             f"reference for it); bootstrap at N >= 2^16")
    return log_qp


def add_bootstrap_keys(ctx, sk, keys, config: BootstrapConfig | None = None):
    """Context.keygen(bootstrap=True): the encapsulation keys, as `keys.bootstrap`."""
    config = config or default_config(ctx.params)
    keys.bootstrap = None
    if config.ephemeral_weight is None:
        return keys
    p, kg = ctx.params, ctx.keygenerator
    check_encapsulation_security(p)
    if p.digits_at(0) != [range(0, p.limbs_at(0))]:
        raise BootstrapError("level 0 must lie in the first key-switching digit")
    s_eph = sparse_ternary(Stream(fresh_seed(), "ephemeral-secret"), p.n, config.ephemeral_weight)
    eph = SecretKey(coeffs=s_eph, ntt=kg.small_to_ntt(s_eph, kg.all_idx), fingerprint=p.fingerprint)
    # s -> s' only on P', Q_0 (digit 0): more rows would expose s' at a larger modulus
    down = kg.switching_key(eph, sk.ntt, level=0, special=encapsulation_special(p))
    keys.bootstrap = EncapsulationKeys(to_ephemeral=down, from_ephemeral=kg.switching_key(sk, eph.ntt))
    return keys


class _Pipeline:
    """DFT plans for one slot count; each plan knows the slot count it runs at."""

    def __init__(self, n_ring: int, slots: int, config: BootstrapConfig):
        self.slots = slots
        self.full = 2 * slots == n_ring
        # lift_split's plaintexts (the last CoeffToSlot diagonals times [1, -i]) round at CKKS's
        # generic encoding error, where the DFT's own diagonals encode almost exactly, and
        # SlotToCoeff carries that error to each slot ~sqrt(2n)-fold. At n16-boot (one H200),
        # lifted: N/4 slots 20.0-20.2 bits, N/16 21.5-21.9, 1,024 slots 23.0-24.2; split like
        # full slots: N/4 22.1-22.6, N/8 22.6-23.2; full slots 21.6-22.1. Sparse counts above
        # N/32 pay the second EvalMod instead
        # (bench/results/bootstrap-precision-n16-boot-nvidia-h200.md)
        self.lifted = not self.full and LIFT_MAX_SHARE * slots <= n_ring
        cts = dft.coeff_to_slot_matrices(2 * slots, slots, config.cts_levels)
        stc = dft.slot_to_coeff_matrices(2 * slots, slots, config.stc_levels)
        cts_slots = [slots] * len(cts)
        stc_slots = [slots] * len(stc)
        if self.lifted:
            # real and imaginary halves side by side in 2n slots: one EvalMod (dft.lift_split)
            cts[-1] = dft.lift_split(cts[-1], slots)
            stc[0] = dft.lift_merge(stc[0], slots)
            cts_slots[-1] = stc_slots[0] = 2 * slots
        self.cts = [dft.BsgsPlan(m, k) for m, k in zip(cts, cts_slots)]
        self.stc = [dft.BsgsPlan(m, k) for m, k in zip(stc, stc_slots)]
        # SubSum: rotations by n, 2n, ... in the full slot space zero every coefficient
        # outside X^(N/2n)Z (the trace to the subring the sparse message lives in)
        self.subsum = [] if self.full else [slots << i for i in range(int(math.log2(n_ring // 2 // slots)))]

    def rotations(self) -> set[int]:
        out = {r % plan.slots for plan in self.cts + self.stc for r in plan.rotations()}
        return (out | set(self.subsum)) - {0}


def bootstrap_rotations(params, config: BootstrapConfig | None = None, slots: int | None = None) -> list[int]:
    """Rotation steps bootstrapping needs at `slots` (default: full); conjugation comes on top."""
    config = config or default_config(params)
    if config.depth() > params.max_level:
        raise BootstrapError(f"bootstrapping needs {config.depth()} levels, {params.name} has "
                             f"{params.max_level}; use a preset ending in -boot")
    return sorted(_Pipeline(params.n, slots or params.slots, config).rotations())


class Bootstrapper:
    def __init__(self, ev, config: BootstrapConfig | None = None):
        self.ev = ev
        self.ctx = ev.ctx
        self.params = p = ev.params
        self.config = config = config or default_config(p)
        self.q0 = math.prod(p.q[: p.base_primes])
        self.evalmod = config.evalmod()
        self.depth = config.cts_levels + self.evalmod.depth + config.stc_levels
        if self.depth > p.max_level:
            raise BootstrapError(f"bootstrapping needs {self.depth} levels, {p.name} has {p.max_level}")
        self.output_level = p.max_level - self.depth
        self._pipelines: dict = {}
        self._graphs = GraphCache("bootstrap") if graphs_enabled() and ev.graphs_capturable else None
        self._counted: dict = {}
        # the DFT plaintexts depend on the ring, the configuration, the slot count and
        # the level alone: every evaluator of a context shares them (GBs at N=2^16,
        # seconds to encode), so a server encodes them once per process
        self._encoded: dict = ev.ctx.__dict__.setdefault("_bootstrap_plaintexts", {}).setdefault(config, {})
        self.encapsulation = None
        if config.ephemeral_weight is not None:
            self.encapsulation = getattr(ev.keys, "bootstrap", None)
            if self.encapsulation is None:
                raise BootstrapError("no bootstrapping keys: generate them with ctx.keygen(bootstrap=True)")
            rows = len(encapsulation_rows(p))
            if self.encapsulation.to_ephemeral.b.shape[:2] != (1, rows):
                raise BootstrapError(f"the key towards the ephemeral secret has shape "
                                     f"{tuple(self.encapsulation.to_ephemeral.b.shape[:2])}, expected (1, {rows}): "
                                     f"keys from an older version; generate them again")
            # this one key lives on P' (encapsulation_special), not all of P
            self._encap_ks = ev.ctx.key_switcher(encapsulation_special(p))

    def describe(self, slots: int | None = None) -> dict:
        """Shape of the circuit: levels it uses and leaves, key switches per call."""
        pipe = self.pipeline(slots or self.params.slots)
        em = self.evalmod
        return {
            "slots": pipe.slots, "depth": self.depth, "levels_after": self.output_level,
            "cts_levels": self.config.cts_levels, "stc_levels": self.config.stc_levels,
            "evalmod_levels": em.depth, "k_range": em.k_range, "double_angle": em.double_angle,
            "sine_degree": 2 * em.series.degree, "arcsine": em.arcsine,
            "rotation_keys": len(pipe.rotations()) + 1,
            "dft_rotations": sum(len(p.rotations()) for p in pipe.cts + pipe.stc) + len(pipe.subsum),
            "ephemeral_weight": self.config.ephemeral_weight,
        }

    def pipeline(self, slots: int) -> _Pipeline:
        if slots not in self._pipelines:
            self._pipelines[slots] = _Pipeline(self.params.n, slots, self.config)
        return self._pipelines[slots]

    # ---- ModRaise ----------------------------------------------------------------
    def mod_raise(self, ct: Ciphertext) -> Ciphertext:
        """Level-0 ciphertext -> top level; decrypts to m + Q0*I modulo the whole chain."""
        p, ring, xp = self.params, self.ev.ring, self.ev.xp
        ev = self.ev
        if ct.level != 0:
            ct = ev.drop_level(ct, ct.level)
        if self.encapsulation is not None:
            ct = self._switch(ct, self.encapsulation.to_ephemeral, self._encap_ks)
        base = list(range(p.base_primes))
        coeff = ring.intt(ct.data, base)
        lifted = xp.stack([crt_centered_small(coeff[c], p.q[: p.base_primes]) for c in range(2)])
        top = p.limbs_at(p.max_level)
        q_all = self.__dict__.get("_q_all")
        if q_all is None:   # once: a per-call upload cannot be captured in a CUDA graph
            q_all = self._q_all = xp.asarray(np.array(p.q[:top], dtype=np.int64))[:, None]
        res = (lifted[:, None, :] % q_all).astype(residue_dtype())
        data = ring.ntt(res, list(range(top)))
        raised = ct.with_data(data, level=p.max_level, scale=2.0 * self.evalmod.input_divisor * self.q0)
        if self.encapsulation is not None:
            raised = self._switch(raised, self.encapsulation.from_ephemeral)
        return raised

    def _switch(self, ct, key, ks=None):
        return ct.with_data((ks or self.ev.ks).switch(ct.data[1], key, ct.level, addend=(ct.data[0], None)))

    def sub_sum(self, ct, pipe: _Pipeline):
        """Trace to the sparse subring: the slots become n-periodic sums, values times N/2n."""
        if pipe.full:
            return ct
        ev = self.ev
        acc = ct.with_data(ct.data, slots=self.params.slots)
        for step in pipe.subsum:
            acc = ev.add(acc, ev.rotate(acc, step))
        # the sum multiplied the message by N/2n: fold it into the scale
        return acc.with_data(acc.data, slots=pipe.slots, scale=acc.scale * (self.params.slots // pipe.slots))

    # ---- DFT stages --------------------------------------------------------------
    def _plaintexts(self, key, plan, level, scale):
        hit = self._encoded.get(key)
        if hit is not None and hit[0] == level and abs(hit[1] / scale - 1) < 1e-12:
            return hit[2]
        pts = {}
        for g, items in plan.groups.items():
            for b, v in items:
                pt = self.ctx.encode(v, level=level, scale=scale, slots=plan.slots)
                pt.data = pt.data.astype(np.uint32, copy=False)  # residues < 2^31: half the cache (GBs at N=2^16)
                pts[(g, b)] = pt
        self._encoded[key] = (level, scale, pts)
        return pts

    def _apply(self, ct, plan, pts, rescale=True):
        ev = self.ev
        ct = ct.with_data(ct.data, slots=plan.slots)
        babies = ev.rotate_hoisted(ct, [b % plan.slots for b in plan.babies])
        total = None
        for g, items in plan.groups.items():
            inner = ev.mul_plain_sum([babies[b % plan.slots] for b, _ in items], [pts[(g, b)] for b, _ in items])
            # giant steps rotate before the rescale: their key-switching noise is then
            # divided by the dropped primes along with everything else
            if g % plan.slots:
                inner = ev.rotate(inner, g % plan.slots)
            total = inner if total is None else ev.add(total, inner)
        return ev.rescale(total) if rescale else total

    def _boost(self, ct):
        """Raise the scale by an exact integer factor before the baby-step rotations.

        Key switching adds a fixed absolute noise (~2^22 in the slots at N=2^16 with a
        dense secret, mostly the approximate ModDown), so its relative size is set by
        the scale of the ciphertext being rotated. Multiplying by 2^b is exact and
        free; the next plaintext scale absorbs it. Capped so the product with the
        plaintext stays far below the modulus.
        """
        room = math.log2(math.prod(self.params.q[: self.params.limbs_at(ct.level - 1)])) - 12
        bits = math.floor(min(BOOST_SCALE_BITS, room) - math.log2(ct.scale))
        if bits <= 0:
            return ct
        out = self.ev.mul_int(ct, 1 << bits)
        out.scale = ct.scale * (1 << bits)
        return out

    def _run_stages(self, ct, tag, pipe, plans, target_scale_fn, rescale_last=True):
        """Apply plans, one level each, spreading the scale change evenly over them."""
        ev = self.ev
        for i, plan in enumerate(plans):
            ct = self._boost(ct)
            remaining = len(plans) - i
            end_scale = target_scale_fn(ct.level - remaining)
            if remaining == 1:
                scale = ev.rescale_target_scale(ct.scale, ct.level)
                scale *= end_scale / self.params.scale_at(ct.level - 1)
            else:
                # this rescale takes 1/remaining of the way (in log) to the end scale
                scale = ev._level_product(ct.level) * (end_scale / ct.scale) ** (1.0 / remaining)
            # keyed by the pipeline's slot count too: N/4 sparse slots run their last CoeffToSlot
            # and first SlotToCoeff stage at 2n = N/2 slots, the full pipeline's count at the
            # same stage index, with other matrices (a process bootstrapping both reused the
            # full one's plaintexts)
            pts = self._plaintexts((tag, pipe.slots, plan.slots, i), plan, ct.level, scale)
            ct = self._apply(ct, plan, pts, rescale=rescale_last or remaining > 1)
        return ct

    def coeff_to_slot(self, ct, pipe: _Pipeline | None = None):
        """Raised ciphertext -> the coefficients divided by K'*Q0, bit-reversed, as real slots.

        Full slots and N/4 to N/16 sparse ones: (low half, high half) as two ciphertexts.
        Fewer sparse slots (lifted): one ciphertext of 2n slots, low half in [0, n) and
        high half in [n, 2n).
        """
        ev = self.ev
        pipe = pipe or self.pipeline(ct.slots)
        # conjugate before the last rescale, for the same reason as the giant steps:
        # here its noise would otherwise reach v = t/Q0 multiplied by K'
        w = self._run_stages(self.sub_sum(ct, pipe), "cts", pipe, pipe.cts, self.params.scale_at,
                             rescale_last=False)
        conj = ev.conjugate(w)
        re = ev.rescale(ev.add(w, conj))
        re.is_complex = False
        if pipe.lifted:
            return (re,)
        im = ev.rescale(ev.mul_by_i(ev.sub(w, conj), negate=True))  # (w - conj w) * (-i)
        im.is_complex = False
        return re, im

    def slot_to_coeff(self, parts, out_scale_fn, pipe: _Pipeline):
        ev = self.ev
        if not pipe.lifted:
            re, im = parts
            w = ev.add(re, ev.mul_by_i(im))
        else:
            (w,) = parts
        w.is_complex = True
        out = self._run_stages(w, "stc", pipe, pipe.stc, out_scale_fn)
        return out.with_data(out.data, slots=pipe.slots)

    @staticmethod
    def _scaled(ct, scale):
        ct.scale = scale
        return ct

    # ---- whole pipeline ----------------------------------------------------------
    def bootstrap(self, ct: Ciphertext) -> Ciphertext:
        """The bootstrap of ct; on a GPU, from its second call with a key on, one CUDA graph
        (backend/graphs.py): the circuit branches only on what the key holds."""
        if self._graphs is None:
            return self._bootstrap(ct)
        ev = self.ev
        ev._check(ct)
        key = self._graph_key(ct)
        before = dict(ev.counts)
        out = self._graphs.call(key, self._bootstrap, ct)
        # a replay runs no Python, and the capturing call runs the circuit twice: the counts
        # (key switches) move by what one eager call of this key counted
        moved = self._counted.setdefault(key, {k: ev.counts[k] - before[k] for k in before})
        ev.counts.update({k: before[k] + moved[k] for k in before})
        return out

    @staticmethod
    def _graph_key(ct):
        return ct.level, ct.slots, ct.scale, ct.is_complex, ct.data.shape, ct.data.dtype.str

    def replays(self, ct) -> bool:
        """Whether a bootstrap of ct runs as a captured CUDA graph now."""
        return self._graphs is not None and self._graphs.captured(self._graph_key(ct))

    def _bootstrap(self, ct: Ciphertext) -> Ciphertext:
        ev = self.ev
        ev._check(ct)
        if ct.slots < 2 and ct.slots != self.params.slots:
            raise BootstrapError("sparse bootstrapping needs at least 2 slots")
        pipe = self.pipeline(ct.slots)
        if ct.level:
            # SlotToCoeff's plaintext scales follow the input scale, and a ciphertext
            # dropped from level L keeps Delta_L: every input level would encode its own
            # set of DFT plaintexts (re-encoded on each change, ~0.2 s at N=2^16). The
            # levels above 0 are discarded anyway; spend one to land on Delta_0 exactly.
            ct = ev.adjust(ct, 0)
        if self.config.message_boost_bits:
            # exact: the content grows, the values stay; EvalMod noise then reaches the
            # output divided by 2^b (a smaller message ratio), at a larger sine error
            boost = 1 << self.config.message_boost_bits
            ct = self._scaled(ev.mul_int(ct, boost), ct.scale * boost)
        delta_in = ct.scale
        raised = self.mod_raise(ct)
        # slots |z| <= 1 keep every coefficient within delta_in (mod1.py): the arcsine's domain
        s_max = 2.0 * math.pi * delta_in / self.q0
        parts = [self.evalmod.evaluate(ev, x, s_max) for x in self.coeff_to_slot(raised, pipe)]
        if len(parts) == 2:
            parts = list(ev.match(*parts))
        # values are ~ 2*pi*m/Q0; the constant Q0/(2*pi*Delta_in) rides on the scale
        factor = self.q0 / (2.0 * math.pi * delta_in)
        for x in parts:
            x.scale /= factor
        out = self.slot_to_coeff(parts, self.params.scale_at, pipe)
        out.is_complex = ct.is_complex
        return out


def bootstrap(ev, ct):
    """Evaluator.bootstrap: one Bootstrapper per evaluator (it caches encoded DFT matrices)."""
    b = ev.__dict__.get("_bootstrapper")
    if b is None:
        b = ev.__dict__["_bootstrapper"] = Bootstrapper(ev)
    return b.bootstrap(ct)
