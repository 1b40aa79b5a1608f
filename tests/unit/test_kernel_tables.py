"""Host-side tables of the CUDA kernels whose correctness is arithmetic, checked without a GPU
(the kernels themselves are checked bit for bit in tests/gpu)."""

from aegis_hpc.backend.kernels import (FUSED_BOUNDS, MAX_TOP_LOG, MODUP_TOP_SMEM, _fused_bound, _one_reduction,
                                       _staged_words, _top_smem)
from aegis_hpc.benchmarks.ops import match_params, peer_log2_q


def _worst_sum(primes, q):
    return sum((p - 1) * (q - 1) for p in primes)


def test_one_reduction_only_where_the_worst_sum_stays_below_2_32_q():
    """dot_mont reduces a digit's 64-bit sum of products t_i h (t_i < q_i, h < q) once where
    _one_reduction says so: Montgomery's (x + m q) / 2^32 is below 2q only for x < 2^32 q, and
    x + m q must fit 64 bits. Checked at the largest destination prime a ring can have."""
    q = (1 << 31) - 1
    prm = match_params(16, 24, peer_log2_q(24))
    sources = [[prm.qp[i] for i in dg] for dg in prm.digits_at(prm.max_level)] + [list(prm.p)]
    sources += [[q, q], [q, q, 3], [(1 << 30) + 3] * 4, [(1 << 30) - 35] * 4]
    for primes in sources:
        if _one_reduction(primes):
            assert _worst_sum(primes, q) < (1 << 32) * q
            assert _worst_sum(primes, q) + ((1 << 32) - 1) * q < 1 << 64
        else:
            assert sum(primes) > 1 << 32
    # bench-n16-l20: six digits of 25-bit primes take one reduction; the digit holding the two
    # base primes below 2^31, and ModDown's P, take one a pair
    flags = [_one_reduction(s) for s in sources[:len(prm.digits_at(prm.max_level)) + 1]]
    assert flags == [False] + [True] * 6 + [False]


def test_fused_conversions_fit_their_shared_memory():
    """Every fused conversion the host launches stages within a block's 48 KiB: ModUp's digit
    padded to whole 16-byte loads (Staged<A>), ModDown's source plus its centring word; a
    source that would not fit takes the separate kernels (None)."""
    launched = 0
    for top in range(1, MAX_TOP_LOG + 1):
        for limbs in range(1, FUSED_BOUNDS[-1] + 2):
            bound = _fused_bound(limbs, top)
            if bound is None:
                if limbs <= FUSED_BOUNDS[-1]:
                    a = min(b for b in FUSED_BOUNDS if b >= limbs)
                    assert _top_smem(max(a + 1, _staged_words(a)), top) > MODUP_TOP_SMEM
                continue
            launched += 1
            padded = _staged_words(bound)
            assert bound >= limbs and padded % 4 == 0 and bound <= padded < bound + 4
            assert _top_smem(padded, top) <= MODUP_TOP_SMEM and _top_smem(limbs + 1, top) <= MODUP_TOP_SMEM
    assert _fused_bound(6, 4) == 6 and _staged_words(6) == 8   # bench-n16-l20's digits
    assert launched > 0
