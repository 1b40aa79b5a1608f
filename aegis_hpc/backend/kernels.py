"""CUDA kernels for the CKKS hot spots, compiled once per process through cupy.RawModule.

Layout contract (the numpy reference's in aegis_hpc.ckks, but for the word): residues
are values below q < 2^31, stored as uint32 words on the device (backend.residue_dtype;
the kernels that read a ciphertext also take the reference's uint64 words), limbs are
rows of a C-contiguous (..., limbs, N) array. Inside the kernels everything that fits is
32-bit: NTT butterflies multiply by twiddles in Montgomery form (mont_mul, one
32-bit table); constants take Shoup products with 32-bit precomputed quotients;
sums of products accumulate in 64 bits before one reduction (Montgomery's in
the 32-bit kernels, Barrett's in the 64-bit ones).
Every kernel returns exactly the fully reduced value the numpy reference
returns, so tests/gpu compare them bit for bit.

The numpy code in aegis_hpc.ckks is the reference; these functions are only
reached from its `if ring._gpu` hooks.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import numpy as np

_SRC = r"""
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

/* residue i of rows stored in 64-bit (wide) or 32-bit words: a ciphertext's rows, or the
   tensor product's and the key switch's 32-bit ones; the flag is uniform over a launch */
__device__ __forceinline__ u32 word_at(const void* p, size_t i, int wide) {
    return wide ? (u32)((const u64*)p)[i] : ((const u32*)p)[i];
}

/* this thread's (row, coefficient) in a launch of one thread per coefficient of `rows` rows
   of N = 2^logn; false past the end */
__device__ __forceinline__ bool thread_row_col(long long rows, int logn, long long& row, int& n) {
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (rows << logn)) return false;
    row = tid >> logn;
    n = (int)(tid & ((1LL << logn) - 1));
    return true;
}

/* r in [0, 2q) -> r mod q as one unsigned min: below q, r - q wraps above r (q < 2^31, so
   r < 2q never wraps itself); a compare and select would be two instructions */
__device__ __forceinline__ u32 reduce_2q(u32 r, u32 q) { return min(r, r - q); }
__device__ __forceinline__ u32 shoup_mul(u32 a, u32 w, u32 ws, u32 q) {
    u32 hi = __umulhi(a, ws);
    return reduce_2q(a * w - hi * q, q);   /* true value in [0, 2q), exact mod 2^32 */
}
__device__ __forceinline__ u32 add_q(u32 a, u32 b, u32 q) { return reduce_2q(a + b, q); }
__device__ __forceinline__ u32 sub_q(u32 a, u32 b, u32 q) { return reduce_2q(a + q - b, q); }
/* a*b for residues a, b < 2^32 held in 64-bit words: one 32x32->64 multiply, where the
   full 64x64 product the types ask for costs three */
__device__ __forceinline__ u64 mul32(u64 a, u64 b) { return (u64)(u32)a * (u32)b; }
/* x mod q for any 64-bit x, q < 2^31, mu = floor(2^64 / q): the estimate is short by < 2 q */
__device__ __forceinline__ u64 barrett(u64 x, u64 q, u64 mu) {
    u64 r = x - __umul64hi(x, mu) * q;
    return r >= q ? r - q : r;
}

/* The NTT of one row runs in two passes over device memory whatever N is:
   the stages whose butterflies span more than a C = 2^logc chunk see each row as
   CH = N / C columns-apart elements x[i*C + k] (i < CH) per column k, an
   independent CH-point problem one thread keeps in registers ("top"); the other
   stages stay inside one chunk and run in shared memory ("smem"). A ring with a top
   pass has C = 2^SMEM_LOG (kernels.SMEM_LOG, defined by the host at compile time), so
   the top kernels' column strides are constants: a column's i-th element is an
   immediate offset from its first, where a runtime stride cost address arithmetic
   per load and store. Rows may be a
   selection of an array's rows (rsel: row indices, null for all) so a ModUp can
   skip the rows it copies; storage is 32- or 64-bit words (Ti, To), arithmetic
   is 32-bit throughout. */
__device__ __forceinline__ size_t row_off(const int* rsel, long long r, int logn) {
    return (size_t)(rsel ? rsel[r] : r) << logn;
}

/* Montgomery reduction: x 2^-32 mod q as (x + m q) / 2^32 for m = x (-q^-1) mod 2^32,
   fully reduced from below 2q, which holds for any x < 2^32 q (a sum of up to two products
   of residues below q < 2^31). mont_mul: a * w mod q with w in Montgomery form
   (w 2^32 mod q). The transforms' twiddles are one Montgomery table, not a value and a
   Shoup table: half the twiddle loads, which were the shared-memory pass's main stall
   (ncu: long scoreboard) and traffic (a row's twiddles are twice its residues' bytes);
   the same three multiplies; exact. */
__device__ __forceinline__ u32 redc(u64 x, u32 q, u32 qinv_neg) {
    const u32 m = (u32)x * qinv_neg;
    return reduce_2q((u32)((x + (u64)m * q) >> 32), q);
}
__device__ __forceinline__ u32 mont_mul(u32 a, u32 wm, u32 q, u32 qn) { return redc((u64)a * wm, q, qn); }

/* A row's prime (q, qn = -q^-1 mod 2^32) and twiddle table, and where this thread's
   column (top) or this block's chunk (smem) starts in the array. */
struct RowPart { int p; u32 q; u32 qn; size_t off; const u32* w; };
__device__ __forceinline__ RowPart row_part(long long r, size_t within, const int* rsel, const int* prow,
                                            const u32* tw, const u32* qns, const u32* qs, int logn) {
    RowPart x;
    x.p = prow[r];
    x.q = qs[x.p];
    x.qn = qns[x.p];
    x.off = row_off(rsel, r, logn) + within;
    x.w = tw + ((size_t)x.p << logn);
    return x;
}
/* column k of row r for thread tid of a top pass over `rows` rows; false past the end */
__device__ __forceinline__ bool column_of(RowPart& x, const int* rsel, const int* prow, const u32* tw,
                                          const u32* qns, const u32* qs, int logn, int logc, long long rows) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (rows << logc)) return false;
    x = row_part(tid >> logc, (size_t)(tid & ((1 << logc) - 1)), rsel, prow, tw, qns, qs, logn);
    return true;
}
/* The shared-memory stages run in radix-8 rounds: each of a block's C/8 threads
   keeps 8 residues in registers, whose positions in the chunk differ in bits
   lo..lo+2 only, and runs up to three stages on them before one barrier, so
   C = 2^12 takes 4 rounds instead of 12 single-stage passes. One pad word per 32
   keeps the rounds with a small lo from hitting the same bank 4-8 times. */
__device__ __forceinline__ int round_pos(int j, int k, int lo) {
    return ((j >> lo) << (lo + 3)) | (k << lo) | (j & ((1 << lo) - 1));
}
__device__ __forceinline__ int padded(int i) { return i + (i >> 5); }
/* padded(round_pos(j, k, lo)) from base = round_pos(j, 0, lo): with lo a compile-time
   constant (the kernels are templates on the chunk size, so every round unrolls) the
   k-th position is base plus a constant from lo >= 5 on, where k << lo is a multiple
   of 32 - the index work per residue is what bounded these kernels (ncu: ALU-bound) */
__device__ __forceinline__ int padded_at(int base, int k, int lo) {
    return lo >= 5 ? padded(base) + (k << lo) + ((k << lo) >> 5) : padded(base + (k << lo));
}
/* this block's row and chunk (index c within its row) */
__device__ __forceinline__ RowPart chunk_of(int& c, const int* rsel, const int* prow, const u32* tw,
                                            const u32* qns, const u32* qs, int logn, int logc) {
    int chunks = 1 << (logn - logc);
    long long r = blockIdx.x / chunks;
    c = (int)(blockIdx.x - r * chunks);
    return row_part(r, (size_t)c << logc, rsel, prow, tw, qns, qs, logn);
}

/* forward (Cooley-Tukey, bit-reversed output): stages m = 1 .. CH/2 of one column. Each
   stage is one loop of CH/2 butterflies, a constant trip count: with a loop per twiddle group
   inside, whose count depends on the stage, nvcc unrolled the innermost by 4 before the stage
   was known and indexed the column at run time, putting it in local memory (64-256 byte stack
   frames in moddown_ntt_top, modup_ntt_top<8, 4> and ntt_fwd_top_lift). A group's twiddle is
   loaded once: the same address, no store between. */
template <int LOGCH>
__device__ __forceinline__ void fwd_top_stages(u32 (&v)[1 << LOGCH], const u32* w, u32 q, u32 qn) {
    constexpr int CH = 1 << LOGCH;
#pragma unroll
    for (int s = 0; s < LOGCH; ++s) {
        const int m = 1 << s, span = CH >> (s + 1);   /* butterfly half-span t = span * C */
#pragma unroll
        for (int b = 0; b < CH / 2; ++b) {
            const int g = b / span, i0 = g * 2 * span + b % span;
            const u32 lo = v[i0], t = mont_mul(v[i0 + span], w[m + g], q, qn);
            v[i0] = add_q(lo, t, q);
            v[i0 + span] = sub_q(lo, t, q);
        }
    }
}

template <typename Ti, typename To, int LOGCH>
__global__ void ntt_fwd_top(const Ti* src, To* dst, const int* rsel, const int* prow, const u32* psi,
                            const u32* qns, const u32* qs, int logn, long long rows) {
    const int CH = 1 << LOGCH;
    constexpr int logc = SMEM_LOG;
    RowPart x;
    if (!column_of(x, rsel, prow, psi, qns, qs, logn, logc, rows)) return;
    u32 v[CH];
#pragma unroll
    for (int i = 0; i < CH; ++i) v[i] = (u32)src[x.off + ((size_t)i << logc)];
    fwd_top_stages<LOGCH>(v, x.w, x.q, x.qn);
#pragma unroll
    for (int i = 0; i < CH; ++i) dst[x.off + ((size_t)i << logc)] = (To)v[i];
}

/* rescale: the centred CRT lift of the dropped primes' coefficients at tp (k = 1 or 2 rows, N
   apart) as a magnitude and a sign, |value| <= q0 q1 / 2 < 2^62 */
__device__ __forceinline__ bool centred_lift(const u64* tp, int N, int k, u64 q0, u64 q1, u64 inv01,
                                             u64 mu1, u64& mag) {
    u64 x0 = tp[0];
    u64 big, v;
    if (k == 1) {
        big = q0; v = x0;
    } else {
        u64 x1 = tp[N];
        u64 t = x1 + q1 - barrett(x0, q1, mu1);
        t = t >= q1 ? t - q1 : t;
        t = barrett(mul32(t, inv01), q1, mu1);
        v = x0 + mul32(t, q0);
        big = q0 * q1;
    }
    const bool neg = v > big / 2;
    mag = neg ? big - v : v;
    return neg;
}
__device__ __forceinline__ u32 signed_residue(u64 mag, bool neg, u64 q, u64 mu) {
    const u64 m = barrett(mag, q, mu);
    return (u32)((neg && m) ? q - m : m);
}

/* rescale's first NTT pass over the kept limbs of polys polynomials (rows poly * keep + i):
   each position's residue of the lift is made here from the dropped primes' coefficients
   top (polys, k, N), which stay in L2, instead of being written by a lift pass and read back */
template <int LOGCH>
__global__ void ntt_fwd_top_lift(const u64* top, u32* dst, const int* prow, const u32* psi, const u32* qns,
                                 const u32* qs, const u64* mus, int k, u64 q0, u64 q1, u64 inv01, u64 mu1,
                                 int keep, int logn, long long rows) {
    const int CH = 1 << LOGCH;
    constexpr int logc = SMEM_LOG;
    const int N = 1 << logn;
    RowPart x;
    if (!column_of(x, nullptr, prow, psi, qns, qs, logn, logc, rows)) return;
    const long long r = (long long)(x.off >> logn);
    const int col = (int)(x.off & (N - 1));
    const u64* tp = top + (size_t)(r / keep) * k * N + col;
    const u64 q = x.q, mu = mus[x.p];
    u32 v[CH];
#pragma unroll
    for (int i = 0; i < CH; ++i) {
        u64 mag;
        const bool neg = centred_lift(tp + ((size_t)i << logc), N, k, q0, q1, inv01, mu1, mag);
        v[i] = signed_residue(mag, neg, q, mu);
    }
    fwd_top_stages<LOGCH>(v, x.w, x.q, x.qn);
#pragma unroll
    for (int i = 0; i < CH; ++i) dst[x.off + ((size_t)i << logc)] = v[i];
}

/* one C = 2^LOGC-element chunk of one row per block, stages m = N/C .. N/2 (bits LOGC-1 .. 0
   of the butterfly span); the first round's positions k << (LOGC-3) | j are coalesced, so
   it reads device memory directly; the last round's (8 j + k) go out through shared
   memory. A group's twiddles sit at w + m + (chunk position >> sh) + a constant. */
/* twiddles of the butterfly groups of stage bit b (span 2^b) from chunk position pos on:
   the table holds stage sh = b + 1's groups from 2^(logn - sh), one per 2^sh positions */
__device__ __forceinline__ const u32* group_twiddles(const u32* w, int logn, int b, int pos) {
    const int sh = b + 1;
    return w + (1 << (logn - sh)) + (pos >> sh);
}

/* the butterflies of bit kb of a round's eight residues (positions base + (k << lo)) in each
   of R rows of one prime: the k that differ only below bit kb share a group, so one twiddle
   load serves them, and every row.
   Cooley-Tukey (forward: a + w b, a - w b) or Gentleman-Sande (inverse: a + b, w (a - b)). */
template <bool FWD, int R>
__device__ __forceinline__ void round_stage_rows(u32 (&v)[R][8], const u32* w, int kb, u32 q, u32 qn) {
#pragma unroll
    for (int k0 = 0; k0 < 8; k0 += 2 << kb) {
        const u32 wv = w[k0 >> (kb + 1)];
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int k = k0; k < k0 + (1 << kb); ++k) {
                const u32 a = v[r][k], b = v[r][k | (1 << kb)];
                if (FWD) {
                    const u32 t = mont_mul(b, wv, q, qn);
                    v[r][k] = add_q(a, t, q);
                    v[r][k | (1 << kb)] = sub_q(a, t, q);
                } else {
                    v[r][k] = add_q(a, b, q);
                    v[r][k | (1 << kb)] = mont_mul(sub_q(a, b, q), wv, q, qn);
                }
            }
        }
    }
}

/* Before a round reads what the previous one wrote: two rounds whose positions keep the
   thread-index bits from lo up (lo: the larger of the two rounds' lo) exchange residues only
   within groups of 2^lo consecutive threads, so a group inside a warp needs __syncwarp, a
   group of warps a named barrier of its own (ids from 1; 0 is __syncthreads'), and only a
   group of the whole block __syncthreads: of the 4 rounds of a 2^12 chunk, one waits for
   the block, one for 2 warps, one for its warp (ncu: the pass was latency-bound). */
template <int LOGC>
__device__ __forceinline__ void round_barrier(int lo) {
    const int group = 1 << lo;
    if (group >= (1 << LOGC) / 8)
        __syncthreads();
    else if (group <= 32)
        __syncwarp();
    else
        asm volatile("bar.sync %0, %1;" :: "r"(1 + (int)(threadIdx.x >> lo)), "r"(group) : "memory");
}

/* eight consecutive residues as 16-byte accesses (loads of 32- or 64-bit words, stores of
   32-bit ones): a round whose positions are 8 j + k reads or writes device memory directly */
__device__ __forceinline__ void load8(const u32* p, u32 (&v)[8]) {
    const uint4 a = *(const uint4*)p, b = *(const uint4*)(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
__device__ __forceinline__ void load8(const u64* p, u32 (&v)[8]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const ulonglong2 t = *(const ulonglong2*)(p + 2 * i);
        v[2 * i] = (u32)t.x; v[2 * i + 1] = (u32)t.y;
    }
}
/* g[i] for i < 8 as a tree of selects on i's bits: a run-time index into a register array
   would put it in local memory */
__device__ __forceinline__ u32 pick8(const u32 (&g)[8], u32 i) {
    const bool b0 = i & 1, b1 = i & 2, b2 = i & 4;
    const u32 a0 = b0 ? g[1] : g[0], a1 = b0 ? g[3] : g[2], a2 = b0 ? g[5] : g[4], a3 = b0 ? g[7] : g[6];
    const u32 c0 = b1 ? a1 : a0, c1 = b1 ? a3 : a2;
    return b2 ? c1 : c0;
}
/* x[k] = row[x[k]] for a Galois map's eight positions from 8 j on (NTT form; in place, which
   keeps the register count of the kernels that call it): an automorphism maps each aligned
   group of eight positions onto one aligned group (it multiplies the top bits of the bit-
   reversed index by the odd g), so the group comes in as 16-byte loads and each residue is
   picked by its index's low bits, where eight 4-byte loads each touched a sector of their own
   across the warp; any other map (a test's random permutation) loads one residue at a time */
template <typename T>
__device__ __forceinline__ void gather8(const T* row, u32 (&x)[8]) {
    const u32 g = x[0] & ~7u;
    bool one = true;
#pragma unroll
    for (int k = 1; k < 8; ++k) one &= (x[k] & ~7u) == g;
    if (one) {
        u32 grp[8];
        load8(row + g, grp);
#pragma unroll
        for (int k = 0; k < 8; ++k) x[k] = pick8(grp, x[k] & 7);
    } else {
#pragma unroll
        for (int k = 0; k < 8; ++k) x[k] = (u32)row[x[k]];
    }
}
__device__ __forceinline__ void store8(u32* p, const u32 (&v)[8]) {
    *(uint4*)p = make_uint4(v[0], v[1], v[2], v[3]);
    *(uint4*)(p + 4) = make_uint4(v[4], v[5], v[6], v[7]);
}

/* a forward chunk's store: 32-bit words from the last round's registers, 64-bit words
   from shared memory (fwd_chunk STAGED) */
template <int LOGC>
__device__ __forceinline__ void store_chunk(u32* dst, const u32* s, const u32 (&v)[8]) {
    store8(dst + 8 * threadIdx.x, v);
}
template <int LOGC>
__device__ __forceinline__ void store_chunk(u64* dst, const u32* s, const u32 (&v)[8]) {
#pragma unroll
    for (int i = threadIdx.x; i < (1 << LOGC); i += (1 << LOGC) / 8) dst[i] = s[padded(i)];
}

/* the shared-memory stages of one chunk in each of R rows of one prime (row i from src +
   off[i], its shared memory s + i * padded(C)): one barrier a round and one twiddle load serve
   all R, whose independent butterflies fill each other's latency (the pass is latency-bound:
   ks_modup_inner runs two digits' rows this way). The last round (positions 8 j + k) leaves
   its residues in v for the kernel to store straight from registers, or with STAGED in s
   (padded, after a barrier) for a store of 64-bit words: eight of those per thread go out
   as 16-byte stores 64 bytes apart across a warp, half-sector writes that measured slower
   (the pass 0.049 -> 0.059 ms) than the coalesced store through shared memory */
template <typename Ti, int LOGC, bool STAGED, int R>
__device__ __forceinline__ void fwd_chunks(u32* s, const Ti* src, const size_t (&off)[R], const RowPart& x,
                                           int cbase, int logn, u32 (&v)[R][8]) {
    constexpr int S = (1 << LOGC) + (1 << LOGC) / 32;     /* padded(C): one row's shared words */
    const int j = threadIdx.x;
    const u32 q = x.q, qn = x.qn;
#pragma unroll
    for (int hi = LOGC - 1; hi >= 0; hi -= 3) {
        const int nb = hi >= 2 ? 3 : hi + 1, lo = hi >= 2 ? hi - 2 : 0;
        const int base = round_pos(j, 0, lo);
        if (hi == LOGC - 1) {
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int k = 0; k < 8; ++k) v[r][k] = (u32)src[off[r] + base + (k << lo)];
        } else {
            round_barrier<LOGC>(hi + 1);     /* the previous round's lo, the larger */
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int k = 0; k < 8; ++k) v[r][k] = s[r * S + padded_at(base, k, lo)];
        }
#pragma unroll
        for (int kb = 2; kb >= 0; --kb) {
            const int b = lo + kb;
            if (b > hi || b <= hi - nb) continue;
            round_stage_rows<true, R>(v, group_twiddles(x.w, logn, b, cbase + base), kb, q, qn);
        }
        if (hi >= 3 || STAGED) {
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int k = 0; k < 8; ++k) s[r * S + padded_at(base, k, lo)] = v[r][k];
        }
    }
    if (STAGED) __syncthreads();
}
/* one row: the chunk at src + x.off */
template <typename Ti, int LOGC, bool STAGED>
__device__ __forceinline__ void fwd_chunk(u32* s, const Ti* src, const RowPart& x, int cbase, int logn,
                                          u32 (&v)[8]) {
    const size_t off[1] = {x.off};
    fwd_chunks<Ti, LOGC, STAGED, 1>(s, src, off, x, cbase, logn, reinterpret_cast<u32 (&)[1][8]>(v));
}

template <typename Ti, typename To, int LOGC>
__global__ void ntt_fwd_smem(const Ti* src, To* dst, const int* rsel, const int* prow, const u32* psi,
                             const u32* qns, const u32* qs, int logn) {
    extern __shared__ u32 s[];
    int c;
    RowPart x = chunk_of(c, rsel, prow, psi, qns, qs, logn, LOGC);
    u32 v[8];
    fwd_chunk<Ti, LOGC, sizeof(To) == 8>(s, src, x, c << LOGC, logn, v);
    store_chunk<LOGC>(dst + x.off, s, v);
}

/* the same pass storing ModDown's and rescale's last step instead of the transform b, as the
   device ciphertext's 32-bit words: out = ((a_c + q - b) inv + add_c[perm]) mod q, where a_c
   is rows row0 .. row0 + limbs of a's polynomial c (poly_rows rows apart: ModDown skips the P
   rows, rescale the dropped limbs), inv (Shoup pair inv, invsh) per limb, and add_c (rows N
   apart, null for none) the rest of the operation's result (32- or 64-bit words, add_wide): a
   rotation's gathered c0 (a ciphertext's row), a product's d0 and d1 (the tensor's 32-bit
   words), times the Shoup pair (addw, addwsh) per limb where addw is not null (ModDown with a
   rescale: q_T^-1). b's transform is never written back, and no separate pass reads it again.
   The step runs on the last round's registers (positions 8 j + k): a comes in and out goes
   back as 16-byte accesses, 0.047 -> 0.039 ms at bench-n16-l20 against a store staged through
   shared memory (which 64-bit outputs needed). */
template <typename Ti, typename TA, int LOGC, bool PERM, bool SCALED>
__global__ void ntt_fwd_smem_scale(const Ti* src, const int* prow, const u32* psi, const u32* qns,
                                   const u32* qs, int logn, const TA* a, u32* out, const u32* inv,
                                   const u32* invsh, const void* add0, const void* add1, const int* perm,
                                   const u32* addw, const u32* addwsh, int row0, int poly_rows, int limbs,
                                   int add_wide) {
    extern __shared__ u32 s[];
    int c;
    RowPart x = chunk_of(c, nullptr, prow, psi, qns, qs, logn, LOGC);
    const int cbase = c << LOGC;
    u32 v[8];
    fwd_chunk<Ti, LOGC, false>(s, src, x, cbase, logn, v);   /* positions 8 j + k in registers */
    const long long row = blockIdx.x >> (logn - LOGC);
    const int poly = (int)(row / limbs), r = (int)(row - (long long)poly * limbs);
    const u32 q = x.q, w = inv[r], ws = invsh[r];
    const int n0 = cbase + 8 * threadIdx.x;
    u32 av[8];
    load8(a + (((size_t)poly * poly_rows + row0 + r) << logn) + n0, av);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = shoup_mul(av[k] + q - v[k], w, ws, q);   /* a, b < q: below 2q < 2^32 */
    /* the addend's presence is per polynomial; its map and factor are per launch (templates:
       as run-time tests they compiled to uniform branches around every residue) */
    const void* ad = poly == 0 ? add0 : (poly == 1 ? add1 : 0);
    if (ad) {
        const size_t adr = (size_t)r << logn;
        u32 t[8];
        if (PERM) {
            /* one 4-byte load a residue: gather8 took this kernel to 44 registers (half the
               blocks an SM) and measured 0.036 -> 0.044 ms in a rotation at bench-n16-l20 */
            u32 at[8];
            load8((const u32*)perm + n0, at);
#pragma unroll
            for (int k = 0; k < 8; ++k) t[k] = word_at(ad, adr + at[k], add_wide);
        } else if (add_wide) {
            load8((const u64*)ad + adr + n0, t);
        } else {
            load8((const u32*)ad + adr + n0, t);
        }
        const u32 aw = SCALED ? addw[r] : 0, aws = SCALED ? addwsh[r] : 0;
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = add_q(v[k], SCALED ? shoup_mul(t[k], aw, aws, q) : t[k], q);
    }
    store8(out + x.off + 8 * threadIdx.x, v);
}

/* inverse (Gentleman-Sande): span bits 0 .. LOGC-1 of one chunk in each of R rows of one
   prime (row i's shared memory s + i * padded(C)), from the first round's residues in v
   (positions 8 j + k, which a kernel loads from device memory as 16-byte words or already
   holds: ks_modup_inner's sums); the last round's residues (positions inv_last_pos(j) +
   (k << (LOGC - 3))) are left in v for the kernel to store. */
template <int LOGC>
__device__ __forceinline__ int inv_last_pos(int j) { return round_pos(j, 0, LOGC - 3); }
template <int LOGC, int R>
__device__ __forceinline__ void inv_chunks(u32* s, const RowPart& x, int cbase, int logn, u32 (&v)[R][8]) {
    constexpr int S = (1 << LOGC) + (1 << LOGC) / 32;     /* padded(C): one row's shared words */
    const int j = threadIdx.x;
#pragma unroll
    for (int b0 = 0; b0 < LOGC; b0 += 3) {
        const int nb = LOGC - b0 < 3 ? LOGC - b0 : 3, lo = b0 < LOGC - 3 ? b0 : LOGC - 3;
        const int base = round_pos(j, 0, lo);
        if (b0 > 0) {
            round_barrier<LOGC>(lo);           /* this round's lo, the larger */
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int k = 0; k < 8; ++k) v[r][k] = s[r * S + padded_at(base, k, lo)];
        }
#pragma unroll
        for (int kb = 0; kb < 3; ++kb) {
            const int b = lo + kb;
            if (b < b0 || b >= b0 + nb) continue;
            round_stage_rows<false, R>(v, group_twiddles(x.w, logn, b, cbase + base), kb, x.q, x.qn);
        }
        if (b0 + 3 < LOGC) {
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int k = 0; k < 8; ++k) s[r * S + padded_at(base, k, lo)] = v[r][k];
        }
    }
}

/* the inverse's shared-memory pass over a chunk of one row, N^-1 folded in when its stages
   are the whole transform. GATHER: the transform of src[..., gather] (a lone rotation's map,
   applied before its ModUp); a template, so the passes without a map keep the registers
   gather8 takes (39 against 32 a thread: three blocks an SM instead of four). */
template <typename Ti, typename To, int LOGC, bool GATHER>
__global__ void intt_smem(const Ti* src, To* dst, const int* rsel, const int* prow, const u32* ipsi,
                          const u32* qns, const u32* qs, const u32* ninv, const u32* ninvsh,
                          int logn, int scale, const int* gather) {
    extern __shared__ u32 s[];
    const int j = threadIdx.x;
    int c;
    RowPart x = chunk_of(c, rsel, prow, ipsi, qns, qs, logn, LOGC);
    const int cbase = c << LOGC;
    u32 v[8];
    if (GATHER) {
        const Ti* row = src + (x.off - cbase);
        load8((const u32*)gather + cbase + 8 * j, v);
        gather8(row, v);
    } else {
        load8(src + x.off + 8 * j, v);
    }
    inv_chunks<LOGC, 1>(s, x, cbase, logn, reinterpret_cast<u32 (&)[1][8]>(v));
    const int base = inv_last_pos<LOGC>(j);
    const u32 q = x.q, ni = ninv[x.p], nis = ninvsh[x.p];
#pragma unroll
    for (int k = 0; k < 8; ++k)
        dst[x.off + base + (k << (LOGC - 3))] = (To)(scale ? shoup_mul(v[k], ni, nis, q) : v[k]);
}

/* inverse (Gentleman-Sande): stages t = C .. N/2 of one column; one loop of CH/2 butterflies
   a stage, as fwd_top_stages */
template <int LOGCH>
__device__ __forceinline__ void inv_top_stages(u32 (&v)[1 << LOGCH], const u32* w, u32 q, u32 qn) {
    constexpr int CH = 1 << LOGCH;
#pragma unroll
    for (int s = 0; s < LOGCH; ++s) {
        const int span = 1 << s, h = CH >> (s + 1);   /* half-span t = span * C, h = N / 2t groups */
#pragma unroll
        for (int b = 0; b < CH / 2; ++b) {
            const int g = b / span, i0 = g * 2 * span + b % span;
            const u32 lo = v[i0], hi = v[i0 + span];
            v[i0] = add_q(lo, hi, q);
            v[i0 + span] = mont_mul(sub_q(lo, hi, q), w[h + g], q, qn);
        }
    }
}

/* inverse, stages t = C .. N/2 (columns in registers), then N^-1; in place */
template <typename T, int LOGCH>
__global__ void intt_top(T* x, const int* rsel, const int* prow, const u32* ipsi, const u32* qns,
                         const u32* qs, const u32* ninv, const u32* ninvsh, int logn, long long rows) {
    const int CH = 1 << LOGCH;
    constexpr int logc = SMEM_LOG;
    RowPart xr;
    if (!column_of(xr, rsel, prow, ipsi, qns, qs, logn, logc, rows)) return;
    const int p = xr.p;
    const u32 q = xr.q, qn = xr.qn;
    const size_t off = xr.off;
    const u32* w = xr.w;
    u32 v[CH];
#pragma unroll
    for (int i = 0; i < CH; ++i) v[i] = (u32)x[off + ((size_t)i << logc)];
    inv_top_stages<LOGCH>(v, w, q, qn);
    u32 ni = ninv[p], nis = ninvsh[p];
#pragma unroll
    for (int i = 0; i < CH; ++i) x[off + ((size_t)i << logc)] = (T)shoup_mul(v[i], ni, nis, q);
}

/* ---- key switching: sum_j ext_j[perm] * key_j, automorphism fused as a gather; 32-bit words
   out (ModDown reads them twice: its P rows' INTT and its last step's Q rows) */
/* one (row, column)'s sum over digits j of e[j e_stride] * (kb, ka)[j k_stride] mod q, one
   Barrett reduction per four products: ks_inner's and ks_inner_many's inner loop */
template <typename TE>
__device__ __forceinline__ void digit_sums(const TE* e, const u32* kb, const u32* ka, int digits,
                                           long long e_stride, long long k_stride, u64 q, u64 mu,
                                           u32& s0, u32& s1) {
    u64 acc0 = 0, acc1 = 0;
    int pending = 0;
    for (int j = 0; j < digits; ++j) {
        u64 x = (u64)e[(size_t)j * e_stride];
        acc0 += mul32(x, kb[(size_t)j * k_stride]);
        acc1 += mul32(x, ka[(size_t)j * k_stride]);
        if (++pending == 4) { acc0 = barrett(acc0, q, mu); acc1 = barrett(acc1, q, mu); pending = 1; }
    }
    s0 = (u32)barrett(acc0, q, mu);
    s1 = (u32)barrett(acc1, q, mu);
}

template <typename TE>
__global__ void ks_inner(const TE* ext, const u32* kb, const u32* ka, const int* perm,
                         const u64* qs, const u64* mus, u32* out, int digits, int rows,
                         int logn, long long ext_dstride, long long key_dstride) {
    long long r;
    int n;
    if (!thread_row_col(rows, logn, r, n)) return;
    const size_t at = ((size_t)r << logn) + n, poly = (size_t)rows << logn;
    u32 s0, s1;
    digit_sums(ext + ((size_t)r << logn) + (perm ? perm[n] : n), kb + at, ka + at, digits,
               ext_dstride, key_dstride, qs[r], mus[r], s0, s1);
    out[at] = s0;
    out[poly + at] = s1;
}

/* ---- a hoisted group's inner products in one launch: rotation k's sum_j ext_j[perm_k] *
   key_kj for up to KS_MANY rotations. A thread runs every rotation of its (row, column), so
   the group's gathers from one ext row land within the few rows a wave of blocks spans and
   hit L2: ext comes from memory once per group instead of once per rotation. The rotations'
   pointers are plain arguments (unused ones null), so the launch needs no descriptor upload
   and is capturable in a CUDA graph. */
#define KS_MANY 8
#define KS_MANY_ARGS(T, name) T name##0, T name##1, T name##2, T name##3, T name##4, T name##5, \
                              T name##6, T name##7
#define KS_MANY_LIST(name) {name##0, name##1, name##2, name##3, name##4, name##5, name##6, name##7}
template <typename TE>
__global__ void ks_inner_many(const TE* ext, KS_MANY_ARGS(const u32*, kb), KS_MANY_ARGS(const u32*, ka),
                              KS_MANY_ARGS(const int*, pm), KS_MANY_ARGS(u32*, out), int count,
                              const u64* qs, const u64* mus, int digits, int rows, int logn,
                              long long ext_dstride, long long key_dstride) {
    long long r;
    int n;
    if (!thread_row_col(rows, logn, r, n)) return;
    const u32* kbs[KS_MANY] = KS_MANY_LIST(kb);
    const u32* kas[KS_MANY] = KS_MANY_LIST(ka);
    const int* pms[KS_MANY] = KS_MANY_LIST(pm);
    u32* outs[KS_MANY] = KS_MANY_LIST(out);
    const u64 q = qs[r], mu = mus[r];
    const size_t at = ((size_t)r << logn) + n, poly = (size_t)rows << logn;
    /* unrolled, so every kbs[k] is a constant index: the arrays stay kernel parameters
       (a runtime index puts them in local memory, 256 bytes a thread: 3.4x slower) */
#pragma unroll
    for (int k = 0; k < KS_MANY; ++k) {
        if (k >= count) break;
        u32 s0, s1;
        digit_sums(ext + ((size_t)r << logn) + (pms[k] ? pms[k][n] : n), kbs[k] + at, kas[k] + at,
                   digits, ext_dstride, key_dstride, q, mu, s0, s1);
        outs[k][at] = s0;
        outs[k][poly + at] = s1;
    }
}

/* ---- one key switch's ModUp NTT shared-memory pass fused with its inner product (rings with
   a register pass): a block takes row r of the extended basis and output chunk c, and for
   each digit j runs the smem stages of mid's row (j, r) (modup_ntt_top's output) and
   accumulates the result times the key's (b_j, a_j) in registers. The converted digits (the
   largest array of a key switch, written by ntt_fwd_smem and read back by ks_inner) never
   return to device memory. A digit's own rows are d's (d[..., perm] with PERM: a lone
   rotation switches the rotated c1, see kernels.modup_inner). Same sums as ntt_fwd_smem then
   ks_inner, fully reduced. Converted digits go two at a time through one lockstep pass
   (fwd_chunks, R = 2: 0.137 -> 0.126 ms at bench-n16-l20 against one at a time, two A/B
   pairs on one H200; Harvey's lazy butterflies for primes below 2^30 on top measured the
   same 0.126: the pass waits on latency, not on the three instructions a butterfly they save).
   Two blocks of 512 threads a multiprocessor need <= 64 registers a thread: without the
   bound ptxas took 168 (one block), and 64-bit accumulators under it spilled 288 bytes a
   thread. (Prefetching the digit's key lines, or the next digit's mid chunk, to L2, and
   loading the keys before the NTT, all measured the same 0.135-0.139 ms, as did three
   blocks an SM at 40 registers: the pass's own stages bound it, ntt_fwd_smem alone took
   0.084.) */
__device__ __forceinline__ void add_key_products(u32 (&acc0)[8], u32 (&acc1)[8], const u32 (&v)[8],
                                                 const u32* kb, const u32* ka, u32 q, u32 qn) {
    u32 b[8], a[8];
    load8(kb, b);
    load8(ka, a);
    /* v b 2^-32 mod q per product (mont_mul with b as the "Montgomery" operand): 32-bit
       sums, so the accumulators take 16 registers where 64-bit ones took 32 and spilled */
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        acc0[k] = add_q(acc0[k], mont_mul(v[k], b[k], q, qn), q);
        acc1[k] = add_q(acc1[k], mont_mul(v[k], a[k], q, qn), q);
    }
}
/* P_INTT: the P rows (row_limb -1) leave after the INTT's shared-memory pass, the form ModDown's
   next kernel reads (moddown_ntt_top): the sums are in registers at the positions (8 j + k)
   of that pass's first round, so it runs here instead of as a launch that reads them back */
template <typename TD, int LOGC, bool PERM, bool P_INTT>
__global__ void __launch_bounds__(1 << (LOGC - 3), 2)
ks_modup_inner(const u32* mid, const TD* d_ntt, const u32* kb, const u32* ka, const int* perm,
               const int* digit_start, const int* digit_len, const int* row_limb, const int* row_prime,
               const u32* psi, const u32* ipsi, const u32* qns, const u32* qs, const u32* r2m, u32* out,
               int digits, int rows, int logn, long long key_dstride) {
    extern __shared__ u32 s[];
    const int chunks = 1 << (logn - LOGC);
    const int r = blockIdx.x / chunks, c = blockIdx.x - r * chunks;
    const int cbase = c << LOGC;
    const int n0 = cbase + 8 * threadIdx.x;              /* this thread's outputs n0 .. n0 + 7 */
    const int limb = row_limb[r];
    RowPart x;
    x.p = row_prime[r];
    x.q = qs[x.p];
    x.qn = qns[x.p];
    x.w = psi + ((size_t)x.p << logn);
    const u32 q = x.q, qn = x.qn;
    const size_t kat = ((size_t)r << logn) + n0;
    u32 acc[2][8] = {{0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0}};   /* the b and a sums */
    /* digit j's values times its key rows, into the sums */
    auto add_digit = [&](const u32 (&v)[8], int j) {
        const size_t at = (size_t)j * key_dstride + kat;
        add_key_products(acc[0], acc[1], v, kb + at, ka + at, q, qn);
    };
    int waiting = -1;                                    /* a converted digit without its pair yet */
#pragma unroll 1
    for (int j = 0; j < digits; ++j) {
        if (limb >= digit_start[j] && limb < digit_start[j] + digit_len[j]) {
            u32 v[8];
            const TD* row = d_ntt + ((size_t)limb << logn);
            if (PERM) {
                load8((const u32*)perm + n0, v);
                gather8(row, v);
            } else {
                load8(row + n0, v);
            }
            add_digit(v, j);
        } else if (waiting < 0) {
            waiting = j;
        } else {
            __syncthreads();             /* the last pass's readers are done with s */
            const size_t off[2] = {((size_t)(waiting * rows + r) << logn) + cbase,
                                   ((size_t)(j * rows + r) << logn) + cbase};
            u32 v[2][8];
            fwd_chunks<u32, LOGC, false, 2>(s, mid, off, x, cbase, logn, v);
            add_digit(v[0], waiting);
            add_digit(v[1], j);
            waiting = -1;
        }
    }
    if (waiting >= 0) {                  /* an odd count of converted digits: the last alone */
        __syncthreads();
        x.off = ((size_t)(waiting * rows + r) << logn) + cbase;
        u32 v[8];
        fwd_chunk<u32, LOGC, false>(s, mid, x, cbase, logn, v);
        add_digit(v, waiting);
    }
    /* times 2^64 mod q (r2m), reduced by 2^32 once more: the sum itself, fully reduced */
    const u32 fix = r2m[r];
#pragma unroll
    for (int k = 0; k < 8; ++k) { acc[0][k] = mont_mul(acc[0][k], fix, q, qn); acc[1][k] = mont_mul(acc[1][k], fix, q, qn); }
    const size_t poly = (size_t)rows << logn;
    if (P_INTT && limb < 0) {
        __syncthreads();                 /* the last pass's readers are done with s */
        x.w = ipsi + ((size_t)x.p << logn);
        inv_chunks<LOGC, 2>(s, x, cbase, logn, acc);
        const size_t at = ((size_t)r << logn) + cbase + inv_last_pos<LOGC>(threadIdx.x);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            out[at + (k << (LOGC - 3))] = acc[0][k];
            out[poly + at + (k << (LOGC - 3))] = acc[1][k];
        }
        return;
    }
    store8(out + kat, acc[0]);
    store8(out + poly + kat, acc[1]);
}

/* ---- a product's degree-2 terms, d_k = sum_{i+j=k} a_i b_j mod q, as 32-bit words: one
   launch for two (2, limbs, N) ciphertexts (32-bit device words, or 64-bit host ones) */
template <typename TC>
__global__ void tensor_product(const TC* a, const TC* b, u32* d, const u64* qs, const u64* mus, int limbs,
                               int logn) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long poly = (long long)limbs << logn;
    if (tid >= poly) return;
    const int r = (int)(tid >> logn);
    const u64 q = qs[r], mu = mus[r];
    const u64 a0 = a[tid], a1 = a[poly + tid], b0 = b[tid], b1 = b[poly + tid];
    d[tid] = (u32)barrett(mul32(a0, b0), q, mu);
    d[poly + tid] = (u32)barrett(barrett(mul32(a0, b1), q, mu) + barrett(mul32(a1, b0), q, mu), q, mu);
    d[2 * poly + tid] = (u32)barrett(mul32(a1, b1), q, mu);
}

/* ---- moddown_rescale's top rows of every polynomial in one launch: out_c = a_c + b_c w mod q
   (acc_T + P d_T), a_c from word a_off of a's polynomial c (a_poly words apart), b_c rows N
   apart (null: a_c copied) */
extern "C" __global__ void scaled_add_rows(const void* a, long long a_off, long long a_poly, int a_wide,
                                           const void* b0,
                                           const void* b1, int b_wide, const u64* ws, const u64* qs,
                                           const u64* mus, u32* out, int rows, int logn, int polys) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long per = (long long)rows << logn;
    if (tid >= per * polys) return;
    const int c = (int)(tid / per);
    const long long i = tid - c * per;
    const int r = (int)(i >> logn);
    u32 x = word_at(a, a_off + c * a_poly + i, a_wide);
    const void* b = c == 0 ? b0 : (c == 1 ? b1 : 0);
    if (b) {
        const u64 q = qs[r];
        const u64 v = barrett(mul32(word_at(b, i, b_wide), ws[r]), q, mus[r]) + x;
        x = (u32)(v >= q ? v - q : v);
    }
    out[tid] = x;
}

/* ---- sum_t ct_t * pt_t over the first `limbs` rows of both polynomials, one pass:
   a linear transform's inner sums and the bootstrap's DFT stages. A compact plaintext
   (run 2^run_log) keeps one value per run of equal NTT values. */
template <typename TC, typename TP>
__global__ void mul_plain_sum(const TC* const* cts, const TP* const* pts, const int* run_log,
                              const long long* ct_poly_stride, int terms, u32* out, const u64* qs,
                              const u64* mus, int limbs, int logn) {
    const int N = 1 << logn;
    long long r;
    int n;
    if (!thread_row_col(limbs, logn, r, n)) return;
    u64 q = qs[r], mu = mus[r];
    u64 acc0 = 0, acc1 = 0;
    int pending = 0;
    size_t off = (size_t)r * N + n;
    for (int t = 0; t < terms; ++t) {
        int rl = run_log[t];
        u64 w = (u64)pts[t][((size_t)r << (logn - rl)) + (n >> rl)];
        const TC* c = cts[t];
        acc0 += mul32(c[off], w);
        acc1 += mul32(c[(size_t)ct_poly_stride[t] + off], w);
        if (++pending == 4) { acc0 = barrett(acc0, q, mu); acc1 = barrett(acc1, q, mu); pending = 1; }
    }
    out[off] = (u32)barrett(acc0, q, mu);
    out[(size_t)limbs * N + off] = (u32)barrett(acc1, q, mu);
}

/* ---- fast basis conversion A -> B, one thread per (batch, coefficient) ------ */
/* sum_i t[i] * h[i] mod q over i < len <= A. A is a compile-time bound so the loop
   unrolls and t stays in registers (a runtime-sized array lives in local memory); a
   reduction after every third product from the fourth on keeps the sum below 2^64
   (a reduced value plus three products < 2^31 + 3 * 2^62), and reducing a value
   already below q changes nothing, so the fixed schedule gives the exact residue */
template <int A>
__device__ __forceinline__ u64 dot_mod(const u64* t, const u64* h, int len, u64 q, u64 mu) {
    u64 acc = 0;
#pragma unroll
    for (int i = 0; i < A; ++i) {
        if (i < len) acc += mul32(t[i], h[i]);
        if (i >= 3 && i % 3 == 0 && i + 1 < A) acc = barrett(acc, q, mu);
    }
    return barrett(acc, q, mu);
}

/* ---- fast basis conversion A -> B (BasisConverter.convert), A >= |A| */
template <int A>
__global__ void basis_convert(const u64* x, u64* y, const u64* src_q, const u64* src_mu,
                              const u64* hat_inv, const u64* dst_q, const u64* dst_mu,
                              const u64* hat_mod, int n_a, int n_b, int logn, long long batch) {
    const int N = 1 << logn;
    long long b;
    int n;
    if (!thread_row_col(batch, logn, b, n)) return;
    u64 t[A];
    const u64* xb = x + (size_t)b * n_a * N + n;
#pragma unroll
    for (int i = 0; i < A; ++i)
        t[i] = i < n_a ? barrett(mul32(xb[(size_t)i * N], hat_inv[i]), src_q[i], src_mu[i]) : 0;
    u64* yb = y + (size_t)b * n_b * N + n;
    for (int j = 0; j < n_b; ++j)
        yb[(size_t)j * N] = dot_mod<A>(t, hat_mod + (size_t)j * n_a, n_a, dst_q[j], dst_mu[j]);
}

/* sum_i t[i] * h[i] mod q over i < A, h in Montgomery form (h 2^32 mod q), t[i] below the
   source prime q_i, h zero past the source's length (every caller loads it so). Terms whose q_i
   sum to at most 2^32 sum below 2^32 q in 64 bits, so one Montgomery reduction (redc) serves
   them all: ONE where the host found that of the source (kernels._one_reduction: a ModUp
   digit of 25-bit primes takes one reduction for its six products), else one per pair
   (q_i < 2^31); modup_ntt_top 0.096 -> 0.093 ms at bench-n16-l20 (ncu: 66 % of the SM's
   compute, issue-bound). The 64-bit Barrett reductions before these made ModUp's conversion
   ALU-bound. Every product is taken, the zero ones too: a guard on the source's length (a
   runtime value) compiled to two selects of the 64-bit sum after each multiply-add, three
   instructions a term where one does. Exact: the residue is the reference's. Callers branch
   on ONE outside their loops, so neither form is predicated into the other. */
template <int A, bool ONE>
__device__ __forceinline__ u32 dot_mont(const u32* t, const u32* h, u32 q, u32 qinv_neg) {
    if (ONE) {
        u64 x = 0;
#pragma unroll
        for (int i = 0; i < A; ++i) x += (u64)t[i] * h[i];
        return redc(x, q, qinv_neg);
    }
    u32 acc = 0;
#pragma unroll
    for (int i = 0; i < A; i += 2) {
        u64 x = (u64)t[i] * h[i];
        if (i + 1 < A) x += (u64)t[i + 1] * h[i + 1];
        acc = add_q(acc, redc(x, q, qinv_neg), q);
    }
    return acc;
}

/* ---- ModUp of every digit in one pass: rows of the digit copy the NTT-form input,
   the others get the fast basis conversion of the digit (then one NTT over those rows
   only); 32-bit words out, the largest array of a key switch. A >= the longest digit;
   hat_mont rows are zero past a digit's length. A block covers MODUP_COLS x blockDim
   coefficients (columns blockDim apart, so every load and store is coalesced) of
   row_chunk rows of one digit: a row's constants are loaded once for MODUP_COLS
   coefficients. */
#define MODUP_COLS 4
template <int A>
__global__ void modup_convert(const u32* coeff, const void* d_ntt, u32* out, const int* digit_start,
                              const int* digit_len, const int* digit_one, const u32* hat_inv, const u32* hat_inv_sh,
                              const u32* src_q, const u32* hat_mont, const u32* row_q,
                              const u32* row_qinv_neg, const int* row_limb, int rows, int maxa,
                              int logn, int digits, int row_chunk, int d_wide) {
    const int N = 1 << logn, bd = blockDim.x;
    const int per_row = N / (bd * MODUP_COLS);
    const int chunks = (rows + row_chunk - 1) / row_chunk;
    const long long jc = blockIdx.x / per_row;
    const int n0 = (int)(blockIdx.x - jc * per_row) * bd * MODUP_COLS + threadIdx.x;
    const int j = (int)(jc / chunks);
    if (j >= digits) return;
    const int r0 = (int)(jc - (long long)j * chunks) * row_chunk;
    const int r1 = min(rows, r0 + row_chunk);
    const int s = digit_start[j], len = digit_len[j];
    const bool one = digit_one[j];
    u32 t[MODUP_COLS][A];
#pragma unroll
    for (int i = 0; i < A; ++i) {
        const int c = j * maxa + i;
        const u32 w = i < len ? hat_inv[c] : 0, ws = i < len ? hat_inv_sh[c] : 0, qi = i < len ? src_q[c] : 1;
        const u32* x = coeff + (size_t)(s + i) * N + n0;
#pragma unroll
        for (int k = 0; k < MODUP_COLS; ++k) t[k][i] = i < len ? shoup_mul(x[k * bd], w, ws, qi) : 0;
    }
    for (int r = r0; r < r1; ++r) {
        const int limb = row_limb[r];
        u32* o = out + ((size_t)j * rows + r) * N + n0;
        if (limb >= s && limb < s + len) {
            const size_t x = (size_t)limb * N + n0;
#pragma unroll
            for (int k = 0; k < MODUP_COLS; ++k) o[k * bd] = word_at(d_ntt, x + k * bd, d_wide);
        } else {
            const u32* hp = hat_mont + ((size_t)j * rows + r) * maxa;
            u32 h[A];
#pragma unroll
            for (int i = 0; i < A; ++i) h[i] = i < len ? hp[i] : 0;
            const u32 q = row_q[r], qn = row_qinv_neg[r];
            if (one) {
#pragma unroll
                for (int k = 0; k < MODUP_COLS; ++k) o[k * bd] = dot_mont<A, true>(t[k], h, q, qn);
            } else {
#pragma unroll
                for (int k = 0; k < MODUP_COLS; ++k) o[k * bd] = dot_mont<A, false>(t[k], h, q, qn);
            }
        }
    }
}

/* ---- ModUp's conversion fused with its NTT's register pass (rings with N > 2^SMEM_LOG): a
   block takes one digit j and MODUP_TOP_COLS adjacent columns k of the register pass, whose
   CH = 2^LOGCH positions i C + k are the problem one thread solves. The digit's scaled
   residues t = [x (Q_j/q)^-1]_q of those positions go to shared memory once; then each of
   the block's row slots (a warp over the columns) takes rows r0 .. r1 in turn: the dot
   product of t with row r's constants gives the converted value at its column's CH
   positions, the register stages run on them, one store. The converted rows are never
   written in coefficient form and read back (modup_convert then ntt_fwd_top). The digit's
   own rows copy the NTT-form input. Same values as modup_convert and ntt_fwd_top. The block
   also finishes the digit's INTT (its register stages, on the shared-memory pass's output),
   as moddown_ntt_top does for P's rows, N^-1 folded into hat_inv: no separate register pass
   over the whole input and no launch for it. (Measured slower once, ModUp at n16-boot's top
   level 0.43 against 0.37 ms, while nvcc put the stage functions' columns in local memory.) */
#define MODUP_TOP_COLS 32
/* a fused conversion kernel's block: source src (a ModUp digit, a ModDown polynomial), row
   chunk rc of `rows` rows, register-pass columns k0 .. k0 + MODUP_TOP_COLS - 1 (lane: this
   thread's); blocks run columns fastest, then chunks, then sources */
struct FusedBlock { int src, rc, k0, lane; };
__device__ __forceinline__ FusedBlock fused_block(int logc, int rows, int row_chunk) {
    const int col_blocks = (1 << logc) / MODUP_TOP_COLS, chunks = (rows + row_chunk - 1) / row_chunk;
    FusedBlock b;
    b.src = blockIdx.x / (col_blocks * chunks);
    const int rest = blockIdx.x - b.src * col_blocks * chunks;
    b.rc = rest / col_blocks;
    b.k0 = (rest - b.rc * col_blocks) * MODUP_TOP_COLS;
    b.lane = threadIdx.x % MODUP_TOP_COLS;
    return b;
}
/* modup_ntt_top's staged residues, digit limb a at register-pass position i and column lane:
   [CH][A4][MODUP_TOP_COLS][4] words (A4 = ceil(A / 4), zero past the digit). A thread reads a
   position's residues as A4 16-byte loads, where one load a residue was a fifth of the
   conversion's instructions (issue-bound, ncu): modup_ntt_top 0.090-0.092 -> 0.083-0.084 ms at
   bench-n16-l20, two A/B pairs on one H200. A warp's load covers 512 consecutive bytes, so no
   bank is hit twice in a wavefront. (The same layout in moddown_ntt_top made ptxas keep a
   column's loads in flight at 167 registers, or spill 368 bytes under a 64-register bound.) */
template <int A> struct Staged {
    static constexpr int A4 = (A + 3) / 4, WORDS = 4 * A4;
    static __device__ __forceinline__ int at(int a, int i, int lane) {
        return ((i * A4 + (a >> 2)) * MODUP_TOP_COLS + lane) * 4 + (a & 3);
    }
    static __device__ __forceinline__ void load(u32 (&t)[WORDS], const u32* ts, int i, int lane) {
#pragma unroll
        for (int a4 = 0; a4 < A4; ++a4) {
            const uint4 w = *(const uint4*)(ts + at(4 * a4, i, lane));
            t[4 * a4] = w.x; t[4 * a4 + 1] = w.y; t[4 * a4 + 2] = w.z; t[4 * a4 + 3] = w.w;
        }
    }
};
/* a fused conversion's values at one register-pass column: v[i] = dot_mont of the staged
   residues (from ts, this thread's lane) with h */
template <int A, int CH, bool ONE>
__device__ __forceinline__ void convert_column(u32 (&v)[CH], const u32* ts, int lane, const u32* h, u32 q,
                                               u32 qn) {
#pragma unroll
    for (int i = 0; i < CH; ++i) {
        u32 t[Staged<A>::WORDS];
        Staged<A>::load(t, ts, i, lane);
        v[i] = dot_mont<A, ONE>(t, h, q, qn);
    }
}
template <int A, int LOGCH>
__global__ void modup_ntt_top(const u32* coeff, const void* d_ntt, u32* out, const int* digit_start,
                              const int* digit_len, const int* digit_one, const u32* hat_inv, const u32* hat_inv_sh,
                              const u32* src_q, const u32* hat_mont, const u32* row_q,
                              const u32* row_qinv_neg, const int* row_limb, const int* row_prime,
                              const u32* psi, const u32* ipsi, const u32* qns, int rows, int maxa, int logn,
                              int row_chunk, int d_wide, int copy_own) {
    extern __shared__ u32 ts[];                 /* Staged<A> */
    constexpr int CH = 1 << LOGCH, W = MODUP_TOP_COLS;
    constexpr int logc = SMEM_LOG;
    const int N = 1 << logn;
    const FusedBlock fb = fused_block(logc, rows, row_chunk);
    const int j = fb.src, rc = fb.rc, k0 = fb.k0, lane = fb.lane, k = k0 + lane;
    const int s = digit_start[j], len = digit_len[j];
    const bool one = digit_one[j];
    /* the INTT's register stages of digit limb a at this block's columns (coeff holds its
       shared-memory pass), then t = x N^-1 (Q_j/q)^-1, one Shoup product (hat_inv) */
    for (int e = threadIdx.x; e < Staged<A>::WORDS * W; e += blockDim.x) {
        const int a = e / W, col = e % W, c = j * maxa + a;
        u32 v[CH];
        if (a < len) {
            const u32 q = src_q[c];
            const u32* x = coeff + (size_t)(s + a) * N + k0 + col;
#pragma unroll
            for (int i = 0; i < CH; ++i) v[i] = x[(size_t)i << logc];
            inv_top_stages<LOGCH>(v, ipsi + ((size_t)(s + a) << logn), q, qns[s + a]);
#pragma unroll
            for (int i = 0; i < CH; ++i) v[i] = shoup_mul(v[i], hat_inv[c], hat_inv_sh[c], q);
        } else {
#pragma unroll
            for (int i = 0; i < CH; ++i) v[i] = 0;
        }
#pragma unroll
        for (int i = 0; i < CH; ++i) ts[Staged<A>::at(a, i, col)] = v[i];
    }
    __syncthreads();
    const int r1 = min(rows, (rc + 1) * row_chunk);
    for (int r = rc * row_chunk + (int)threadIdx.x / W; r < r1; r += blockDim.x / W) {
        const int limb = row_limb[r];
        u32* o = out + ((size_t)j * rows + r) * N + k;
        if (limb >= s && limb < s + len) {
            if (!copy_own) continue;            /* ks_modup_inner reads them from d itself */
            const size_t x = (size_t)limb * N + k;
#pragma unroll
            for (int i = 0; i < CH; ++i) o[(size_t)i << logc] = word_at(d_ntt, x + ((size_t)i << logc), d_wide);
            continue;
        }
        const u32* hp = hat_mont + ((size_t)j * rows + r) * maxa;
        u32 h[A];
#pragma unroll
        for (int a = 0; a < A; ++a) h[a] = a < len ? hp[a] : 0;
        const u32 q = row_q[r], qn = row_qinv_neg[r];
        u32 v[CH];
        if (one)
            convert_column<A, CH, true>(v, ts, lane, h, q, qn);
        else
            convert_column<A, CH, false>(v, ts, lane, h, q, qn);
        fwd_top_stages<LOGCH>(v, psi + ((size_t)row_prime[r] << logn), q, qn);
#pragma unroll
        for (int i = 0; i < CH; ++i) o[(size_t)i << logc] = v[i];
    }
}

/* ---- ModDown's conversion P -> Q_l with the centring folded in (keyswitch._centre):
   t_i = [x_i (P/p_i)^-1]_{p_i}; v = round(sum_i t_i / p_i) in the reference's float64
   order; out_j = (sum_i t_i (P/p_i) - v P) mod q_j. A >= n_p. */
template <int A>
__global__ void moddown_convert(const u64* pc, u32* out, const u64* p_q, const u64* p_mu,
                                const u64* hat_inv, const u64* q_q, const u64* q_mu,
                                const u64* hat_mod, const u64* neg_p, int n_p, int limbs,
                                int logn, long long polys) {
    const int N = 1 << logn;
    long long c;
    int n;
    if (!thread_row_col(polys, logn, c, n)) return;
    u64 t[A];
    double frac = 0.0;
    const u64* x = pc + (size_t)c * n_p * N + n;
#pragma unroll
    for (int i = 0; i < A; ++i) {
        t[i] = 0;
        if (i < n_p) {
            t[i] = barrett(mul32(x[(size_t)i * N], hat_inv[i]), p_q[i], p_mu[i]);
            double term = __ddiv_rn((double)t[i], (double)p_q[i]);
            frac = i == 0 ? term : __dadd_rn(frac, term);
        }
    }
    int v = (int)floor(__dadd_rn(frac, 0.5));
    u32* o = out + (size_t)c * limbs * N + n;
    for (int j = 0; j < limbs; ++j) {
        u64 q = q_q[j];
        u64 s = dot_mod<A>(t, hat_mod + (size_t)j * n_p, n_p, q, q_mu[j]) + neg_p[(size_t)j * (n_p + 1) + v];
        o[(size_t)j * N] = (u32)(s >= q ? s - q : s);
    }
}

/* ---- ModDown's conversion P -> Q_l fused the same way (see modup_ntt_top): a block takes one
   polynomial c and MODUP_TOP_COLS columns; one warp per divisor prime finishes that row's
   INTT (the INTT's shared-memory pass only: P's rows in pint at acc's row positions,
   poly_rows rows a polynomial; the last n_top, a rescale's primes T, in tint, n_top rows a
   polynomial) and scales by N^-1 (D/p_i)^-1, into shared memory: t_i; then the centring's v
   per position (moddown_convert's float64 sum, same order); then each row slot takes Q rows
   in turn: (sum_i t_i (D/p_i) - v D) mod q_r at its column's positions, the NTT's register
   stages, one store. D = P or P q_T (n_p primes in all), A >= n_p. Same values as
   intt_top, moddown_convert and ntt_fwd_top. */
template <int A, int LOGCH>
__global__ void moddown_ntt_top(const u32* pint, const u32* tint, u32* out, const int* p_prime,
                                const u32* fold, const u32* fold_sh, const u32* hat_mont,
                                const u64* neg_p, const u32* psi, const u32* ipsi, const u32* qs,
                                const u32* qns, int n_p, int n_top, int limbs, int poly_rows,
                                int logn, int row_chunk) {
    extern __shared__ u32 ts[];           /* [n_p][CH][W] residues t, then [CH][W] centring v */
    constexpr int CH = 1 << LOGCH, W = MODUP_TOP_COLS;
    constexpr int logc = SMEM_LOG;
    const int N = 1 << logn;
    const FusedBlock fb = fused_block(logc, limbs, row_chunk);
    const int c = fb.src, rc = fb.rc, k0 = fb.k0, lane = fb.lane, k = k0 + lane;
    int* vs = (int*)(ts + n_p * CH * W);
    for (int e = threadIdx.x; e < n_p * W; e += blockDim.x) {
        const int a = e / W, p = p_prime[a];
        const u32 q = qs[p], qn = qns[p];
        const int at = a - (n_p - n_top);
        const u32* x = (at < 0 ? pint + ((size_t)c * poly_rows + a) * N
                                : tint + ((size_t)c * n_top + at) * N) + k0 + e % W;
        u32 v[CH];
#pragma unroll
        for (int i = 0; i < CH; ++i) v[i] = x[(size_t)i << logc];
        inv_top_stages<LOGCH>(v, ipsi + ((size_t)p << logn), q, qn);
#pragma unroll
        for (int i = 0; i < CH; ++i) ts[(a * CH + i) * W + e % W] = shoup_mul(v[i], fold[a], fold_sh[a], q);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < CH * W; e += blockDim.x) {
        double frac = 0.0;
        for (int a = 0; a < n_p; ++a) {
            const double term = __ddiv_rn((double)ts[a * CH * W + e], (double)qs[p_prime[a]]);
            frac = a == 0 ? term : __dadd_rn(frac, term);
        }
        vs[e] = (int)floor(__dadd_rn(frac, 0.5));
    }
    __syncthreads();
    const int r1 = min(limbs, (rc + 1) * row_chunk);
    for (int r = rc * row_chunk + (int)threadIdx.x / W; r < r1; r += blockDim.x / W) {
        const u32 q = qs[r], qn = qns[r];              /* Q row r: the ring's prime r */
        u32 h[A];
#pragma unroll
        for (int a = 0; a < A; ++a) h[a] = a < n_p ? hat_mont[(size_t)r * n_p + a] : 0;
        const u64* fix = neg_p + (size_t)r * (n_p + 1);
        u32 v[CH];
#pragma unroll
        for (int i = 0; i < CH; ++i) {
            u32 t[A];
#pragma unroll
            for (int a = 0; a < A; ++a) t[a] = a < n_p ? ts[(a * CH + i) * W + lane] : 0;
            /* one reduction a pair: the divisor P is of the largest primes below 2^31 */
            v[i] = add_q(dot_mont<A, false>(t, h, q, qn), (u32)fix[vs[i * W + lane]], q);
        }
        fwd_top_stages<LOGCH>(v, psi + ((size_t)r << logn), q, qn);
        u32* o = out + ((size_t)c * limbs + r) * N + k;
#pragma unroll
        for (int i = 0; i < CH; ++i) o[(size_t)i << logc] = v[i];
    }
}

/* ---- rescale: centred CRT lift of the dropped primes, reduced mod each kept prime (rings
   too small for a register pass: ntt_fwd_top_lift does this inside the NTT otherwise) */
extern "C" __global__ void rescale_lift(const u64* top, u32* res, const u32* keep_q, const u64* keep_mu,
                                        int k, u64 q0, u64 q1, u64 inv01, u64 mu1, int keep,
                                        int logn, long long polys) {
    const int N = 1 << logn;
    long long c;
    int n;
    if (!thread_row_col(polys, logn, c, n)) return;
    u64 mag;
    const bool neg = centred_lift(top + (size_t)c * k * N + n, N, k, q0, q1, inv01, mu1, mag);
    u32* rp = res + (size_t)c * keep * N + n;
    for (int i = 0; i < keep; ++i) rp[(size_t)i * N] = signed_residue(mag, neg, keep_q[i], keep_mu[i]);
}
"""

# The result takes the word of the operand it updates (A: a ciphertext's, 32 bits on the device
# and 64 in the reference's host arrays), so an op keeps its ciphertext's layout; B: any
# unsigned word, so a compact plaintext's uint32 rows need no widened copy.
_ELEMENTWISE = {
    "add_mod": ("A a, B b, uint64 q", "A out",
                "unsigned long long s = (unsigned long long)a + b; out = s >= q ? s - q : s"),
    "mul_mod": ("A a, B b, uint64 q, uint64 mu", "A out", "out = barrett_(mul32_(a, b), q, mu)"),
    "sub_mod": ("A a, B b, uint64 q", "A out",
                "out = a >= b ? (unsigned long long)a - b : (unsigned long long)a + q - b"),
    # a * b + c: a public-key encryption's halves (v pk.b + e0, v pk.a + e1) in one pass
    "mul_add": ("B a, uint64 b, A c, uint64 q, uint64 mu", "A out",
                "unsigned long long s = barrett_(mul32_(a, b), q, mu) + c; out = s >= q ? s - q : s"),
    # a ciphertext plus a plaintext or constant b (broadcast over both polynomials) on its
    # first polynomial only: flat indices below `first` are that polynomial's
    "add_first": ("A a, B b, uint64 q, int64 first, int32 negate", "A out",
                  "if (i < first) { unsigned long long v = negate ? (b ? q - (unsigned long long)b : 0) : b;"
                  " unsigned long long s = a + v; out = s >= q ? s - q : s; } else { out = a; }"),
}
_PREAMBLE = r"""
__device__ __forceinline__ unsigned long long mul32_(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(unsigned int)a * (unsigned int)b;   /* operands < 2^32 */
}
__device__ __forceinline__ unsigned long long barrett_(unsigned long long x, unsigned long long q,
                                                       unsigned long long mu) {
    unsigned long long r = x - __umul64hi(x, mu) * q;
    return r >= q ? r - q : r;
}
"""

# ChaCha20 (RFC 8439): one thread per 64-byte block; grid over (row, block) with a
# per-row nonce. The numpy reference is aegis_hpc.ckks.sampling.chacha20_blocks.
_SRC += r"""
__device__ __forceinline__ u32 rotl32(u32 x, int k) { return (x << k) | (x >> (32 - k)); }
#define QR(a, b, c, d) a += b; d ^= a; d = rotl32(d, 16); c += d; b ^= c; b = rotl32(b, 12); \
                       a += b; d ^= a; d = rotl32(d, 8);  c += d; b ^= c; b = rotl32(b, 7);
/* block `counter` of the ChaCha20 stream of (key, nonce n0 n1 n2): 16 words into o */
__device__ __forceinline__ void chacha20_block(u32* o, const u32* key, u32 n0, u32 n1, u32 n2, u32 counter) {
    u32 s[16], x[16];
    s[0] = 0x61707865u; s[1] = 0x3320646eu; s[2] = 0x79622d32u; s[3] = 0x6b206574u;
#pragma unroll
    for (int i = 0; i < 8; ++i) s[4 + i] = key[i];
    s[12] = counter; s[13] = n0; s[14] = n1; s[15] = n2;
#pragma unroll
    for (int i = 0; i < 16; ++i) x[i] = s[i];
    for (int i = 0; i < 10; ++i) {
        QR(x[0], x[4], x[8],  x[12]) QR(x[1], x[5], x[9],  x[13])
        QR(x[2], x[6], x[10], x[14]) QR(x[3], x[7], x[11], x[15])
        QR(x[0], x[5], x[10], x[15]) QR(x[1], x[6], x[11], x[12])
        QR(x[2], x[7], x[8],  x[13]) QR(x[3], x[4], x[9],  x[14])
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) o[i] = x[i] + s[i];
}
extern "C" __global__ void chacha20_rows(u32* out, const u32* key, const u32* nonces,
                                         u32 counter0, long long blocks, long long rows) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= rows * blocks) return;
    long long r = tid / blocks, b = tid - r * blocks;
    u32 x[16];
    chacha20_block(x, key, nonces[3 * r], nonces[3 * r + 1], nonces[3 * r + 2], counter0 + (u32)b);
    u32* o = out + (size_t)r * blocks * 16 + (size_t)b * 16;
    for (int i = 0; i < 16; ++i) o[i] = x[i];
}

/* A public-key encryption's small polynomials, three SmallSampler draws (nonce = (label0,
   label1, draw0 + d)) made and reduced in one pass: out rows [0, limbs) the ternary v,
   [limbs, 2 limbs) the centred-binomial e0 plus the message's coefficients msg (null:
   none), [2 limbs, 3 limbs) e1, as residues mod each prime. One thread makes 16
   coefficients from whole blocks (word i of the draw: block i / 16), so the launch
   replaces the samplers' dozen cupy operations and the mask compaction that synchronised
   the device; the numpy reference is SmallSampler.ternary / centered_binomial. */
extern "C" __global__ void encryption_noise(u32* out, const u32* key, u32 label0, u32 label1, u32 draw0,
                                            const i64* msg, const u64* qs, const u64* mus, int limbs,
                                            int logn, int eta, u32 reject) {
    long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int N = 1 << logn, groups = N >> 4;
    if (g >= groups) return;
    u32 w[16], w2[16];
    int v[16], e0[16], e1[16];
    chacha20_block(w, key, label0, label1, draw0, (u32)g);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        u32 x = w[i];
        for (u32 lap = 1; x == reject; ++lap) {      /* word i + lap N: about N 2^-32 per draw */
            chacha20_block(w2, key, label0, label1, draw0, (u32)g + lap * groups);
            x = w2[i];
        }
        v[i] = (int)(x % 3u) - 1;
    }
    const u32 mask = eta >= 32 ? 0xFFFFFFFFu : (1u << eta) - 1;
    chacha20_block(w, key, label0, label1, draw0 + 1, (u32)g);
    chacha20_block(w2, key, label0, label1, draw0 + 1, (u32)(g + groups));
#pragma unroll
    for (int i = 0; i < 16; ++i) e0[i] = __popc(w[i] & mask) - __popc(w2[i] & mask);
    chacha20_block(w, key, label0, label1, draw0 + 2, (u32)g);
    chacha20_block(w2, key, label0, label1, draw0 + 2, (u32)(g + groups));
#pragma unroll
    for (int i = 0; i < 16; ++i) e1[i] = __popc(w[i] & mask) - __popc(w2[i] & mask);
    const size_t col = (size_t)g << 4;
    for (int l = 0; l < limbs; ++l) {
        const u64 q = qs[l], mu = mus[l];
        const u32 q32 = (u32)q;
        u32* o0 = out + (size_t)l * N + col;
        u32* o1 = o0 + (size_t)limbs * N;
        u32* o2 = o1 + (size_t)limbs * N;
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            o0[i] = v[i] < 0 ? q32 - 1 : (u32)v[i];
            u32 e = e0[i] < 0 ? q32 + e0[i] : (u32)e0[i];      /* |e| <= eta < q */
            if (msg) {
                const i64 m = msg[col + i];                    /* |m| < 2^62 (the encoder's bound) */
                const u32 r = (u32)barrett((u64)(m < 0 ? -m : m), q, mu);
                e = add_q(e, m < 0 && r ? q32 - r : r, q32);
            }
            o1[i] = e;
            o2[i] = e1[i] < 0 ? q32 + e1[i] : (u32)e1[i];
        }
    }
}
"""

_state: dict = {}
SMEM_LOG = 12  # 4096 residues (16 KiB) per block for the in-shared-memory stages
SMEM_LOGS = (10, 11, SMEM_LOG)  # the chunk sizes compiled: min(SMEM_LOG, log N) for N = 2^10 ...
THREADS = 256
# rows of one ModUp digit per thread: the digit's scaled residues are recomputed per chunk,
# which buys digits x rows/chunk-fold parallelism for a few extra Barrett reductions
MODUP_ROW_CHUNK = 16
MODUP_COLS = 4  # coefficients per thread of the ModUp conversion (the kernel's MODUP_COLS)
# modup_ntt_top / moddown_ntt_top: register-pass columns per block (the kernels'
# MODUP_TOP_COLS, one warp wide so every load and store is a whole 128-byte line)
MODUP_TOP_COLS = 32
# their staged residues (source limbs x CH x MODUP_TOP_COLS words) stay within the 48 KiB a
# block gets without opting in; longer sources take the separate conversion kernels
MODUP_TOP_SMEM = 48 * 1024
# compiled source-limb bounds of the conversion kernels (a digit's limbs, |P|): each is
# an unrolled instantiation; a count takes the smallest bound that holds it
CONVERT_BOUNDS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32)
# the fused ones (modup_ntt_top, moddown_ntt_top) have a template per register-pass depth as
# well, so fewer bounds: a source between two of them runs masked lanes of the larger one
FUSED_BOUNDS = (2, 4, 6, 8, 12, 16)


def _cp():
    import cupy

    return cupy


_WORDS = ("u32", "u64")
MAX_TOP_LOG = 5  # the register-resident stages: N / 2^SMEM_LOG <= 32 columns (N <= 2^17)


def _templates():
    names = []
    for ti in _WORDS:
        for to in _WORDS:
            names += [f"ntt_fwd_smem<{ti}, {to}, {c}>" for c in SMEM_LOGS]
            names += [f"intt_smem<{ti}, {to}, {c}, {g}>" for c in SMEM_LOGS for g in ("false", "true")]
            names += [f"ntt_fwd_top<{ti}, {to}, {k}>" for k in range(1, MAX_TOP_LOG + 1)]
        names += [f"intt_top<{ti}, {k}>" for k in range(1, MAX_TOP_LOG + 1)]
        names += [f"ks_inner<{ti}>", f"ks_inner_many<{ti}>", f"tensor_product<{ti}>"]
        names += [f"mul_plain_sum<{tc}, {ti}>" for tc in _WORDS]
        names += [f"ks_modup_inner<{ti}, {SMEM_LOG}, {p}, {i}>"    # register-pass rings only
                  for p in ("false", "true") for i in ("false", "true")]
        names += [f"ntt_fwd_smem_scale<u32, {ti}, {c}, {pm}, {sc}>" for c in SMEM_LOGS
                  for pm, sc in (("false", "false"), ("true", "false"), ("false", "true"))]
    names += [f"ntt_fwd_top_lift<{k}>" for k in range(1, MAX_TOP_LOG + 1)]
    names += [f"{k}<{a}>" for k in ("modup_convert", "moddown_convert", "basis_convert") for a in CONVERT_BOUNDS]
    names += [f"{kern}<{a}, {k}>" for kern in ("modup_ntt_top", "moddown_ntt_top")
              for k in range(1, MAX_TOP_LOG + 1) for a in FUSED_BOUNDS if _fused_bound(a, k) == a]
    return names


def _chunk_log(log_n):
    """log2 of the NTT's shared-memory chunk at ring degree 2^log_n."""
    return min(SMEM_LOG, log_n)


def _top_log(log_n):
    """The NTT's register-resident stages (0: the whole transform fits one chunk)."""
    return log_n - _chunk_log(log_n)


def _top_smem(words, top_log):
    """Shared memory of modup_ntt_top / moddown_ntt_top for `words` staged words a position."""
    return 4 * words * (MODUP_TOP_COLS << top_log)


def _staged_words(bound):
    """modup_ntt_top's staged words a position for a digit bound: whole 16-byte loads (the
    kernel's Staged<A>::WORDS)."""
    return -(-bound // 4) * 4


@functools.lru_cache(maxsize=None)     # a key switch asks twice a call, before its first launch
def _fused_bound(limbs, top_log):
    """The compiled source bound of the fused conversion kernels for a source of `limbs` limbs
    (a ModUp digit, |P|), or None where they do not apply: no register pass (N <= 2^SMEM_LOG),
    or the staged words (ModUp's digit padded to 16-byte loads; ModDown's source and centring
    word) overflow a block's 48 KiB."""
    if top_log <= 0 or limbs > FUSED_BOUNDS[-1]:
        return None
    a = _convert_bound(limbs, "fused conversion", FUSED_BOUNDS)
    return a if _top_smem(max(_staged_words(a), a + 1), top_log) <= MODUP_TOP_SMEM else None


def _row_chunk(rows, blocks):
    """Rows per block of a fused conversion kernel launched over `blocks` (source, column)
    blocks: all of them where that fills the device (each block stages its source once),
    else split so the launch has ~512 blocks (the best of 256 .. 4096 for n16-boot's ModUp
    and ModDown on an H200); each split stages the source again."""
    chunks = max(1, min(-(-rows // 8), -(-512 // blocks)))
    return -(-rows // chunks)


def _convert_bound(count, what, bounds=CONVERT_BOUNDS):
    """The smallest compiled source-count bound of the conversion kernels that holds `count`."""
    for a in bounds:
        if count <= a:
            return a
    raise ValueError(f"{what}: {count} source limbs; the conversion kernels take at most {bounds[-1]}")


def _source():
    """The kernels' CUDA source with the host's chunk size compiled in."""
    return f"#define SMEM_LOG {SMEM_LOG}\n" + _SRC


def _module():
    mod = _state.get("module")
    if mod is None:
        cp = _cp()
        mod = cp.RawModule(code=_source(), options=("--std=c++14",), name_expressions=_templates())
        _state["module"] = mod
        _state["fn"] = {}
    return mod


def _fn(name):
    _module()
    f = _state["fn"].get(name)
    if f is None:
        f = _state["module"].get_function(name)
        _state["fn"][name] = f
    return _keeping(f, lambda args: args[2]) if _state.get("kept") is not None else f


def _keeping(launch, arrays_of):
    """launch, keeping the arrays its arguments name alive with the graph being captured."""
    cp = _cp()

    def call(*args, **kw):
        keep = _state["keep_if"]
        _state["kept"].extend(a for a in arrays_of(args) if isinstance(a, cp.ndarray) and keep(a))
        return launch(*args, **kw)

    return call


@contextmanager
def capturing(kept, keep_if=lambda a: True):
    """While a CUDA graph is captured (graphs.CapturedCall): every array a launch through
    _fn / _ew takes, where keep_if(array), is appended to `kept`, which the graph holds, and
    upload() copies outside the graph."""
    prev = _state.get("kept"), _state.get("keep_if")
    _state["kept"], _state["keep_if"] = kept, keep_if
    try:
        yield
    finally:
        _state["kept"], _state["keep_if"] = prev


def upload(host):
    """A device copy of a small host array (launch descriptors). Under capture the copy is made
    outside the graph, on a side stream, finished before the launch that reads it is captured,
    and kept with the graph: a captured copy would read the host buffer again at every replay."""
    cp = _cp()
    kept = _state.get("kept")
    if kept is None:
        return cp.asarray(host)
    side = _state.get("side_stream")
    if side is None:
        side = _state["side_stream"] = cp.cuda.Stream(non_blocking=True)
    with side:
        dev = cp.asarray(host)
    side.synchronize()
    kept.append(dev)
    return dev


def _map32(perm):
    """An index map (a Galois map's NTT-form positions) as the kernels take it: contiguous
    int32 on the device. The ring's own maps are that already (RingTables.automorphism_
    permutation), so a key switch makes no copy, and none inside a CUDA graph's capture;
    a map found so once is known by identity after (a lone rotation's host time to its first
    launch is part of its wall time)."""
    known = _state.setdefault("map32", {})
    if known.get(id(perm)) is perm:
        return perm
    cp = _cp()
    out = cp.ascontiguousarray(cp.asarray(perm), dtype=np.int32)
    if out is perm:
        known[id(perm)] = perm      # kept alive, so its id cannot name another array
    return out


def _one_word(arrays):
    """Arrays (None for absent) a kernel reads through word_at, with one word-size flag a
    launch: all as given where they share a word size, else all widened to 64 bits; and the
    flag (64-bit words)."""
    words = {_word(x) for x in arrays if x is not None}
    if len(words) > 1:
        arrays = [None if x is None else x.astype(np.uint64) for x in arrays]
    return arrays, words != {"u32"}


_WORD_OF = {np.dtype(np.uint32): "u32", np.dtype(np.uint64): "u64"}


def _word(a):
    """Template argument for an array's storage word (a dict lookup: several a launch)."""
    w = _WORD_OF.get(a.dtype)
    if w is None:
        raise TypeError(f"residues stored as {a.dtype}; expected uint32 or uint64")
    return w


def _ew(name):
    k = _state.setdefault("ew", {}).get(name)
    if k is None:
        cp = _cp()
        ins, outs, body = _ELEMENTWISE[name]
        k = cp.ElementwiseKernel(ins, outs, body, f"aegis_{name}", preamble=_PREAMBLE)
        _state["ew"][name] = k
    return _keeping(k, lambda args: args) if _state.get("kept") is not None else k


def _cbool(flag):
    """A template argument for a Python truth value."""
    return "true" if flag else "false"


def _grid(total):
    return ((int(total) + THREADS - 1) // THREADS,)


def compile_all():
    """Force compilation (the benchmark calls this before timing)."""
    _module()
    for n in _ELEMENTWISE:
        _ew(n)


# ---------------------------------------------------------------- constants
def _mu_of(q_host):
    return np.array([(1 << 64) // int(q) for q in q_host], dtype=np.uint64)


def _mu_col(qc):
    """Barrett constants for a modulus column ((L, 1) or a broadcast view of one), cached
    by where it lives and its shape: a fresh view of a cached column (qc[..., None]) hits
    the same entry instead of copying it to the host again. The entry keeps the column
    alive, so its memory cannot be reused by other values under the same key."""
    cache = _state.setdefault("mu", {})
    key = (qc.data.ptr, qc.shape, qc.strides)
    hit = cache.get(key)
    if hit is not None:
        return hit[1]
    cp = _cp()
    mu = cp.asarray(_mu_of(cp.asnumpy(qc).ravel()).reshape(qc.shape))
    cache[key] = (qc, mu)
    return mu


def _ring_dev(ring):
    """32-bit Montgomery twiddle tables (mont_mul), -q^-1 mod 2^32 and the Shoup N^-1 of a
    RingTables on the device (built once per ring)."""
    d = getattr(ring, "_kernel_tables", None)
    if d is None:
        cp = _cp()
        q = np.array(ring.primes, dtype=np.uint64)

        def u32(a):
            return cp.asarray(cp.asnumpy(a).astype(np.uint32))

        def mont(a):
            a = cp.asnumpy(a).astype(np.uint64).reshape(len(q), -1)
            return cp.asarray(((a << np.uint64(32)) % q[:, None]).astype(np.uint32))

        d = {
            "psi": mont(ring._psi), "ipsi": mont(ring._ipsi),
            "qn": cp.asarray(np.array([(-pow(int(x), -1, 1 << 32)) % (1 << 32) for x in q], dtype=np.uint32)),
            "q": cp.asarray(q.astype(np.uint32)), "mu": cp.asarray(_mu_of(q)),
            "ninv": u32(ring._ninv), "ninvsh": u32(ring._ninv_sh),
            "prow": {}, "plans": {},
        }
        ring._kernel_tables = d
    return d


def _prow(ring, idx, rows):
    d = _ring_dev(ring)
    # a range is hashable and compares by value: no tuple of it per launch
    key = (idx if isinstance(idx, range) else tuple(idx), rows)
    p = d["prow"].get(key)
    if p is None:
        cp = _cp()
        limbs = len(idx)
        p = cp.asarray(np.tile(np.array(idx, dtype=np.int32), rows // limbs))
        d["prow"][key] = p
    return p


# ---------------------------------------------------------------- NTT
def _host_in_host_out(fn):
    """A numpy argument gets a numpy result: callers that hand host arrays keep host semantics."""
    def wrapper(obj, a, *rest, **kw):
        if isinstance(a, np.ndarray):
            return _cp().asnumpy(fn(obj, _cp().asarray(a), *rest, **kw))
        return fn(obj, a, *rest, **kw)

    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper


def _transform_io(ring, a, idx, inplace, out_dtype, rows_sel):
    """(src, dst, rows, row selection, prime of each row, log2 chunk) of an (I)NTT launch.

    rows_sel/idx_of_rows: a device int32 array of row indices into a (R, N) view of a and
    the matching prime indices (in place only: the other rows are left as they are)."""
    cp = _cp()
    src = a if a.flags.c_contiguous else cp.ascontiguousarray(a)
    if src.dtype not in (np.uint32, np.uint64):
        src = src.astype(np.uint64)
    if rows_sel is not None:
        if not (inplace and src is a):
            raise ValueError("a row selection transforms a C-contiguous array in place")
        sel, prow = rows_sel
        rows = int(sel.size)
    else:
        sel = None
        rows = src.size // ring.n
        prow = _prow(ring, idx, rows) if rows else None
    if inplace:
        dst = src
    else:
        dst = cp.empty(src.shape, dtype=out_dtype or src.dtype)
    logc = _chunk_log(ring.log_n)
    if logc not in SMEM_LOGS:
        raise ValueError(f"the device NTT takes rings of degree 2^{SMEM_LOGS[0]} and up, not 2^{ring.log_n}")
    return src, dst, rows, sel, prow, logc


def _smem_bytes(logc):
    """A chunk of 2^logc 32-bit residues with one pad word per 32 (round_pos/padded)."""
    return 4 * ((1 << logc) + (1 << logc) // 32)


def _null(p):
    return p if p is not None else np.uint64(0)


def _fwd_top(ring, src, dst, sel, prow, rows):
    """The forward transform's register pass (stages above the shared-memory chunk) over rows."""
    d = _ring_dev(ring)
    logn = ring.log_n
    logc = _chunk_log(logn)
    _fn(f"ntt_fwd_top<{_word(src)}, {_word(dst)}, {logn - logc}>")(
        _grid(rows << logc), (THREADS,),
        (src, dst, _null(sel), prow, d["psi"], d["qn"], d["q"], np.int32(logn), np.int64(rows)))


@_host_in_host_out
def ntt(ring, a, idx, inplace=False, out_dtype=None, rows_sel=None):
    """Forward negacyclic NTT of (..., L, N), limbs mod primes `idx`; bit-identical to
    ring._ntt_ref. Two passes over memory: the top stages column-wise in registers,
    then the rest chunk-wise in shared memory."""
    src, dst, rows, sel, prow, logc = _transform_io(ring, a, idx, inplace, out_dtype, rows_sel)
    if rows == 0:
        return dst
    logn = ring.log_n
    top = logn - logc
    if top:
        _fwd_top(ring, src, dst, sel, prow, rows)
        src = dst
    _fwd_smem(ring, src, dst, sel, prow, rows)
    return dst


def _fwd_smem(ring, src, dst, sel, prow, rows):
    """The forward transform's shared-memory pass (the stages within a chunk) over rows."""
    d = _ring_dev(ring)
    logn = ring.log_n
    logc = _chunk_log(logn)
    _fn(f"ntt_fwd_smem<{_word(src)}, {_word(dst)}, {logc}>")(
        (rows << (logn - logc),), (1 << (logc - 3),),
        (src, dst, _null(sel), prow, d["psi"], d["qn"], d["q"], np.int32(logn)),
        shared_mem=_smem_bytes(logc))


@_host_in_host_out
def intt(ring, a, idx, inplace=False, out_dtype=None, rows_sel=None):
    """Inverse of ntt (N^-1 included), bit-identical to ring._intt_ref. (A lone rotation's
    gathered transform is ModUp's own shared-memory pass: _modup_top.)"""
    src, dst, rows, sel, prow, logc = _transform_io(ring, a, idx, inplace, out_dtype, rows_sel)
    if rows == 0:
        return dst
    d = _ring_dev(ring)
    logn = ring.log_n
    top = logn - logc
    _intt_smem(ring, src, dst, sel, prow, rows)
    if top:
        _fn(f"intt_top<{_word(dst)}, {top}>")(
            _grid(rows << logc), (THREADS,),
            (dst, _null(sel), prow, d["ipsi"], d["qn"], d["q"], d["ninv"], d["ninvsh"],
             np.int32(logn), np.int64(rows)))
    return dst


def _intt_smem(ring, src, dst, sel, prow, rows, gather=None):
    """The inverse transform's shared-memory pass over rows (of src[..., gather] where given);
    N^-1 is applied here when the ring has no register pass (N <= 2^SMEM_LOG), else by that
    pass. Its launch's fixed parts are made once per ring and word pair: it is a lone
    rotation's first launch, and the host's time to it is part of the rotation's wall time."""
    d = _ring_dev(ring)
    key = ("intt_smem", src.dtype, dst.dtype, gather is None)
    plan = d["plans"].get(key)
    if plan is None:
        logn = ring.log_n
        logc = _chunk_log(logn)
        plan = d["plans"][key] = (
            f"intt_smem<{_word(src)}, {_word(dst)}, {logc}, {_cbool(gather is not None)}>", logn - logc,
            (1 << (logc - 3),),
            (d["ipsi"], d["qn"], d["q"], d["ninv"], d["ninvsh"], np.int32(logn), np.int32(0 if logn > logc else 1)),
            _smem_bytes(logc))
    name, chunks_log, block, tables, smem = plan
    _fn(name)((rows << chunks_log,), block, (src, dst, _null(sel), prow) + tables + (_null(gather),),
              shared_mem=smem)


# ---------------------------------------------------------------- key switching
def ks_inner(ext, key, qc, rows, perm=None):
    """(2, rows, N) uint32: sum over digits j of ext[j][:, perm] * (key.b[j], key.a[j]) mod q
    (rows P then Q)."""
    cp = _cp()
    ext = cp.ascontiguousarray(cp.asarray(ext))
    kb = cp.ascontiguousarray(cp.asarray(key.b), dtype=np.uint32)
    ka = cp.ascontiguousarray(cp.asarray(key.a), dtype=np.uint32)
    digits, _, n = ext.shape
    logn = n.bit_length() - 1
    out = cp.empty((2, rows, n), dtype=np.uint32)
    q = cp.ascontiguousarray(qc.ravel())
    mu = _mu_col(qc).ravel()
    if perm is not None:
        perm = _map32(perm)
    _fn(f"ks_inner<{_word(ext)}>")(_grid(rows * n), (THREADS,),
                    (ext, kb, ka, perm if perm is not None else np.uint64(0), q, cp.ascontiguousarray(mu),
                     out, np.int32(digits), np.int32(rows), np.int32(logn),
                     np.int64(ext.shape[1] * n), np.int64(kb.shape[1] * n)))
    return out


KS_MANY = 8  # rotations per ks_inner_many launch (the kernel's KS_MANY)


def ks_inner_many(ext, keys, qc, rows, perms):
    """ks_inner for each (key, perm) of up to KS_MANY rotations over one ext, one launch:
    a list of (2, rows, N) uint32."""
    cp = _cp()
    if not 0 < len(keys) == len(perms) <= KS_MANY:
        raise ValueError(f"ks_inner_many: {len(keys)} keys and {len(perms)} permutations; "
                         f"1 to {KS_MANY} of each")
    ext = cp.ascontiguousarray(cp.asarray(ext))
    digits, _, n = ext.shape
    kbs = [cp.ascontiguousarray(cp.asarray(k.b), dtype=np.uint32) for k in keys]
    kas = [cp.ascontiguousarray(cp.asarray(k.a), dtype=np.uint32) for k in keys]
    if len({k.shape for k in kbs + kas}) != 1:
        raise ValueError("ks_inner_many: the keys differ in shape")
    null = np.uint64(0)
    pms = [null if p is None else _map32(p) for p in perms]
    outs = [cp.empty((2, rows, n), dtype=np.uint32) for _ in keys]
    pad = [null] * (KS_MANY - len(keys))
    _fn(f"ks_inner_many<{_word(ext)}>")(
        _grid(rows * n), (THREADS,),
        (ext, *kbs, *pad, *kas, *pad, *pms, *pad, *outs, *pad, np.int32(len(keys)),
         cp.ascontiguousarray(qc.ravel()), cp.ascontiguousarray(_mu_col(qc).ravel()),
         np.int32(digits), np.int32(rows), np.int32(n.bit_length() - 1),
         np.int64(ext.shape[1] * n), np.int64(kbs[0].shape[1] * n)))
    return outs


def mul_plain_sum(ct_rows, pt_rows, runs, qc):
    """sum_t ct_t * pt_t mod q -> (2, limbs, N) uint32, None where the operands do not fit
    the kernel (the caller then takes the reference path).

    ct_rows: (2, >= limbs, N) arrays of one word size, C-contiguous per polynomial; pt_rows:
    (limbs, N / run) arrays of one word size, C-contiguous; runs: their runs (powers of 2)."""
    cp = _cp()
    limbs = int(qc.shape[0])
    n = int(ct_rows[0].shape[-1])
    word = ct_rows[0].dtype
    if (len({p.dtype for p in pt_rows}) != 1 or any(c.dtype != word or c.strides[-1] != word.itemsize
                                                     or c.strides[-2] != word.itemsize * n for c in ct_rows)
            or any(not p.flags.c_contiguous or p.shape[0] < limbs for p in pt_rows)):
        return None
    out = cp.empty((2, limbs, n), dtype=np.uint32)
    # the terms' descriptors in one upload (each host-to-device copy costs ~25 us of host time)
    t = len(ct_rows)
    host = np.empty(4 * t, dtype=np.int64)
    host[:t] = [c.data.ptr for c in ct_rows]
    host[t:2 * t] = [p.data.ptr for p in pt_rows]
    host[2 * t:3 * t] = [c.strides[0] // word.itemsize for c in ct_rows]
    host[3 * t:3 * t + (t + 1) // 2] = 0
    host[3 * t:].view(np.int32)[:t] = [int(r).bit_length() - 1 for r in runs]
    dev = upload(host)
    ptrs, pptrs, stride = dev[:t].view(np.uint64), dev[t:2 * t].view(np.uint64), dev[2 * t:3 * t]
    run_log = dev[3 * t:].view(np.int32)[:t]
    q = cp.ascontiguousarray(qc.ravel())
    _fn(f"mul_plain_sum<{_word(ct_rows[0])}, {_word(pt_rows[0])}>")(
        _grid(limbs * n), (THREADS,),
        (ptrs, pptrs, run_log, stride, np.int32(len(ct_rows)), out, q, cp.ascontiguousarray(_mu_col(qc).ravel()),
         np.int32(limbs), np.int32(n.bit_length() - 1)))
    return out


def add_mod(a, b, qc):
    return _ew("add_mod")(a, b, qc)


def mul_mod(a, b, qc):
    return _ew("mul_mod")(a, b, qc, _mu_col(qc))


def sub_mod(a, b, qc):
    return _ew("sub_mod")(a, b, qc)


def mul_add(a, b, c, qc, out=None):
    args = (a, b, c, qc, _mu_col(qc))
    return _ew("mul_add")(*args) if out is None else _ew("mul_add")(*args, out)


def add_first(data, b, qc, negate=False):
    """(2, L, N) ciphertext data with b (L, N) or (L, 1) added to (subtracted from)
    polynomial 0 mod q, polynomial 1 copied: one pass instead of copy, sum, store."""
    first = data[0].size
    return _ew("add_first")(data, b, qc, np.int64(first), np.int32(1 if negate else 0))


def tensor(a, b, qc):
    """Degree-2 product (d0, d1, d2) of two ciphertexts' (2, L, N) data, one pass, as
    (L, N) uint32 each."""
    cp = _cp()
    a, b = _one_word([cp.ascontiguousarray(a), cp.ascontiguousarray(b)])[0]
    limbs, n = a.shape[-2], a.shape[-1]
    d = cp.empty((3, limbs, n), dtype=np.uint32)
    _fn(f"tensor_product<{_word(a)}>")(_grid(limbs * n), (THREADS,),
                          (a, b, d, cp.ascontiguousarray(qc.ravel()), cp.ascontiguousarray(_mu_col(qc).ravel()),
                           np.int32(limbs), np.int32(n.bit_length() - 1)))
    return d[0], d[1], d[2]


# ---------------------------------------------------------------- basis conversion
def _converter_consts(conv):
    """A BasisConverter's moduli, Barrett constants and hat tables as flat device
    arrays (built once per converter): basis_convert's and ModDown's kernels read them."""
    k = getattr(conv, "_kernel_consts", None)
    if k is None:
        cp = _cp()
        src_q = cp.asnumpy(conv.src_q).ravel()
        dst_q = cp.asnumpy(conv.dst_q).ravel()
        k = {
            "src_q": cp.asarray(src_q), "src_mu": cp.asarray(_mu_of(src_q)),
            "hat_inv": cp.asarray(cp.asnumpy(conv.hat_inv).ravel()),
            "dst_q": cp.asarray(dst_q), "dst_mu": cp.asarray(_mu_of(dst_q)),
            "hat_mod": cp.asarray(cp.asnumpy(conv.hat_mod).astype(np.uint64)),
        }
        conv._kernel_consts = k
    return k


@_host_in_host_out
def basis_convert(conv, x):
    """BasisConverter.convert on the device: exact sum_i [x_i hat_i^-1] (A/a_i) mod b_j, fully reduced."""
    cp = _cp()
    k = _converter_consts(conv)
    x = cp.ascontiguousarray(x, dtype=np.uint64)  # host arrays were moved by the decorator
    n_a = x.shape[-2]
    n_b = int(k["dst_q"].size)
    n = x.shape[-1]
    batch = x.size // (n_a * n)
    y = cp.empty(x.shape[:-2] + (n_b, n), dtype=np.uint64)
    _fn(f"basis_convert<{_convert_bound(n_a, 'basis conversion')}>")(_grid(batch * n), (THREADS,),
                         (x, y, k["src_q"], k["src_mu"], k["hat_inv"], k["dst_q"], k["dst_mu"],
                          k["hat_mod"], np.int32(n_a), np.int32(n_b), np.int32(n.bit_length() - 1),
                          np.int64(batch)))
    return y


def modup(ks, d, level):
    """KeySwitcher.modup on the device, 32-bit words out. Rings with a register pass: the INTT's
    shared-memory pass, one kernel for all digits that finishes the INTT, converts and runs
    the NTT's register pass (a digit's own rows copy d), then the NTT's shared-memory pass
    over the converted rows. Otherwise: the INTT, the conversion, the NTT."""
    cp = _cp()
    consts = _modup_consts(ks, level)
    ring = ks.ring
    d = cp.ascontiguousarray(d)
    mid = _modup_top(ks, d, level, consts, copy_own=True)
    if mid is not None:
        sel, prow = consts["converted"]
        _fwd_smem(ring, mid, mid, sel, prow, int(sel.size))
        return mid
    n = ring.n
    digits, rows = consts["digits"], consts["rows"]
    out = cp.empty((digits, rows, n), dtype=np.uint32)
    coeff = intt(ring, d, range(ks.params.limbs_at(level)), out_dtype=np.uint32)
    chunk = MODUP_ROW_CHUNK
    chunks = -(-rows // chunk)
    _fn(f"modup_convert<{_convert_bound(consts['maxa'], 'ModUp digit')}>")(
        (digits * chunks * (n // (THREADS * MODUP_COLS)),), (THREADS,),
        (coeff, d, out, consts["start"], consts["len"], consts["one"], consts["hat_inv"], consts["hat_inv_sh"],
         consts["src_q"], consts["hat_mont"], consts["row_q"], consts["row_qinv_neg"],
         consts["row_limb"], np.int32(rows), np.int32(consts["maxa"]),
         np.int32(ring.log_n), np.int32(digits), np.int32(chunk), np.int32(_word(d) == "u64")))
    return ntt(ring, out, None, inplace=True, rows_sel=consts["converted"])


def _modup_top(ks, d, level, consts, copy_own, gather=None):
    """ModUp up to its NTT's shared-memory pass (rings with a register pass; None otherwise):
    (digits, rows, N) uint32, the converted rows after the register stages, a digit's own
    rows a copy of d where copy_own (else not written); of d[..., gather] where given (then
    not copy_own)."""
    cp = _cp()
    ring = ks.ring
    bound = consts["fused"]
    if not bound:
        return None
    if gather is not None and copy_own:
        raise ValueError("_modup_top: a gathered ModUp does not copy d's rows")
    # the INTT's shared-memory pass first: the device starts while the host allocates the rest
    # (a lone rotation's wall time is the host's time to its first launch plus the device's),
    # launched straight, d being contiguous already; modup_ntt_top runs its register pass
    limbs = consts["limbs"]
    coeff = cp.empty((limbs, ring.n), dtype=np.uint32)
    _intt_smem(ring, d, coeff, None, consts["limb_primes"], limbs, gather)
    top = _top_log(ring.log_n)
    n = ring.n
    digits, rows = consts["digits"], consts["rows"]
    out = cp.empty((digits, rows, n), dtype=np.uint32)
    dev = _ring_dev(ring)
    cols = (n >> top) // MODUP_TOP_COLS
    chunk = _row_chunk(rows, digits * cols)
    _fn(f"modup_ntt_top<{bound}, {top}>")(
        (digits * -(-rows // chunk) * cols,), (THREADS,),
        (coeff, d, out, consts["start"], consts["len"], consts["one"], consts["hat_inv_n"], consts["hat_inv_n_sh"],
         consts["src_q"], consts["hat_mont"], consts["row_q"], consts["row_qinv_neg"],
         consts["row_limb"], consts["row_prime"], dev["psi"], dev["ipsi"], dev["qn"], np.int32(rows),
         np.int32(consts["maxa"]), np.int32(ring.log_n), np.int32(chunk), np.int32(_word(d) == "u64"),
         np.int32(copy_own)),
        shared_mem=_top_smem(_staged_words(bound), top))
    return out


def modup_inner(ks, d, key, level, perm=None):
    """KeySwitcher.modup_inner on the device: (2, |P|+limbs, N) uint32. Rings with a register
    pass: ModUp's kernels up to its NTT's shared-memory pass (the map applied by the INTT's
    first reads), then ks_modup_inner, which runs that pass per digit and block and takes the
    inner product from its registers: the extended digits are never stored whole. Otherwise
    modup of d[..., perm] then ks_inner."""
    return _modup_inner(ks, d, key, level, perm, p_intt=False)[0]


def _modup_inner(ks, d, key, level, perm, p_intt):
    """modup_inner, and whether its P rows left after the INTT's shared-memory pass (p_intt
    asks for it; only ks_modup_inner does it)."""
    cp = _cp()
    consts = _modup_consts(ks, level)
    ring = ks.ring
    rows = consts["rows"]
    d = cp.ascontiguousarray(d)
    gather = None if perm is None else _map32(perm)
    mid = _modup_top(ks, d, level, consts, copy_own=False, gather=gather)
    if mid is None:
        return ks_inner(modup(ks, d if perm is None else d[..., perm], level), key,
                        ring.q_col(ks.rows(level)), rows), False
    kb = cp.ascontiguousarray(cp.asarray(key.b), dtype=np.uint32)
    ka = cp.ascontiguousarray(cp.asarray(key.a), dtype=np.uint32)
    dev = _ring_dev(ring)
    out = cp.empty((2, rows, ring.n), dtype=np.uint32)
    logn, logc = ring.log_n, _chunk_log(ring.log_n)
    _fn(f"ks_modup_inner<{_word(d)}, {logc}, {_cbool(gather is not None)}, {_cbool(p_intt)}>")(
        (rows << (logn - logc),), (1 << (logc - 3),),
        (mid, d, kb, ka, _null(gather), consts["start"], consts["len"], consts["row_limb"],
         consts["row_prime"], dev["psi"], dev["ipsi"], dev["qn"], dev["q"], consts["row_r2m"], out,
         np.int32(consts["digits"]), np.int32(rows), np.int32(logn), np.int64(kb.shape[1] * ring.n)),
        shared_mem=2 * _smem_bytes(logc))      # two digits' chunks in lockstep
    return out, p_intt


def switch(ks, d, key, level, addend=None, perm=None, rescale=False):
    """KeySwitcher.switch on the device: modup_inner, then moddown (moddown_rescale with
    rescale). Where both run their fused kernels, ks_modup_inner leaves the P rows as ModDown's
    INTT shared-memory pass would (from its registers), and ModDown skips that pass and its
    launch."""
    # ModDown's sources: the P rows, and with rescale the dropped top group (as _divide)
    drop = ks.params.primes_per_level if rescale else 0
    fused_down = _fused_bound(ks.n_p + drop, _top_log(ks.ring.log_n)) is not None
    acc, p_done = _modup_inner(ks, d, key, level, perm, p_intt=fused_down)
    if rescale:
        return _moddown_rescale(ks, acc, level, addend, None, p_done)
    return _divide(ks, acc, level, 0, None, addend, perm, None, p_done)


def _modup_consts(ks, level):
    cache = ks.__dict__.setdefault("_kernel_modup", {})
    c = cache.get(level)
    if c is not None:
        return c
    cp = _cp()
    prm = ks.params
    limbs = prm.limbs_at(level)
    q_idx = list(range(limbs))
    digits = prm.digits_at(level)
    n_p = ks.n_p
    rows = n_p + limbs
    maxa = max(len(dg) for dg in digits)
    ring_rows = ks.rows(level)
    row_q = np.array([prm.qp[i] for i in ring_rows], dtype=np.uint64)
    row_limb = np.array([-1] * n_p + q_idx, dtype=np.int32)
    hat_inv = np.zeros((len(digits), maxa), dtype=np.uint64)
    src_q = np.full((len(digits), maxa), 3, dtype=np.uint64)  # padding: never read (t = 0 past a digit)
    hat_mod = np.zeros((len(digits), rows, maxa), dtype=np.uint64)
    sel, sel_prime = [], []  # rows the NTT transforms: all but each digit's own (copied) rows
    for j, dg in enumerate(digits):
        src = list(dg)
        dst = ks.p_idx + [i for i in q_idx if i not in dg]
        conv = ks._converter(("up", level, j), src, dst)
        hat_inv[j, :len(src)] = cp.asnumpy(conv.hat_inv).ravel()
        src_q[j, :len(src)] = [prm.qp[i] for i in src]
        hm = cp.asnumpy(conv.hat_mod).astype(np.uint64)  # (|dst|, |src|), dst = P then other Q rows
        dst_rows = list(range(n_p)) + [n_p + i for i in q_idx if i not in dg]
        hat_mod[j, dst_rows, :len(src)] = hm
        sel += [j * rows + r for r in dst_rows]
        sel_prime += [ring_rows[r] for r in dst_rows]
    # 32-bit tables: Shoup companions of hat_inv, hat_mod in Montgomery form (x 2^32 mod q)
    hat_inv_sh = (hat_inv << np.uint64(32)) // src_q
    # modup_ntt_top finishes the INTT itself: N^-1 (Q_j/q)^-1 in one product
    ninv = cp.asnumpy(ks.ring._ninv).astype(np.uint64).ravel()
    hat_inv_n = np.zeros_like(hat_inv)
    for j, dg in enumerate(digits):
        hat_inv_n[j, :len(dg)] = hat_inv[j, :len(dg)] * ninv[list(dg)] % src_q[j, :len(dg)]
    hat_inv_n_sh = (hat_inv_n << np.uint64(32)) // src_q
    hat_mont = (hat_mod << np.uint64(32)) % row_q[None, :, None]
    qinv_neg = np.array([(-pow(int(q), -1, 1 << 32)) % (1 << 32) for q in row_q], dtype=np.uint32)
    c = {
        "digits": len(digits), "rows": rows, "maxa": maxa, "limbs": limbs,
        "fused": _fused_bound(maxa, _top_log(ks.ring.log_n)), "limb_primes": _prow(ks.ring, range(limbs), limbs),
        "start": cp.asarray(np.array([dg.start for dg in digits], dtype=np.int32)),
        "len": cp.asarray(np.array([len(dg) for dg in digits], dtype=np.int32)),
        "one": cp.asarray(np.array([_one_reduction([prm.qp[i] for i in dg]) for dg in digits],
                                   dtype=np.int32)),
        "hat_inv": cp.asarray(hat_inv.astype(np.uint32)), "hat_inv_sh": cp.asarray(hat_inv_sh.astype(np.uint32)),
        "hat_inv_n": cp.asarray(hat_inv_n.astype(np.uint32)),
        "hat_inv_n_sh": cp.asarray(hat_inv_n_sh.astype(np.uint32)),
        "src_q": cp.asarray(src_q.astype(np.uint32)), "hat_mont": cp.asarray(hat_mont.astype(np.uint32)),
        "row_q": cp.asarray(row_q.astype(np.uint32)), "row_qinv_neg": cp.asarray(qinv_neg),
        "row_limb": cp.asarray(row_limb), "row_prime": cp.asarray(np.array(ring_rows, dtype=np.int32)),
        # 2^64 mod q: ks_modup_inner's Montgomery products leave its sums times 2^-32
        "row_r2m": cp.asarray(np.array([(1 << 64) % int(q) for q in row_q], dtype=np.uint32)),
        "converted": (cp.asarray(np.array(sel, dtype=np.int32)), cp.asarray(np.array(sel_prime, dtype=np.int32))),
    }
    cache[level] = c
    return c


def moddown(ks, acc, level, addend=None, perm=None):
    """KeySwitcher.moddown on the device: INTT of the P rows, the conversion P -> Q_l with the
    centring, then its NTT, whose last pass stores (acc_Q - conv) * P^-1 (+ addend). acc: 32-
    or 64-bit words. Rings with a register pass: the INTT's shared-memory pass, then one kernel
    that finishes it, converts and runs the NTT's register pass (moddown_ntt_top)."""
    return _divide(ks, acc, level, 0, None, addend, perm, None)


def moddown_rescale(ks, acc, level, addend=None, top=None):
    """KeySwitcher.moddown_rescale on the device: moddown's kernels with the divisor P q_T,
    the top group's rows of the sum (top, or acc_T + P addend_T made here) as its last
    sources, and the addend times q_T^-1 in the last pass."""
    return _moddown_rescale(ks, acc, level, addend, top, False)


def _moddown_rescale(ks, acc, level, addend, top, p_done):
    cp = _cp()
    limbs = ks.params.limbs_at(level)
    keep = limbs - ks.params.primes_per_level
    if top is None:
        t_idx = list(range(keep, limbs))
        qc = ks.ring.q_col(t_idx)
        acc = cp.ascontiguousarray(acc)
        polys, rows, n = acc.shape
        adds = [cp.ascontiguousarray(addend[c][keep:limbs])
                if addend is not None and c < len(addend) and addend[c] is not None else None
                for c in range(min(polys, 2))] + [None, None]
        adds, wide = _one_word(adds)
        top = cp.empty((polys, limbs - keep, n), dtype=np.uint32)
        _fn("scaled_add_rows")(
            _grid(top.size), (THREADS,),
            (acc, np.int64((ks.n_p + keep) * n), np.int64(rows * n), np.int32(_word(acc) == "u64"),
             _null(adds[0]), _null(adds[1]), np.int32(wide), cp.ascontiguousarray(ks.p_mod(t_idx).ravel()),
             cp.ascontiguousarray(qc.ravel()), cp.ascontiguousarray(_mu_col(qc).ravel()), top,
             np.int32(limbs - keep), np.int32(n.bit_length() - 1), np.int32(polys)))
    return _divide(ks, acc, level, ks.params.primes_per_level, top, addend, None, ks.top_inverse(level), p_done)


def _divide(ks, acc, level, drop, top, addend, perm, addend_w, p_done=False):
    """The device KeySwitcher._divide plus the addend (times addend_w when given). p_done:
    acc's P rows are already past the INTT's shared-memory pass (switch; fused kernels only)."""
    cp = _cp()
    ring = ks.ring
    n_p = ks.n_p
    n_src = n_p + drop
    keep = ks.params.limbs_at(level) - drop
    q_idx = range(keep)
    src_idx = ks.divisor_primes(level, drop)
    top_log = _top_log(ring.log_n)
    fused = _fused_bound(n_src, top_log)
    inv, qc = ks.p_inverse(level, drop), ring.q_col(q_idx)
    if p_done and not fused:
        raise ValueError("_divide: P rows past the INTT's first pass need the fused ModDown")
    if fused:
        acc = cp.ascontiguousarray(acc)
        polys = acc.size // (acc.shape[-2] * ring.n)
        k = _moddown_consts(ks, level, polys, drop)
        if p_done:
            pint = acc
        else:
            pint = cp.empty(acc.shape, dtype=np.uint32)     # only the P rows are written
            _intt_smem(ring, acc, pint, k["p_rows"], k["p_prime_rows"], polys * n_p)
        tint = None
        if drop:
            top = cp.ascontiguousarray(top)
            tint = cp.empty(top.shape, dtype=np.uint32)
            _intt_smem(ring, top, tint, None, _prow(ring, src_idx[n_p:], polys * drop), polys * drop)
        dev = _ring_dev(ring)
        cols = (ring.n >> top_log) // MODUP_TOP_COLS
        chunk = _row_chunk(keep, polys * cols)
        conv = cp.empty(acc.shape[:-2] + (keep, ring.n), dtype=np.uint32)
        _fn(f"moddown_ntt_top<{fused}, {top_log}>")(
            (polys * -(-keep // chunk) * cols,), (THREADS,),
            (pint, _null(tint), conv, k["p_prime"], k["fold"], k["fold_sh"], k["hat_mont"],
             ks.neg_p_multiples(level, drop), dev["psi"], dev["ipsi"], dev["q"], dev["qn"], np.int32(n_src),
             np.int32(drop), np.int32(keep), np.int32(acc.shape[-2]), np.int32(ring.log_n), np.int32(chunk)),
            shared_mem=_top_smem(n_src + 1, top_log))
        return ntt_scale_down_add(ring, conv, q_idx, acc, n_p, inv, qc, addend, perm, top_done=True,
                                  addend_w=addend_w)
    bound = _convert_bound(n_src, "ModDown")
    p_coeff = intt(ring, acc[..., :n_p, :], ks.p_idx, out_dtype=np.uint64)
    if drop:
        p_coeff = cp.concatenate([p_coeff, intt(ring, top, src_idx[n_p:], out_dtype=np.uint64)], axis=-2)
    k = _converter_consts(ks.down_converter(level, drop))
    n = ring.n
    polys = p_coeff.size // (n_src * n)
    conv = cp.empty(acc.shape[:-2] + (keep, n), dtype=np.uint32)   # residues < 2^31: half the traffic
    _fn(f"moddown_convert<{bound}>")(_grid(polys * n), (THREADS,),
                           (p_coeff, conv, k["src_q"], k["src_mu"], k["hat_inv"], k["dst_q"], k["dst_mu"],
                            k["hat_mod"], ks.neg_p_multiples(level, drop), np.int32(n_src), np.int32(keep),
                            np.int32(ring.log_n), np.int64(polys)))
    return ntt_scale_down_add(ring, conv, q_idx, acc, n_p, inv, qc, addend, perm, addend_w=addend_w)


def _one_reduction(primes):
    """Whether a conversion's products over these source primes take one Montgomery reduction
    in dot_mont: each is below q_i q, so their sum is below 2^32 q where the q_i sum to at
    most 2^32 (else one a pair, as every prime is below 2^31)."""
    return sum(int(q) for q in primes) <= 1 << 32


def _moddown_consts(ks, level, polys, drop=0):
    """moddown_ntt_top's tables at a level: the divisor's prime indices, N^-1 (D/p_i)^-1 mod p_i
    (Shoup), (D/p_i) mod q_r in Montgomery form, and the P rows of `polys` polynomials."""
    cache = ks.__dict__.setdefault("_kernel_moddown", {})
    key = (level, polys, drop)
    c = cache.get(key)
    if c is not None:
        return c
    cp = _cp()
    n_p = ks.n_p
    limbs = ks.params.limbs_at(level)
    keep = limbs - drop
    src_idx = ks.divisor_primes(level, drop)
    conv = ks.down_converter(level, drop)
    p_q = np.array([ks.params.qp[i] for i in src_idx], dtype=np.uint64)
    hat_inv = cp.asnumpy(conv.hat_inv).astype(np.uint64).ravel()
    fold = hat_inv * np.array([pow(ks.ring.n, -1, int(q)) for q in p_q], dtype=np.uint64) % p_q
    q_q = np.array(ks.params.q[:keep], dtype=np.uint64)
    hat_mod = cp.asnumpy(conv.hat_mod).astype(np.uint64)          # (keep, |D|)
    rows = n_p + limbs
    c = {
        "p_prime": cp.asarray(np.array(src_idx, dtype=np.int32)),
        "fold": cp.asarray(fold.astype(np.uint32)),
        "fold_sh": cp.asarray(((fold << np.uint64(32)) // p_q).astype(np.uint32)),
        "hat_mont": cp.asarray(((hat_mod << np.uint64(32)) % q_q[:, None]).astype(np.uint32)),
        "p_rows": cp.asarray(np.array([c * rows + a for c in range(polys) for a in range(n_p)], dtype=np.int32)),
        "p_prime_rows": cp.asarray(np.array(list(ks.p_idx) * polys, dtype=np.int32)),
    }
    cache[key] = c
    return c


def _shoup_pair(col, qc):
    """A (limbs, 1) column of multipliers as 32-bit words and their Shoup quotients
    floor(w 2^32 / q), cached like _mu_col (the callers' columns are cached themselves)."""
    cache = _state.setdefault("shoup", {})
    key = (col.data.ptr, col.shape, qc.data.ptr)
    hit = cache.get(key)
    if hit is not None:
        return hit[1]
    cp = _cp()
    w = cp.asnumpy(col).astype(np.uint64).ravel()
    q = cp.asnumpy(qc).astype(np.uint64).ravel()
    pair = (cp.asarray(w.astype(np.uint32)), cp.asarray(((w << np.uint64(32)) // q).astype(np.uint32)))
    cache[key] = ((col, qc), pair)
    return pair


def ntt_scale_down_add(ring, b, idx, a, row0, inv, qc, addend=None, perm=None, top_done=False,
                       addend_w=None):
    """(..., limbs, N) uint32, the device ciphertext's words: (a[..., row0:row0+limbs, :] + q
    - NTT(b)) * inv mod q, plus
    addend[c] (gathered by perm when given; times the (limbs, 1) column addend_w when given)
    on polynomial c where addend[c] is not None.

    b: C-contiguous (..., limbs, N) uint32 in coefficient form over primes idx, used as
    scratch (its top NTT stages run in place); a: (..., rows, N) of 32- or 64-bit words;
    inv: a (limbs, 1) column. The NTT's shared-memory pass stores the result, so the
    transform of b never goes back to memory. top_done: b has had its register pass (rescale's
    ntt_fwd_top_lift makes b and runs it in one)."""
    cp = _cp()
    if b.dtype != np.uint32 or not b.flags.c_contiguous:
        raise ValueError("ntt_scale_down_add: b must be C-contiguous uint32")
    limbs, n = b.shape[-2], b.shape[-1]
    polys = b.size // (limbs * n)
    rows = polys * limbs
    a = cp.ascontiguousarray(a)
    adds = [None, None]
    for c, x in enumerate(addend or ()):
        if x is not None:
            if x.shape[-2] < limbs or not x.flags.c_contiguous:
                x = cp.ascontiguousarray(x[..., :limbs, :])
            adds[c] = x
    adds, wide = _one_word(adds)
    if perm is not None:
        perm = _map32(perm)
    w, ws = _shoup_pair(inv, qc)
    aw = _shoup_pair(addend_w, qc) if addend_w is not None else (None, None)
    d = _ring_dev(ring)
    prow = _prow(ring, idx, rows)
    logn = ring.log_n
    logc = _chunk_log(logn)
    top = logn - logc
    if top and not top_done:
        _fwd_top(ring, b, b, None, prow, rows)
    out = cp.empty(b.shape, dtype=np.uint32)
    _fn(f"ntt_fwd_smem_scale<u32, {_word(a)}, {logc}, {_cbool(perm is not None)}, {_cbool(aw[0] is not None)}>")(
        (rows << top,), (1 << (logc - 3),),
        (b, prow, d["psi"], d["qn"], d["q"], np.int32(logn), a, out, w, ws, _null(adds[0]), _null(adds[1]),
         _null(perm), _null(aw[0]), _null(aw[1]), np.int32(row0), np.int32(a.shape[-2]), np.int32(limbs),
         np.int32(wide)),
        shared_mem=_smem_bytes(logc))
    return out


# ---------------------------------------------------------------- rescale
def rescale(ring, data, keep, top_idx, top_q, qc, inv=None):
    """Rescale (2, limbs, N) NTT data by the primes top_q: INTT of the top limbs, centred lift
    (32-bit words), its NTT over the kept limbs storing (c - lift) * (prod top_q)^-1 — identical
    to Evaluator.rescale's numpy path."""
    cp = _cp()
    top = intt(ring, data[:, keep:], top_idx, out_dtype=np.uint64)   # the lift reads 64-bit words
    k = len(top_q)
    if k not in (1, 2):
        raise ValueError("rescale by more than two primes at once is not supported")
    q0 = int(top_q[0])
    q1 = int(top_q[1]) if k == 2 else 1
    inv01 = pow(q0, -1, q1) if k == 2 else 0
    key = tuple(ring.primes[:keep])
    n = ring.n
    logn = ring.log_n
    polys = data.shape[0]
    res = cp.empty((polys, keep, n), dtype=np.uint32)
    lift = (np.int32(k), np.uint64(q0), np.uint64(q1), np.uint64(inv01),
            np.uint64((1 << 64) // q1 if k == 2 else 0), np.int32(keep))
    top_log = _top_log(logn)
    d = _ring_dev(ring)     # the kept limbs are the ring's first rows: its prime and Barrett tables
    if top_log:    # the lift is made inside the NTT's register pass
        rows = polys * keep
        _fn(f"ntt_fwd_top_lift<{top_log}>")(
            _grid(rows << (logn - top_log)), (THREADS,),
            (top, res, _prow(ring, range(keep), rows), d["psi"], d["qn"], d["q"], d["mu"], *lift,
             np.int32(logn), np.int64(rows)))
    else:
        _fn("rescale_lift")(_grid(polys * n), (THREADS,),
                            (top, res, d["q"], d["mu"], *lift, np.int32(logn), np.int64(polys)))
    if inv is None:
        inv_cache = _state.setdefault("rescale_inv", {})
        ikey = (key, tuple(int(x) for x in top_q))
        inv = inv_cache.get(ikey)
        if inv is None:
            big = math.prod(int(x) for x in top_q)
            inv = cp.asarray(np.array([pow(big % q, -1, q) for q in key], dtype=np.uint64))[:, None]
            inv_cache[ikey] = inv
    return ntt_scale_down_add(ring, res, range(keep), data, 0, inv, qc, top_done=True)


def chacha20_rows(key_words, nonces, counter0, blocks):
    """(rows, blocks * 16) uint32 keystream words: row r under nonce nonces[r], block
    counters counter0 .. counter0 + blocks - 1 (RFC 8439)."""
    cp = _cp()
    rows = len(nonces)
    out = cp.empty((rows, blocks * 16), dtype=cp.uint32)
    key = cp.asarray(np.asarray(key_words, dtype=np.uint32))
    nn = cp.asarray(np.asarray(nonces, dtype=np.uint32).reshape(rows, 3))
    _fn("chacha20_rows")(_grid(rows * blocks), (THREADS,),
                         (out, key, nn, np.uint32(counter0), np.int64(blocks), np.int64(rows)))
    return out


def encryption_noise(sampler, n, eta, qc, message=None, reject=None):
    """(3, L, N) uint32 residues mod the primes of the column qc: v, e0 + message, e1 of a
    public-key encryption, the sampler's next three draws (kernel encryption_noise)."""
    from ..ckks.sampling import TERNARY_REJECT

    cp = _cp()
    key, label, draw0 = sampler.next_draws(3)
    limbs = int(qc.shape[0])
    out = cp.empty((3, limbs, n), dtype=cp.uint32)
    msg = None if message is None else cp.ascontiguousarray(cp.asarray(message, dtype=cp.int64))
    _fn("encryption_noise")(
        _grid(n // 16), (THREADS,),
        (out, cp.asarray(np.asarray(key, dtype=np.uint32)), np.uint32(label[0]), np.uint32(label[1]),
         np.uint32(draw0), _null(msg), cp.ascontiguousarray(qc.ravel()),
         cp.ascontiguousarray(_mu_col(qc).ravel()), np.int32(limbs), np.int32(n.bit_length() - 1),
         np.int32(eta), np.uint32(TERNARY_REJECT if reject is None else reject)))
    return out
