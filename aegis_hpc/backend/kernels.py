"""CUDA kernels for the CKKS hot spots, compiled once per process through cupy.RawModule.

Layout contract (the same as the numpy reference in aegis_hpc.ckks): residues
are stored as uint64 words holding values below q < 2^31, limbs are rows of a
C-contiguous (..., limbs, N) array. Inside the kernels everything that fits is
32-bit: NTT butterflies use Shoup multiplication with 32-bit precomputed
quotients (one __umulhi, no division); sums of products use 64-bit lazy
accumulation (a product is < 2^62, so four fit before one Barrett reduction).
Every kernel returns exactly the fully reduced value the numpy reference
returns, so tests/gpu compare them bit for bit.

The numpy code in aegis_hpc.ckks is the reference; these functions are only
reached from its `if ring._gpu` hooks.
"""

from __future__ import annotations

import math

import numpy as np

_SRC = r"""
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

__device__ __forceinline__ u32 shoup_mul(u32 a, u32 w, u32 ws, u32 q) {
    u32 hi = __umulhi(a, ws);
    u32 r = a * w - hi * q;            /* true value in [0, 2q), exact mod 2^32 */
    return r >= q ? r - q : r;
}
__device__ __forceinline__ u32 add_q(u32 a, u32 b, u32 q) { u32 s = a + b; return s >= q ? s - q : s; }
__device__ __forceinline__ u32 sub_q(u32 a, u32 b, u32 q) { u32 s = a + q - b; return s >= q ? s - q : s; }
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
   stages stay inside one chunk and run in shared memory ("smem"). Rows may be a
   selection of an array's rows (rsel: row indices, null for all) so a ModUp can
   skip the rows it copies; storage is 32- or 64-bit words (Ti, To), arithmetic
   is 32-bit Shoup throughout. */
__device__ __forceinline__ size_t row_off(const int* rsel, long long r, int logn) {
    return (size_t)(rsel ? rsel[r] : r) << logn;
}

/* A row's prime and twiddle tables, and where this thread's column (top) or this
   block's chunk (smem) starts in the array. */
struct RowPart { int p; u32 q; size_t off; const u32* w; const u32* ws; };
__device__ __forceinline__ RowPart row_part(long long r, size_t within, const int* rsel, const int* prow,
                                            const u32* tw, const u32* twsh, const u32* qs, int logn) {
    RowPart x;
    x.p = prow[r];
    x.q = qs[x.p];
    x.off = row_off(rsel, r, logn) + within;
    x.w = tw + ((size_t)x.p << logn);
    x.ws = twsh + ((size_t)x.p << logn);
    return x;
}
/* column k of row r for thread tid of a top pass over `rows` rows; false past the end */
__device__ __forceinline__ bool column_of(RowPart& x, const int* rsel, const int* prow, const u32* tw,
                                          const u32* twsh, const u32* qs, int logn, int logc, long long rows) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (rows << logc)) return false;
    x = row_part(tid >> logc, (size_t)(tid & ((1 << logc) - 1)), rsel, prow, tw, twsh, qs, logn);
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
/* this block's row and chunk (index c within its row) */
__device__ __forceinline__ RowPart chunk_of(int& c, const int* rsel, const int* prow, const u32* tw,
                                            const u32* twsh, const u32* qs, int logn, int logc) {
    int chunks = 1 << (logn - logc);
    long long r = blockIdx.x / chunks;
    c = (int)(blockIdx.x - r * chunks);
    return row_part(r, (size_t)c << logc, rsel, prow, tw, twsh, qs, logn);
}

/* forward (Cooley-Tukey, bit-reversed output): stages m = 1 .. CH/2 */
template <typename Ti, typename To, int LOGCH>
__global__ void ntt_fwd_top(const Ti* src, To* dst, const int* rsel, const int* prow, const u32* psi,
                            const u32* psish, const u32* qs, int logn, long long rows) {
    const int CH = 1 << LOGCH;
    int logc = logn - LOGCH;
    RowPart x;
    if (!column_of(x, rsel, prow, psi, psish, qs, logn, logc, rows)) return;
    const u32 q = x.q;
    const size_t off = x.off;
    const u32 *w = x.w, *ws = x.ws;
    u32 v[CH];
#pragma unroll
    for (int i = 0; i < CH; ++i) v[i] = (u32)src[off + ((size_t)i << logc)];
#pragma unroll
    for (int s = 0; s < LOGCH; ++s) {
        const int m = 1 << s, span = CH >> (s + 1);   /* butterfly half-span t = span * C */
#pragma unroll
        for (int g = 0; g < m; ++g) {
            u32 wv = w[m + g], wsv = ws[m + g];
#pragma unroll
            for (int kk = 0; kk < span; ++kk) {
                int i0 = g * 2 * span + kk;
                u32 lo = v[i0], t = shoup_mul(v[i0 + span], wv, wsv, q);
                v[i0] = add_q(lo, t, q);
                v[i0 + span] = sub_q(lo, t, q);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < CH; ++i) dst[off + ((size_t)i << logc)] = (To)v[i];
}

/* one C-element chunk of one row per block, stages m = N/C .. N/2 (bits logc-1 .. 0 of
   the butterfly span); the first round's positions k << (logc-3) | j are coalesced, so it
   reads device memory directly; the last round's (8 j + k) go out through shared memory */
template <typename Ti, typename To>
__global__ void ntt_fwd_smem(const Ti* src, To* dst, const int* rsel, const int* prow, const u32* psi,
                             const u32* psish, const u32* qs, int logn, int logc) {
    extern __shared__ u32 s[];
    const int j = threadIdx.x, C = 1 << logc;
    int c;
    RowPart x = chunk_of(c, rsel, prow, psi, psish, qs, logn, logc);
    const u32 q = x.q;
    const u32 *w = x.w, *ws = x.ws;
    const int cbase = c << logc;
    u32 v[8];
    for (int hi = logc - 1; hi >= 0;) {
        const int nb = hi >= 2 ? 3 : hi + 1, lo = hi >= 2 ? hi - 2 : 0;
        if (hi == logc - 1) {
#pragma unroll
            for (int k = 0; k < 8; ++k) v[k] = (u32)src[x.off + round_pos(j, k, lo)];
        } else {
            __syncthreads();
#pragma unroll
            for (int k = 0; k < 8; ++k) v[k] = s[padded(round_pos(j, k, lo))];
        }
#pragma unroll
        for (int kb = 2; kb >= 0; --kb) {
            const int b = lo + kb;
            if (b > hi || b <= hi - nb) continue;
            const int sh = b + 1, m = 1 << (logn - sh);
            /* the k that differ only below bit kb share a butterfly group: one twiddle load */
#pragma unroll
            for (int k0 = 0; k0 < 8; k0 += 2 << kb) {
                const int g = m + ((cbase + round_pos(j, k0, lo)) >> sh);
                const u32 wv = w[g], wsv = ws[g];
#pragma unroll
                for (int k = k0; k < k0 + (1 << kb); ++k) {
                    u32 a = v[k], t = shoup_mul(v[k | (1 << kb)], wv, wsv, q);
                    v[k] = add_q(a, t, q);
                    v[k | (1 << kb)] = sub_q(a, t, q);
                }
            }
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) s[padded(round_pos(j, k, lo))] = v[k];
        hi -= nb;
    }
    __syncthreads();
    for (int i = j; i < C; i += blockDim.x) dst[x.off + i] = (To)s[padded(i)];
}

/* inverse (Gentleman-Sande): span bits 0 .. logc-1 in shared memory, N^-1 folded in when
   they are all the stages; the chunk comes in through shared memory (the first round's
   positions 8 j + k are not coalesced), the last round's go out directly */
template <typename Ti, typename To>
__global__ void intt_smem(const Ti* src, To* dst, const int* rsel, const int* prow, const u32* ipsi,
                          const u32* ipsish, const u32* qs, const u32* ninv, const u32* ninvsh,
                          int logn, int logc, int scale) {
    extern __shared__ u32 s[];
    const int j = threadIdx.x, C = 1 << logc;
    int c;
    RowPart x = chunk_of(c, rsel, prow, ipsi, ipsish, qs, logn, logc);
    const u32 q = x.q;
    const u32 *w = x.w, *ws = x.ws;
    const int cbase = c << logc;
    for (int i = j; i < C; i += blockDim.x) s[padded(i)] = (u32)src[x.off + i];
    u32 v[8];
    for (int b0 = 0; b0 < logc;) {
        const int nb = min(3, logc - b0), lo = min(b0, logc - 3);
        __syncthreads();
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = s[padded(round_pos(j, k, lo))];
#pragma unroll
        for (int kb = 0; kb < 3; ++kb) {
            const int b = lo + kb;
            if (b < b0 || b >= b0 + nb) continue;
            const int sh = b + 1, h = 1 << (logn - sh);
#pragma unroll
            for (int k0 = 0; k0 < 8; k0 += 2 << kb) {
                const int g = h + ((cbase + round_pos(j, k0, lo)) >> sh);
                const u32 wv = w[g], wsv = ws[g];
#pragma unroll
                for (int k = k0; k < k0 + (1 << kb); ++k) {
                    u32 a = v[k], b1 = v[k | (1 << kb)];
                    v[k] = add_q(a, b1, q);
                    v[k | (1 << kb)] = shoup_mul(sub_q(a, b1, q), wv, wsv, q);
                }
            }
        }
        b0 += nb;
        if (b0 < logc) {
#pragma unroll
            for (int k = 0; k < 8; ++k) s[padded(round_pos(j, k, lo))] = v[k];
        } else {
            u32 ni = ninv[x.p], nis = ninvsh[x.p];
#pragma unroll
            for (int k = 0; k < 8; ++k)
                dst[x.off + round_pos(j, k, lo)] = (To)(scale ? shoup_mul(v[k], ni, nis, q) : v[k]);
        }
    }
}

/* inverse, stages t = C .. N/2 (columns in registers), then N^-1; in place */
template <typename T, int LOGCH>
__global__ void intt_top(T* x, const int* rsel, const int* prow, const u32* ipsi, const u32* ipsish,
                         const u32* qs, const u32* ninv, const u32* ninvsh, int logn, long long rows) {
    const int CH = 1 << LOGCH;
    int logc = logn - LOGCH;
    RowPart xr;
    if (!column_of(xr, rsel, prow, ipsi, ipsish, qs, logn, logc, rows)) return;
    const int p = xr.p;
    const u32 q = xr.q;
    const size_t off = xr.off;
    const u32 *w = xr.w, *ws = xr.ws;
    u32 v[CH];
#pragma unroll
    for (int i = 0; i < CH; ++i) v[i] = (u32)x[off + ((size_t)i << logc)];
#pragma unroll
    for (int s = 0; s < LOGCH; ++s) {
        const int span = 1 << s, h = CH >> (s + 1);   /* half-span t = span * C, h = N / 2t groups */
#pragma unroll
        for (int g = 0; g < h; ++g) {
            u32 wv = w[h + g], wsv = ws[h + g];
#pragma unroll
            for (int kk = 0; kk < span; ++kk) {
                int i0 = g * 2 * span + kk;
                u32 lo = v[i0], hi = v[i0 + span];
                v[i0] = add_q(lo, hi, q);
                v[i0 + span] = shoup_mul(sub_q(lo, hi, q), wv, wsv, q);
            }
        }
    }
    u32 ni = ninv[p], nis = ninvsh[p];
#pragma unroll
    for (int i = 0; i < CH; ++i) x[off + ((size_t)i << logc)] = (T)shoup_mul(v[i], ni, nis, q);
}

/* ---- key switching: sum_j ext_j[perm] * key_j, automorphism fused as a gather */
template <typename TE>
__global__ void ks_inner(const TE* ext, const u32* kb, const u32* ka, const i64* perm,
                         const u64* qs, const u64* mus, u64* out, int digits, int rows,
                         int logn, long long ext_dstride, long long key_dstride) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int N = 1 << logn;
    if (tid >= (long long)rows * N) return;
    int r = (int)(tid >> logn);
    int n = (int)(tid & (N - 1));
    int src = perm ? (int)perm[n] : n;
    u64 q = qs[r], mu = mus[r];
    u64 acc0 = 0, acc1 = 0;
    int pending = 0;
    const TE* e_ = ext + (size_t)r * N + src;
    size_t koff = (size_t)r * N + n;
    for (int j = 0; j < digits; ++j) {
        u64 e = (u64)e_[(size_t)j * ext_dstride];
        acc0 += mul32(e, kb[(size_t)j * key_dstride + koff]);
        acc1 += mul32(e, ka[(size_t)j * key_dstride + koff]);
        if (++pending == 4) { acc0 = barrett(acc0, q, mu); acc1 = barrett(acc1, q, mu); pending = 1; }
    }
    out[(size_t)r * N + n] = barrett(acc0, q, mu);
    out[(size_t)rows * N + (size_t)r * N + n] = barrett(acc1, q, mu);
}

/* ---- sum_t ct_t * pt_t over the first `limbs` rows of both polynomials, one pass:
   a linear transform's inner sums and the bootstrap's DFT stages. A compact plaintext
   (run 2^run_log) keeps one value per run of equal NTT values. */
template <typename TP>
__global__ void mul_plain_sum(const u64* const* cts, const TP* const* pts, const int* run_log,
                              const long long* ct_poly_stride, int terms, u64* out, const u64* qs,
                              const u64* mus, int limbs, int logn) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int N = 1 << logn;
    if (tid >= (long long)limbs * N) return;
    int r = (int)(tid >> logn);
    int n = (int)(tid & (N - 1));
    u64 q = qs[r], mu = mus[r];
    u64 acc0 = 0, acc1 = 0;
    int pending = 0;
    size_t off = (size_t)r * N + n;
    for (int t = 0; t < terms; ++t) {
        int rl = run_log[t];
        u64 w = (u64)pts[t][((size_t)r << (logn - rl)) + (n >> rl)];
        const u64* c = cts[t];
        acc0 += mul32(c[off], w);
        acc1 += mul32(c[(size_t)ct_poly_stride[t] + off], w);
        if (++pending == 4) { acc0 = barrett(acc0, q, mu); acc1 = barrett(acc1, q, mu); pending = 1; }
    }
    out[off] = barrett(acc0, q, mu);
    out[(size_t)limbs * N + off] = barrett(acc1, q, mu);
}

/* ---- fast basis conversion A -> B, one thread per (batch, coefficient) ------ */
#define MAX_SRC 64
extern "C" __global__ void basis_convert(const u64* x, u64* y, const u64* src_q, const u64* src_mu,
                                         const u64* hat_inv, const u64* dst_q, const u64* dst_mu,
                                         const u64* hat_mod, int n_a, int n_b, int logn,
                                         long long batch) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int N = 1 << logn;
    if (tid >= batch * N) return;
    long long b = tid >> logn;
    int n = (int)(tid & (N - 1));
    u64 t[MAX_SRC];
    const u64* xb = x + (size_t)b * n_a * N + n;
    for (int i = 0; i < n_a; ++i) t[i] = barrett(mul32(xb[(size_t)i * N], hat_inv[i]), src_q[i], src_mu[i]);
    u64* yb = y + (size_t)b * n_b * N + n;
    for (int j = 0; j < n_b; ++j) {
        u64 q = dst_q[j], mu = dst_mu[j];
        const u64* hm = hat_mod + (size_t)j * n_a;
        u64 acc = 0;
        int pending = 0;
        for (int i = 0; i < n_a; ++i) {
            acc += mul32(t[i], hm[i]);
            if (++pending == 4) { acc = barrett(acc, q, mu); pending = 1; }
        }
        yb[(size_t)j * N] = barrett(acc, q, mu);
    }
}

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

/* ---- ModUp of every digit in one pass: rows of the digit copy the NTT-form input,
   the others get the fast basis conversion of the digit (then one NTT over those rows
   only); 32-bit words out, the largest array of a key switch. A >= the longest digit. */
template <int A>
__global__ void modup_convert(const u64* coeff, const u64* d_ntt, u32* out, const int* digit_start,
                              const int* digit_len, const u64* hat_inv, const u64* src_q,
                              const u64* src_mu, const u64* hat_mod, const u64* row_q,
                              const u64* row_mu, const int* row_limb, int rows, int maxa,
                              int logn, int digits, int row_chunk) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int N = 1 << logn;
    int chunks = (rows + row_chunk - 1) / row_chunk;
    if (tid >= (long long)digits * chunks * N) return;
    int n = (int)(tid & (N - 1));
    long long jc = tid >> logn;
    int j = (int)(jc / chunks);
    int r0 = (int)(jc - (long long)j * chunks) * row_chunk;
    int r1 = min(rows, r0 + row_chunk);
    int s = digit_start[j], len = digit_len[j];
    u64 t[A];
#pragma unroll
    for (int i = 0; i < A; ++i) {
        int c = j * maxa + i;
        t[i] = i < len ? barrett(mul32(coeff[(size_t)(s + i) * N + n], hat_inv[c]), src_q[c], src_mu[c]) : 0;
    }
    u32* o = out + (size_t)j * rows * N + n;
    for (int r = r0; r < r1; ++r) {
        int limb = row_limb[r];
        u64 v;
        if (limb >= s && limb < s + len) {
            v = d_ntt[(size_t)limb * N + n];
        } else {
            v = dot_mod<A>(t, hat_mod + ((size_t)j * rows + r) * maxa, len, row_q[r], row_mu[r]);
        }
        o[(size_t)r * N] = (u32)v;
    }
}

/* ---- ModDown's conversion P -> Q_l with the centring folded in (keyswitch._centre):
   t_i = [x_i (P/p_i)^-1]_{p_i}; v = round(sum_i t_i / p_i) in the reference's float64
   order; out_j = (sum_i t_i (P/p_i) - v P) mod q_j. A >= n_p. */
template <int A>
__global__ void moddown_convert(const u64* pc, u64* out, const u64* p_q, const u64* p_mu,
                                const u64* hat_inv, const u64* q_q, const u64* q_mu,
                                const u64* hat_mod, const u64* neg_p, int n_p, int limbs,
                                int logn, long long polys) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int N = 1 << logn;
    if (tid >= polys * N) return;
    long long c = tid >> logn;
    int n = (int)(tid & (N - 1));
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
    u64* o = out + (size_t)c * limbs * N + n;
    for (int j = 0; j < limbs; ++j) {
        u64 q = q_q[j];
        u64 s = dot_mod<A>(t, hat_mod + (size_t)j * n_p, n_p, q, q_mu[j]) + neg_p[(size_t)j * (n_p + 1) + v];
        o[(size_t)j * N] = s >= q ? s - q : s;
    }
}

/* ---- the last step of ModDown and rescale, with what follows them fused in:
   out_c = ((a_c + q - b_c) * inv + add_c[perm]) mod q for each polynomial c, where a_c
   is rows row0 .. row0+limbs of a's polynomial c (poly_rows rows apart: ModDown skips
   the P rows, rescale the dropped limbs), and add_c (rows N apart, null for none) is
   the rest of the operation's result: a rotation's gathered c0, a product's d0 and d1 */
extern "C" __global__ void scale_down_add(const u64* a, const u64* b, u64* out, const u64* inv, const u64* qs,
                                          const u64* mus, const u64* add0, const u64* add1, const i64* perm,
                                          int row0, int poly_rows, int limbs, int logn, long long polys) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int N = 1 << logn;
    long long per_poly = (long long)limbs << logn;
    if (tid >= polys * per_poly) return;
    long long c = tid / per_poly;
    long long rn = tid - c * per_poly;
    int r = (int)(rn >> logn), n = (int)(rn & (N - 1));
    u64 q = qs[r];
    u64 x = a[((size_t)c * poly_rows + row0 + r) * N + n] + q - b[tid];
    u64 v = barrett(mul32(x, inv[r]), q, mus[r]);
    const u64* ad = c == 0 ? add0 : (c == 1 ? add1 : 0);
    if (ad) {
        v += ad[(size_t)r * N + (perm ? (int)perm[n] : n)];
        v = v >= q ? v - q : v;
    }
    out[tid] = v;
}

/* ---- rescale: centred CRT lift of the dropped primes, reduced mod each kept prime */
extern "C" __global__ void rescale_lift(const u64* top, u64* res, const u64* keep_q, const u64* keep_mu,
                                        int k, u64 q0, u64 q1, u64 inv01, u64 mu1, int keep,
                                        int logn, long long polys) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int N = 1 << logn;
    if (tid >= polys * N) return;
    long long c = tid >> logn;
    int n = (int)(tid & (N - 1));
    const u64* tp = top + (size_t)c * k * N + n;
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
    int neg = v > big / 2;
    u64 mag = neg ? big - v : v;       /* |centred value| */
    u64* rp = res + (size_t)c * keep * N + n;
    for (int i = 0; i < keep; ++i) {
        u64 q = keep_q[i];
        u64 m = barrett(mag, q, keep_mu[i]);
        rp[(size_t)i * N] = (neg && m) ? q - m : m;
    }
}
"""

_ELEMENTWISE = {
    "add_mod": ("uint64 a, uint64 b, uint64 q", "uint64 out",
                "unsigned long long s = a + b; out = s >= q ? s - q : s"),
    # B: any unsigned word, so a compact plaintext's uint32 rows need no widened copy
    "mul_mod": ("uint64 a, B b, uint64 q, uint64 mu", "uint64 out", "out = barrett_(mul32_(a, b), q, mu)"),
    "sub_mod": ("uint64 a, uint64 b, uint64 q", "uint64 out", "out = a >= b ? a - b : a + q - b"),
    # a ciphertext plus a plaintext or constant b (broadcast over both polynomials) on its
    # first polynomial only: flat indices below `first` are that polynomial's
    "add_first": ("uint64 a, B b, uint64 q, int64 first, int32 negate", "uint64 out",
                  "if (i < first) { unsigned long long v = negate ? (b ? q - (unsigned long long)b : 0) : b;"
                  " unsigned long long s = a + v; out = s >= q ? s - q : s; } else { out = a; }"),
    "tensor": ("uint64 a0, uint64 a1, uint64 b0, uint64 b1, uint64 q, uint64 mu",
               "uint64 d0, uint64 d1, uint64 d2",
               "d0 = barrett_(mul32_(a0, b0), q, mu);"
               "d1 = barrett_(barrett_(mul32_(a0, b1), q, mu) + barrett_(mul32_(a1, b0), q, mu), q, mu);"
               "d2 = barrett_(mul32_(a1, b1), q, mu)"),
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
extern "C" __global__ void chacha20_rows(u32* out, const u32* key, const u32* nonces,
                                         u32 counter0, long long blocks, long long rows) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= rows * blocks) return;
    long long r = tid / blocks, b = tid - r * blocks;
    u32 s[16], x[16];
    s[0] = 0x61707865u; s[1] = 0x3320646eu; s[2] = 0x79622d32u; s[3] = 0x6b206574u;
    for (int i = 0; i < 8; ++i) s[4 + i] = key[i];
    s[12] = counter0 + (u32)b;
    s[13] = nonces[3 * r]; s[14] = nonces[3 * r + 1]; s[15] = nonces[3 * r + 2];
    for (int i = 0; i < 16; ++i) x[i] = s[i];
    for (int i = 0; i < 10; ++i) {
        QR(x[0], x[4], x[8],  x[12]) QR(x[1], x[5], x[9],  x[13])
        QR(x[2], x[6], x[10], x[14]) QR(x[3], x[7], x[11], x[15])
        QR(x[0], x[5], x[10], x[15]) QR(x[1], x[6], x[11], x[12])
        QR(x[2], x[7], x[8],  x[13]) QR(x[3], x[4], x[9],  x[14])
    }
    u32* o = out + (size_t)r * blocks * 16 + (size_t)b * 16;
    for (int i = 0; i < 16; ++i) o[i] = x[i] + s[i];
}
"""

_state: dict = {}
SMEM_LOG = 12  # 4096 residues (16 KiB) per block for the in-shared-memory stages
THREADS = 256
# rows of one ModUp digit per thread: the digit's scaled residues are recomputed per chunk,
# which buys digits x rows/chunk-fold parallelism for a few extra Barrett reductions
MODUP_ROW_CHUNK = 16
# compiled source-limb bounds of the conversion kernels (a digit's limbs, |P|): each is
# an unrolled instantiation; a count takes the smallest bound that holds it
CONVERT_BOUNDS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32)


def _cp():
    import cupy

    return cupy


_WORDS = ("u32", "u64")
MAX_TOP_LOG = 5  # the register-resident stages: N / 2^SMEM_LOG <= 32 columns (N <= 2^17)


def _templates():
    names = []
    for ti in _WORDS:
        for to in _WORDS:
            names += [f"ntt_fwd_smem<{ti}, {to}>", f"intt_smem<{ti}, {to}>"]
            names += [f"ntt_fwd_top<{ti}, {to}, {k}>" for k in range(1, MAX_TOP_LOG + 1)]
        names += [f"intt_top<{ti}, {k}>" for k in range(1, MAX_TOP_LOG + 1)]
        names += [f"ks_inner<{ti}>", f"mul_plain_sum<{ti}>"]
    names += [f"modup_convert<{a}>" for a in CONVERT_BOUNDS] + [f"moddown_convert<{a}>" for a in CONVERT_BOUNDS]
    return names


def _convert_bound(count, what):
    """The smallest compiled source-count bound of the conversion kernels that holds `count`."""
    for a in CONVERT_BOUNDS:
        if count <= a:
            return a
    raise ValueError(f"{what}: {count} source limbs; the conversion kernels take at most {CONVERT_BOUNDS[-1]}")


def _module():
    mod = _state.get("module")
    if mod is None:
        cp = _cp()
        mod = cp.RawModule(code=_SRC, options=("--std=c++14",), name_expressions=_templates())
        _state["module"] = mod
        _state["fn"] = {}
    return mod


def _fn(name):
    _module()
    f = _state["fn"].get(name)
    if f is None:
        f = _state["module"].get_function(name)
        _state["fn"][name] = f
    return f


def _word(a):
    """Template argument for an array's storage word."""
    if a.dtype == np.uint32:
        return "u32"
    if a.dtype == np.uint64:
        return "u64"
    raise TypeError(f"residues stored as {a.dtype}; expected uint32 or uint64")


def _ew(name):
    k = _state.setdefault("ew", {}).get(name)
    if k is None:
        cp = _cp()
        ins, outs, body = _ELEMENTWISE[name]
        k = cp.ElementwiseKernel(ins, outs, body, f"aegis_{name}", preamble=_PREAMBLE)
        _state["ew"][name] = k
    return k


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
    """32-bit twiddle and Shoup tables of a RingTables on the device (built once per ring)."""
    d = getattr(ring, "_kernel_tables", None)
    if d is None:
        cp = _cp()

        def u32(a):
            return cp.asarray(cp.asnumpy(a).astype(np.uint32))

        q = np.array(ring.primes, dtype=np.uint64)
        d = {
            "psi": u32(ring._psi), "psish": u32(ring._psi_sh),
            "ipsi": u32(ring._ipsi), "ipsish": u32(ring._ipsi_sh),
            "q": cp.asarray(q.astype(np.uint32)),
            "ninv": u32(ring._ninv), "ninvsh": u32(ring._ninv_sh),
            "prow": {},
        }
        ring._kernel_tables = d
    return d


def _prow(ring, idx, rows):
    d = _ring_dev(ring)
    key = (tuple(idx), rows)
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
        prow = _prow(ring, list(idx), rows) if rows else None
    if inplace:
        dst = src
    else:
        dst = cp.empty(src.shape, dtype=out_dtype or src.dtype)
    return src, dst, rows, sel, prow, min(SMEM_LOG, ring.log_n)


def _smem_bytes(logc):
    """A chunk of 2^logc 32-bit residues with one pad word per 32 (round_pos/padded)."""
    return 4 * ((1 << logc) + (1 << logc) // 32)


def _null(p):
    return p if p is not None else np.uint64(0)


@_host_in_host_out
def ntt(ring, a, idx, inplace=False, out_dtype=None, rows_sel=None):
    """Forward negacyclic NTT of (..., L, N), limbs mod primes `idx`; bit-identical to
    ring._ntt_ref. Two passes over memory: the top stages column-wise in registers,
    then the rest chunk-wise in shared memory."""
    src, dst, rows, sel, prow, logc = _transform_io(ring, a, idx, inplace, out_dtype, rows_sel)
    if rows == 0:
        return dst
    d = _ring_dev(ring)
    logn = ring.log_n
    top = logn - logc
    if top:
        _fn(f"ntt_fwd_top<{_word(src)}, {_word(dst)}, {top}>")(
            _grid(rows << logc), (THREADS,),
            (src, dst, _null(sel), prow, d["psi"], d["psish"], d["q"], np.int32(logn), np.int64(rows)))
        src = dst
    _fn(f"ntt_fwd_smem<{_word(src)}, {_word(dst)}>")(
        (rows << top,), (1 << (logc - 3),),
        (src, dst, _null(sel), prow, d["psi"], d["psish"], d["q"], np.int32(logn), np.int32(logc)),
        shared_mem=_smem_bytes(logc))
    return dst


@_host_in_host_out
def intt(ring, a, idx, inplace=False, out_dtype=None, rows_sel=None):
    """Inverse of ntt (N^-1 included), bit-identical to ring._intt_ref."""
    src, dst, rows, sel, prow, logc = _transform_io(ring, a, idx, inplace, out_dtype, rows_sel)
    if rows == 0:
        return dst
    d = _ring_dev(ring)
    logn = ring.log_n
    top = logn - logc
    _fn(f"intt_smem<{_word(src)}, {_word(dst)}>")(
        (rows << top,), (1 << (logc - 3),),
        (src, dst, _null(sel), prow, d["ipsi"], d["ipsish"], d["q"], d["ninv"], d["ninvsh"],
         np.int32(logn), np.int32(logc), np.int32(0 if top else 1)),
        shared_mem=_smem_bytes(logc))
    if top:
        _fn(f"intt_top<{_word(dst)}, {top}>")(
            _grid(rows << logc), (THREADS,),
            (dst, _null(sel), prow, d["ipsi"], d["ipsish"], d["q"], d["ninv"], d["ninvsh"],
             np.int32(logn), np.int64(rows)))
    return dst


# ---------------------------------------------------------------- key switching
def ks_inner(ext, key, qc, rows, perm=None):
    """(2, rows, N): sum over digits j of ext[j][:, perm] * (key.b[j], key.a[j]) mod q (rows P then Q)."""
    cp = _cp()
    ext = cp.ascontiguousarray(cp.asarray(ext))
    kb = cp.ascontiguousarray(cp.asarray(key.b), dtype=np.uint32)
    ka = cp.ascontiguousarray(cp.asarray(key.a), dtype=np.uint32)
    digits, _, n = ext.shape
    logn = n.bit_length() - 1
    out = cp.empty((2, rows, n), dtype=np.uint64)
    q = cp.ascontiguousarray(qc.ravel())
    mu = _mu_col(qc).ravel()
    if perm is not None:
        perm = cp.ascontiguousarray(perm, dtype=np.int64)
    _fn(f"ks_inner<{_word(ext)}>")(_grid(rows * n), (THREADS,),
                    (ext, kb, ka, perm if perm is not None else np.uint64(0), q, cp.ascontiguousarray(mu),
                     out, np.int32(digits), np.int32(rows), np.int32(logn),
                     np.int64(ext.shape[1] * n), np.int64(kb.shape[1] * n)))
    return out


def mul_plain_sum(ct_rows, pt_rows, runs, qc):
    """sum_t ct_t * pt_t mod q -> (2, limbs, N) uint64, None where the operands do not fit
    the kernel (the caller then takes the reference path).

    ct_rows: (2, >= limbs, N) uint64 arrays, C-contiguous per polynomial; pt_rows:
    (limbs, N / run) arrays of one word size, C-contiguous; runs: their runs (powers of 2)."""
    cp = _cp()
    limbs = int(qc.shape[0])
    n = int(ct_rows[0].shape[-1])
    if (len({p.dtype for p in pt_rows}) != 1 or any(c.dtype != np.uint64 or c.strides[-1] != 8
                                                     or c.strides[-2] != 8 * n for c in ct_rows)
            or any(not p.flags.c_contiguous or p.shape[0] < limbs for p in pt_rows)):
        return None
    out = cp.empty((2, limbs, n), dtype=np.uint64)
    ptrs = cp.asarray(np.array([c.data.ptr for c in ct_rows], dtype=np.uint64))
    pptrs = cp.asarray(np.array([p.data.ptr for p in pt_rows], dtype=np.uint64))
    run_log = cp.asarray(np.array([int(r).bit_length() - 1 for r in runs], dtype=np.int32))
    stride = cp.asarray(np.array([c.strides[0] // 8 for c in ct_rows], dtype=np.int64))
    q = cp.ascontiguousarray(qc.ravel())
    _fn(f"mul_plain_sum<{_word(pt_rows[0])}>")(
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


def add_first(data, b, qc, negate=False):
    """(2, L, N) ciphertext data with b (L, N) or (L, 1) added to (subtracted from)
    polynomial 0 mod q, polynomial 1 copied: one pass instead of copy, sum, store."""
    first = data[0].size
    return _ew("add_first")(data, b, qc, np.int64(first), np.int32(1 if negate else 0))


def tensor(a, b, qc):
    """Degree-2 product (d0, d1, d2) of two ciphertexts' (2, L, N) data, one pass."""
    return _ew("tensor")(a[0], a[1], b[0], b[1], qc, _mu_col(qc))


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
    _fn("basis_convert")(_grid(batch * n), (THREADS,),
                         (x, y, k["src_q"], k["src_mu"], k["hat_inv"], k["dst_q"], k["dst_mu"],
                          k["hat_mod"], np.int32(n_a), np.int32(n_b), np.int32(n.bit_length() - 1),
                          np.int64(batch)))
    return y


def modup(ks, d, level):
    """KeySwitcher.modup on the device: INTT of d, one conversion kernel for all digits
    (a digit's own rows copy d), one NTT over the converted rows; 32-bit words."""
    cp = _cp()
    consts = _modup_consts(ks, level)
    ring = ks.ring
    limbs = ks.params.limbs_at(level)
    d = cp.ascontiguousarray(d, dtype=np.uint64)
    coeff = intt(ring, d, list(range(limbs)))
    digits, rows = consts["digits"], consts["rows"]
    n = ring.n
    out = cp.empty((digits, rows, n), dtype=np.uint32)
    chunk = MODUP_ROW_CHUNK
    chunks = -(-rows // chunk)
    _fn(f"modup_convert<{_convert_bound(consts['maxa'], 'ModUp digit')}>")(_grid(digits * chunks * n), (THREADS,),
                         (coeff, d, out, consts["start"], consts["len"], consts["hat_inv"], consts["src_q"],
                          consts["src_mu"], consts["hat_mod"], consts["row_q"], consts["row_mu"],
                          consts["row_limb"], np.int32(rows), np.int32(consts["maxa"]),
                          np.int32(ring.log_n), np.int32(digits), np.int32(chunk)))
    return ntt(ring, out, None, inplace=True, rows_sel=consts["converted"])


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
    src_q = np.full((len(digits), maxa), 3, dtype=np.uint64)  # padding: any modulus > 1 keeps mu finite
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
    c = {
        "digits": len(digits), "rows": rows, "maxa": maxa,
        "start": cp.asarray(np.array([dg.start for dg in digits], dtype=np.int32)),
        "len": cp.asarray(np.array([len(dg) for dg in digits], dtype=np.int32)),
        "hat_inv": cp.asarray(hat_inv), "src_q": cp.asarray(src_q), "src_mu": cp.asarray(_mu_of(src_q.ravel())),
        "hat_mod": cp.asarray(hat_mod), "row_q": cp.asarray(row_q), "row_mu": cp.asarray(_mu_of(row_q)),
        "row_limb": cp.asarray(row_limb),
        "converted": (cp.asarray(np.array(sel, dtype=np.int32)), cp.asarray(np.array(sel_prime, dtype=np.int32))),
    }
    cache[level] = c
    return c


def moddown(ks, acc, level, addend=None, perm=None):
    """KeySwitcher.moddown on the device: INTT of the P rows, one kernel for the
    conversion P -> Q_l with the centring, NTT, then (acc_Q - conv) * P^-1 (+ addend)."""
    cp = _cp()
    ring = ks.ring
    n_p = ks.n_p
    limbs = ks.params.limbs_at(level)
    q_idx = list(range(limbs))
    bound = _convert_bound(n_p, "ModDown")
    p_coeff = intt(ring, acc[..., :n_p, :], ks.p_idx)
    k = _converter_consts(ks._converter(("down", level), ks.p_idx, q_idx))
    n = ring.n
    polys = p_coeff.size // (n_p * n)
    conv = cp.empty(acc.shape[:-2] + (limbs, n), dtype=np.uint64)
    _fn(f"moddown_convert<{bound}>")(_grid(polys * n), (THREADS,),
                           (p_coeff, conv, k["src_q"], k["src_mu"], k["hat_inv"], k["dst_q"], k["dst_mu"],
                            k["hat_mod"], ks.neg_p_multiples(level), np.int32(n_p), np.int32(limbs),
                            np.int32(ring.log_n), np.int64(polys)))
    conv = ntt(ring, conv, q_idx, inplace=True)
    return scale_down_add(acc, n_p, conv, ks.p_inverse(level), ring.q_col(q_idx), addend, perm)


def scale_down_add(a, row0, b, inv, qc, addend=None, perm=None):
    """(..., limbs, N): (a[..., row0:row0+limbs, :] + q - b) * inv mod q, plus addend[c]
    (gathered by perm when given) on polynomial c where addend[c] is not None; a is
    C-contiguous (..., rows, N), b C-contiguous (..., limbs, N), inv a (limbs, 1) column."""
    cp = _cp()
    limbs, n = b.shape[-2], b.shape[-1]
    polys = b.size // (limbs * n)
    a = cp.ascontiguousarray(a)
    adds = [None, None]
    for c, x in enumerate(addend or ()):
        if x is not None:
            if x.shape[-2] < limbs or x.dtype != np.uint64 or not x.flags.c_contiguous:
                x = cp.ascontiguousarray(x[..., :limbs, :], dtype=np.uint64)
            adds[c] = x
    if perm is not None:
        perm = cp.ascontiguousarray(perm, dtype=np.int64)
    out = cp.empty(b.shape, dtype=np.uint64)
    q = cp.ascontiguousarray(qc.ravel())
    _fn("scale_down_add")(_grid(polys * limbs * n), (THREADS,),
                          (a, b, out, cp.ascontiguousarray(inv.ravel()), q, _mu_col(qc).ravel(),
                           _null(adds[0]), _null(adds[1]), _null(perm), np.int32(row0), np.int32(a.shape[-2]),
                           np.int32(limbs), np.int32(n.bit_length() - 1), np.int64(polys)))
    return out


# ---------------------------------------------------------------- rescale
def rescale(ring, data, keep, top_idx, top_q, qc, inv=None):
    """Rescale (2, limbs, N) NTT data by the primes top_q: INTT of the top limbs, centred lift,
    NTT over the kept limbs, (c - lift) * (prod top_q)^-1 — identical to Evaluator.rescale's numpy path."""
    cp = _cp()
    top = intt(ring, data[:, keep:], top_idx)
    k = len(top_q)
    if k not in (1, 2):
        raise ValueError("rescale by more than two primes at once is not supported")
    q0 = int(top_q[0])
    q1 = int(top_q[1]) if k == 2 else 1
    inv01 = pow(q0, -1, q1) if k == 2 else 0
    keep_q = _state.setdefault("keepq", {})
    key = tuple(ring.primes[:keep])
    consts = keep_q.get(key)
    if consts is None:
        qs = np.array(key, dtype=np.uint64)
        consts = (cp.asarray(qs), cp.asarray(_mu_of(qs)))
        keep_q[key] = consts
    n = ring.n
    polys = data.shape[0]
    res = cp.empty((polys, keep, n), dtype=np.uint64)
    _fn("rescale_lift")(_grid(polys * n), (THREADS,),
                        (top, res, consts[0], consts[1], np.int32(k), np.uint64(q0), np.uint64(q1),
                         np.uint64(inv01), np.uint64((1 << 64) // q1 if k == 2 else 0), np.int32(keep),
                         np.int32(ring.log_n), np.int64(polys)))
    res = ntt(ring, res, list(range(keep)), inplace=True)
    if inv is None:
        inv_cache = _state.setdefault("rescale_inv", {})
        ikey = (key, tuple(int(x) for x in top_q))
        inv = inv_cache.get(ikey)
        if inv is None:
            big = math.prod(int(x) for x in top_q)
            inv = cp.asarray(np.array([pow(big % q, -1, q) for q in key], dtype=np.uint64))[:, None]
            inv_cache[ikey] = inv
    return scale_down_add(data, 0, res, inv, qc)


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
