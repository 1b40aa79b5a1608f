"""CKKS parameter sets: modulus chain, key-switching digits, scale table, security.

Scale policy (documented in README "CKKS parameters"): every RNS prime is
below 2^31, so a scale above 2^31 is made by rescaling with a *group* of
``primes_per_level`` primes per level. The chain is built top-down the way
OpenFHE's FLEXIBLEAUTO mode does it: the top scale is exactly 2^scale_bits,
and each level's prime group is picked so that Delta_{l-1} = Delta_l^2 / Q_l
stays as close to 2^scale_bits as the available primes allow. The scale of
every level is therefore known in advance (``scale_at(level)``), products of
two ciphertexts at one level land exactly on the next level's scale, and
plaintexts/constants are encoded at whatever scale makes the result land on
the table after rescaling.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from .primes import WORD_BITS, largest_ntt_primes, nearest_ntt_prime, ntt_primes_near


class InsecureParametersError(ValueError):
    """log2(QP) exceeds the HE-standard 128-bit bound for the ring degree."""


class ParameterError(ValueError):
    pass


# HomomorphicEncryption.org standard, 128-bit classical security, uniform
# ternary secret: max log2(QP) per ring degree. 2^16 and 2^17 are OpenFHE's
# extension of the same table (stdlatticeparms.cpp).
HE_STANDARD_128 = {
    1 << 10: 27, 1 << 11: 54, 1 << 12: 109, 1 << 13: 218,
    1 << 14: 438, 1 << 15: 881, 1 << 16: 1747, 1 << 17: 3523,
}

ERROR_ETA = 21  # centred binomial, variance ETA/2 = 10.5 -> sigma 3.24 (HE standard: 3.2)


@dataclass(frozen=True)
class Parameters:
    log_n: int
    q: tuple  # modulus chain, bottom (base primes) first
    p: tuple  # special primes for hybrid key switching
    base_primes: int
    primes_per_level: int
    dnum: int
    scale_bits: int
    scales: tuple  # scales[l] = Delta_l for l = 0..max_level
    secret_hamming_weight: int | None = None
    insecure: bool = False
    name: str = "custom"
    _cache: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    # ---- derived sizes -------------------------------------------------
    @property
    def n(self) -> int:
        return 1 << self.log_n

    @property
    def slots(self) -> int:
        return self.n // 2

    @property
    def max_level(self) -> int:
        return (len(self.q) - self.base_primes) // self.primes_per_level

    def limbs_at(self, level: int) -> int:
        if not 0 <= level <= self.max_level:
            raise ParameterError(f"level {level} outside 0..{self.max_level}")
        return self.base_primes + level * self.primes_per_level

    def scale_at(self, level: int) -> float:
        return self.scales[level]

    @property
    def qp(self) -> tuple:
        return tuple(self.q) + tuple(self.p)

    @property
    def log_qp(self) -> float:
        return sum(math.log2(x) for x in self.qp)

    @property
    def alpha(self) -> int:
        """Primes per key-switching digit."""
        return -(-len(self.q) // self.dnum)

    def digits_at(self, level: int) -> list[range]:
        """Index ranges (into q) of the digits present at `level`."""
        limbs = self.limbs_at(level)
        return [range(s, min(s + self.alpha, limbs)) for s in range(0, limbs, self.alpha)]

    def p_indices(self) -> range:
        return range(len(self.q), len(self.q) + len(self.p))

    # ---- identity --------------------------------------------------------
    def canonical(self) -> dict:
        return {
            "scheme": "rns-ckks", "log_n": self.log_n, "q": list(self.q), "p": list(self.p),
            "base_primes": self.base_primes, "primes_per_level": self.primes_per_level,
            "dnum": self.dnum, "scale_bits": self.scale_bits,
            "secret_hamming_weight": self.secret_hamming_weight, "error_eta": ERROR_ETA,
        }

    @property
    def fingerprint(self) -> str:
        if "fp" not in self._cache:
            blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
            self._cache["fp"] = hashlib.sha256(blob).hexdigest()
        return self._cache["fp"]

    @classmethod
    def from_canonical(cls, d: dict, name: str = "custom", unsafe_allow_insecure: bool = False):
        return build(
            log_n=d["log_n"], levels=(len(d["q"]) - d["base_primes"]) // d["primes_per_level"],
            scale_bits=d["scale_bits"], primes_per_level=d["primes_per_level"],
            base_primes=d["base_primes"], dnum=d["dnum"],
            secret_hamming_weight=d.get("secret_hamming_weight"), name=name,
            unsafe_allow_insecure=unsafe_allow_insecure, _chain=(tuple(d["q"]), tuple(d["p"])),
        )

    def describe(self) -> str:
        return (f"{self.name}: N=2^{self.log_n}, levels={self.max_level}, "
                f"scale=2^{self.scale_bits} ({self.primes_per_level} prime(s)/level), "
                f"|Q|={len(self.q)} primes, |P|={len(self.p)}, dnum={self.dnum}, "
                f"log2(QP)={self.log_qp:.1f} (128-bit bound {HE_STANDARD_128.get(self.n, '?')})"
                + (" [INSECURE: test only]" if self.insecure else ""))


def check_security(log_n: int, log_qp: float) -> None:
    n = 1 << log_n
    bound = HE_STANDARD_128.get(n)
    if bound is None:
        raise InsecureParametersError(f"no 128-bit security bound known for N=2^{log_n}")
    if log_qp > bound:
        raise InsecureParametersError(
            f"log2(QP)={log_qp:.1f} exceeds the 128-bit HE-standard bound {bound} for N=2^{log_n}")


def _level_chain(two_n, levels, scale_bits, ppl, used, level_scale_bits=None):
    """Prime groups for levels max..1 (top-down), and the scale table.

    level_scale_bits {level: bits} raises the scale of some levels above
    2^scale_bits (the rest keep it); the table below is still recomputed from
    the primes alone, so files carry no extra field.
    """
    bits_at = dict(level_scale_bits or {})
    groups, scales = [], [2.0 ** scale_bits]
    for lvl in range(levels, 0, -1):
        delta = scales[-1]
        target = delta * delta / 2.0 ** bits_at.get(lvl - 1, scale_bits)  # makes Delta_{l-1} ~ that
        if ppl == 1:
            group = [nearest_ntt_prime(target, two_n, exclude=used)]
        else:
            # Pick the group from a pool of nearby primes so its product hits the
            # target closely even where primes = 1 mod 2N are sparse.
            share = target ** (1.0 / ppl)
            pool = ntt_primes_near(share, two_n, 48, exclude=used)
            head = pool[:ppl - 2] if ppl > 2 else []
            rest = [x for x in pool if x not in head]
            want = target / math.prod(head) if head else target
            best = min(((a, b) for i, a in enumerate(rest) for b in rest[i + 1:]),
                       key=lambda ab: abs(math.log(ab[0] * ab[1] / want)))
            group = head + list(best)
        used.update(group)
        groups.append(group)
        scales.append(delta * delta / math.prod(group))
    return groups, scales


def build(log_n: int, levels: int, scale_bits: int, primes_per_level: int = 1,
          base_primes: int = 2, dnum: int | None = None, secret_hamming_weight: int | None = None,
          name: str = "custom", unsafe_allow_insecure: bool = False, level_scale_bits=None,
          _chain=None) -> Parameters:
    """Build (deterministically) and check a parameter set.

    `unsafe_allow_insecure=True` is the one opt-out of the 128-bit check; it is
    for unit tests of tiny rings and the command-line tools never pass it.
    """
    if not 10 <= log_n <= 17:
        raise ParameterError(f"ring degree 2^{log_n} outside 2^10..2^17")
    if not 1 <= base_primes <= 2:
        raise ParameterError("base_primes must be 1 or 2 (decryption CRT is exact in 64 bits)")
    if primes_per_level < 1 or levels < 0:
        raise ParameterError("primes_per_level >= 1 and levels >= 0 required")
    per_prime = scale_bits / primes_per_level
    two_n = 2 << log_n
    if per_prime > WORD_BITS - 0.5 or per_prime < math.log2(two_n) + 2:
        raise ParameterError(
            f"scale 2^{scale_bits} over {primes_per_level} prime(s) gives {per_prime:.1f}-bit primes; "
            f"need between {math.log2(two_n) + 2:.0f} and {WORD_BITS - 0.5} bits")
    n_q = base_primes + levels * primes_per_level
    dnum = dnum or max(1, min(n_q, levels + 1))
    if not 1 <= dnum <= n_q:
        raise ParameterError(f"dnum={dnum} must be in 1..{n_q}")

    if _chain is None:
        used: set[int] = set()
        base = largest_ntt_primes(base_primes, two_n, below=(1 << WORD_BITS))
        used.update(base)
        groups, _ = _level_chain(two_n, levels, scale_bits, primes_per_level, used, level_scale_bits)
        q = tuple(base) + tuple(x for g in reversed(groups) for x in g)
        alpha = -(-n_q // dnum)
        max_digit_bits = max(sum(math.log2(x) for x in q[s:s + alpha]) for s in range(0, n_q, alpha))
        n_p = max(1, math.ceil((max_digit_bits + 1) / (WORD_BITS - 0.2)))
        p = tuple(largest_ntt_primes(n_p, two_n, exclude=used))
    else:
        q, p = _chain
    # Scale table recomputed from the chain itself so it is identical on read-back.
    scales = [2.0 ** scale_bits]
    for lvl in range(levels, 0, -1):
        top = base_primes + lvl * primes_per_level
        qgroup = math.prod(q[top - primes_per_level:top])
        scales.append(scales[-1] ** 2 / qgroup)
    scales = tuple(reversed(scales))

    params = Parameters(log_n=log_n, q=tuple(int(x) for x in q), p=tuple(int(x) for x in p),
                        base_primes=base_primes, primes_per_level=primes_per_level, dnum=dnum,
                        scale_bits=scale_bits, scales=scales,
                        secret_hamming_weight=secret_hamming_weight, insecure=False, name=name)
    if len(set(params.qp)) != len(params.qp):
        raise ParameterError("modulus chain has repeated primes")
    try:
        check_security(log_n, params.log_qp)
    except InsecureParametersError:
        if not unsafe_allow_insecure:
            raise
        object.__setattr__(params, "insecure", True)
    return params


def max_levels_within_bound(log_n, scale_bits, primes_per_level, base_primes=2, dnum=None):
    """Largest level count whose log2(QP) meets the 128-bit bound."""
    best = None
    for lv in range(1, 200):
        try:
            build(log_n, lv, scale_bits, primes_per_level, base_primes,
                  dnum=None if dnum is None else min(dnum, base_primes + lv * primes_per_level))
            best = lv
        except InsecureParametersError:
            break
    if best is None:
        raise InsecureParametersError(f"no level fits the 128-bit bound at N=2^{log_n}")
    return best


# Presets. `levels` of the secure sets is the most that fits the bound with
# their dnum (checked by a test, and by build() at every load).
PRESETS = {
    # tiny ring for unit tests: fast, NOT secure (explicit opt-out)
    "test": dict(log_n=11, levels=10, scale_bits=40, primes_per_level=2, base_primes=2, dnum=4,
                 unsafe_allow_insecure=True),
    # the "demo" level budget and scale on the tiny ring, NOT secure: unit tests of
    # the circuit (GELU degree, refresh points) the demo preset runs
    "test-demo": dict(log_n=11, levels=6, scale_bits=46, primes_per_level=2, base_primes=2, dnum=3,
                      unsafe_allow_insecure=True),
    # secure (128-bit), runs in seconds on two CPU cores
    "demo": dict(log_n=14, levels=6, scale_bits=46, primes_per_level=2, base_primes=2, dnum=7),
    # N = 2^16 at the 128-bit bound
    "n16": dict(log_n=16, levels=27, scale_bits=54, primes_per_level=2, base_primes=2, dnum=10),
    # bootstrapping (ckks/bootstrap): Q0 ~ 2^62 over Delta = 2^54 is EvalMod's message ratio
    "test-boot": dict(log_n=11, levels=18, scale_bits=54, primes_per_level=2, base_primes=2, dnum=4,
                      unsafe_allow_insecure=True),
    # test-boot with 8 levels left after bootstrapping: enough for the encoder's
    # polynomials (nn/refresh.py), for `infer --refresh bootstrap` tests
    "test-deep-boot": dict(log_n=11, levels=22, scale_bits=54, primes_per_level=2, base_primes=2, dnum=4,
                           unsafe_allow_insecure=True),
    # Levels 23..18 (CoeffToSlot's output, EvalMod's square and sine series) at 2^60:
    # EvalMod amplifies the rescale noise of these levels ~2^10 (mod1.py), and at
    # N=2^16 that noise sets the precision: 2^59 gave 21.00-21.31 bits over nine key
    # draws, 2^60 21.91-22.13 (one H200, scripts/bootstrap_precision.py, recorded in
    # bench/results/bootstrap-precision-n16-boot-nvidia-h200.md). Level 17 steps down to
    # 2^58 = 2^120 / 2^62 (a group holds < 2^62). Costs 40 bits of log2(QP): 1746 of the
    # 1747 bound.
    "n16-boot": dict(log_n=16, levels=27, scale_bits=54, primes_per_level=2, base_primes=2, dnum=10,
                     level_scale_bits={**{lvl: 60 for lvl in range(18, 24)}, 17: 58}),
}


def preset(name: str) -> Parameters:
    if name not in PRESETS:
        raise ParameterError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return build(name=name, **PRESETS[name])
