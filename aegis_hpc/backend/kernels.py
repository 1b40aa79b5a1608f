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
/* x mod q for any 64-bit x, q < 2^31, mu = floor(2^64 / q): the estimate is short by < 2 q */
__device__ __forceinline__ u64 barrett(u64 x, u64 q, u64 mu) {
    u64 r = x - __umul64hi(x, mu) * q;
    return r >= q ? r - q : r;
}

/* One butterfly lane of one limb row: 2^lane_log lanes per row, the row's prime
   and twiddle tables. Returns false for the padding threads of the last block. */
struct Lane { int j; int p; u32 q; u64* row; const u32* w; const u32* ws; };
__device__ __forceinline__ bool lane_of(Lane& L, u64* x, const int* prow, const u32* tw,
                                        const u32* twsh, const u32* qs, int logn, int lane_log,
                                        long long rows) {
    long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= (rows << lane_log)) return false;
    long long r = tid >> lane_log;
    size_t N = (size_t)1 << logn;
    L.j = (int)(tid & ((1 << lane_log) - 1));
    L.p = prow[r];
    L.q = qs[L.p];
    L.row = x + (size_t)r * N;
    L.w = tw + (size_t)L.p * N;
    L.ws = twsh + (size_t)L.p * N;
    return true;
}

/* One C-element chunk of one limb row, one block each, copied into shared memory
   (the stages whose butterflies stay inside a chunk run there). */
struct Chunk { int c; int p; u32 q; u64* base; const u32* w; const u32* ws; };
__device__ __forceinline__ Chunk chunk_load(u32* s, u64* x, const int* prow, const u32* tw,
                                            const u32* twsh, const u32* qs, int logn, int logc) {
    int N = 1 << logn, C = 1 << logc;
    int chunks = N >> logc;
    long long r = blockIdx.x / chunks;
    Chunk k;
    k.c = blockIdx.x - (int)(r * chunks);
    k.p = prow[r];
    k.q = qs[k.p];
    k.base = x + (size_t)r * N + (size_t)k.c * C;
    k.w = tw + (size_t)k.p * N;
    k.ws = twsh + (size_t)k.p * N;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s[i] = (u32)k.base[i];
    __syncthreads();
    return k;
}

/* ---- forward NTT (Cooley-Tukey, bit-reversed output) ------------------------ */
/* two stages (m, 2m) per pass while the butterfly span exceeds a shared-memory chunk */
extern "C" __global__ void ntt_fwd_r4(u64* x, const int* prow, const u32* psi, const u32* psish,
                                      const u32* qs, int logn, int m, long long rows) {
    Lane L;
    if (!lane_of(L, x, prow, psi, psish, qs, logn, logn - 2, rows)) return;
    int N = 1 << logn;
    int t = N / (2 * m);                 /* half-span of stage m */
    int h = t >> 1;
    int g = L.j / h, k = L.j - g * h;
    u32 q = L.q;
    u64* row = L.row;
    size_t a = (size_t)g * 2 * t + k;
    u32 va = (u32)row[a], vb = (u32)row[a + h], vc = (u32)row[a + t], vd = (u32)row[a + t + h];
    u32 w = L.w[m + g], ws = L.ws[m + g];
    u32 tc = shoup_mul(vc, w, ws, q), td = shoup_mul(vd, w, ws, q);
    u32 a1 = add_q(va, tc, q), c1 = sub_q(va, tc, q);
    u32 b1 = add_q(vb, td, q), d1 = sub_q(vb, td, q);
    u32 w2 = L.w[2 * m + 2 * g], ws2 = L.ws[2 * m + 2 * g];
    u32 w3 = L.w[2 * m + 2 * g + 1], ws3 = L.ws[2 * m + 2 * g + 1];
    u32 tb = shoup_mul(b1, w2, ws2, q), tdd = shoup_mul(d1, w3, ws3, q);
    row[a] = add_q(a1, tb, q);
    row[a + h] = sub_q(a1, tb, q);
    row[a + t] = add_q(c1, tdd, q);
    row[a + t + h] = sub_q(c1, tdd, q);
}

extern "C" __global__ void ntt_fwd_r2(u64* x, const int* prow, const u32* psi, const u32* psish,
                                      const u32* qs, int logn, int m, long long rows) {
    Lane L;
    if (!lane_of(L, x, prow, psi, psish, qs, logn, logn - 1, rows)) return;
    int t = (1 << logn) / (2 * m);
    int g = L.j / t, k = L.j - g * t;
    size_t i0 = (size_t)g * 2 * t + k;
    u32 lo = (u32)L.row[i0], v = shoup_mul((u32)L.row[i0 + t], L.w[m + g], L.ws[m + g], L.q);
    L.row[i0] = add_q(lo, v, L.q);
    L.row[i0 + t] = sub_q(lo, v, L.q);
}

/* the remaining stages (half-span <= C/2) of one C-element chunk, in shared memory */
extern "C" __global__ void ntt_fwd_smem(u64* x, const int* prow, const u32* psi, const u32* psish,
                                        const u32* qs, int logn, int logc) {
    extern __shared__ u32 s[];
    Chunk ck = chunk_load(s, x, prow, psi, psish, qs, logn, logc);
    int N = 1 << logn, C = 1 << logc;
    for (int m = N >> logc; m < N; m <<= 1) {
        int t = N / (2 * m);
        int groups_per_chunk = C / (2 * t);
        for (int j = threadIdx.x; j < C / 2; j += blockDim.x) {
            int g = j / t, k = j - g * t;
            int gg = ck.c * groups_per_chunk + g;
            int i0 = g * 2 * t + k;
            u32 lo = s[i0];
            u32 v = shoup_mul(s[i0 + t], ck.w[m + gg], ck.ws[m + gg], ck.q);
            s[i0] = add_q(lo, v, ck.q);
            s[i0 + t] = sub_q(lo, v, ck.q);
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < C; i += blockDim.x) ck.base[i] = s[i];
}

/* ---- inverse NTT (Gentleman-Sande), N^-1 folded into the last stage -------- */
extern "C" __global__ void intt_smem(u64* x, const int* prow, const u32* ipsi, const u32* ipsish,
                                     const u32* qs, const u32* ninv, const u32* ninvsh,
                                     int logn, int logc, int scale) {
    extern __shared__ u32 s[];
    Chunk ck = chunk_load(s, x, prow, ipsi, ipsish, qs, logn, logc);
    int N = 1 << logn, C = 1 << logc;
    for (int t = 1; t < C; t <<= 1) {
        int h = N / (2 * t);
        int groups_per_chunk = C / (2 * t);
        for (int j = threadIdx.x; j < C / 2; j += blockDim.x) {
            int g = j / t, k = j - g * t;
            int gg = ck.c * groups_per_chunk + g;
            int i0 = g * 2 * t + k;
            u32 lo = s[i0], hi = s[i0 + t];
            s[i0] = add_q(lo, hi, ck.q);
            s[i0 + t] = shoup_mul(sub_q(lo, hi, ck.q), ck.w[h + gg], ck.ws[h + gg], ck.q);
        }
        __syncthreads();
    }
    if (scale) {
        u32 ni = ninv[ck.p], nis = ninvsh[ck.p];
        for (int i = threadIdx.x; i < C; i += blockDim.x) ck.base[i] = shoup_mul(s[i], ni, nis, ck.q);
    } else {
        for (int i = threadIdx.x; i < C; i += blockDim.x) ck.base[i] = s[i];
    }
}

/* stages (h, t) then (h/2, 2t) in one pass */
extern "C" __global__ void intt_r4(u64* x, const int* prow, const u32* ipsi, const u32* ipsish,
                                   const u32* qs, const u32* ninv, const u32* ninvsh,
                                   int logn, int t, long long rows, int scale) {
    Lane L;
    if (!lane_of(L, x, prow, ipsi, ipsish, qs, logn, logn - 2, rows)) return;
    int h = (1 << logn) / (2 * t);
    int g2 = L.j / t, k = L.j - g2 * t;      /* group of stage h/2, span 4t */
    u32 q = L.q;
    u64* row = L.row;
    size_t a = (size_t)g2 * 4 * t + k;
    u32 va = (u32)row[a], vb = (u32)row[a + t], vc = (u32)row[a + 2 * t], vd = (u32)row[a + 3 * t];
    u32 a1 = add_q(va, vb, q);
    u32 b1 = shoup_mul(sub_q(va, vb, q), L.w[h + 2 * g2], L.ws[h + 2 * g2], q);
    u32 c1 = add_q(vc, vd, q);
    u32 d1 = shoup_mul(sub_q(vc, vd, q), L.w[h + 2 * g2 + 1], L.ws[h + 2 * g2 + 1], q);
    u32 w = L.w[h / 2 + g2], ws = L.ws[h / 2 + g2];
    u32 oa = add_q(a1, c1, q), oc = shoup_mul(sub_q(a1, c1, q), w, ws, q);
    u32 ob = add_q(b1, d1, q), od = shoup_mul(sub_q(b1, d1, q), w, ws, q);
    if (scale) {
        u32 ni = ninv[L.p], nis = ninvsh[L.p];
        oa = shoup_mul(oa, ni, nis, q); ob = shoup_mul(ob, ni, nis, q);
        oc = shoup_mul(oc, ni, nis, q); od = shoup_mul(od, ni, nis, q);
    }
    row[a] = oa; row[a + t] = ob; row[a + 2 * t] = oc; row[a + 3 * t] = od;
}

extern "C" __global__ void intt_r2(u64* x, const int* prow, const u32* ipsi, const u32* ipsish,
                                   const u32* qs, const u32* ninv, const u32* ninvsh,
                                   int logn, int t, long long rows, int scale) {
    Lane L;
    if (!lane_of(L, x, prow, ipsi, ipsish, qs, logn, logn - 1, rows)) return;
    int h = (1 << logn) / (2 * t);
    int g = L.j / t, k = L.j - g * t;
    u32 q = L.q;
    size_t i0 = (size_t)g * 2 * t + k;
    u32 lo = (u32)L.row[i0], hi = (u32)L.row[i0 + t];
    u32 o0 = add_q(lo, hi, q);
    u32 o1 = shoup_mul(sub_q(lo, hi, q), L.w[h + g], L.ws[h + g], q);
    if (scale) {
        o0 = shoup_mul(o0, ninv[L.p], ninvsh[L.p], q);
        o1 = shoup_mul(o1, ninv[L.p], ninvsh[L.p], q);
    }
    L.row[i0] = o0; L.row[i0 + t] = o1;
}

/* ---- key switching: sum_j ext_j[perm] * key_j, automorphism fused as a gather */
extern "C" __global__ void ks_inner(const u64* ext, const u32* kb, const u32* ka, const i64* perm,
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
    const u64* e_ = ext + (size_t)r * N + src;
    size_t koff = (size_t)r * N + n;
    for (int j = 0; j < digits; ++j) {
        u64 e = e_[(size_t)j * ext_dstride];
        acc0 += e * (u64)kb[(size_t)j * key_dstride + koff];
        acc1 += e * (u64)ka[(size_t)j * key_dstride + koff];
        if (++pending == 4) { acc0 = barrett(acc0, q, mu); acc1 = barrett(acc1, q, mu); pending = 1; }
    }
    out[(size_t)r * N + n] = barrett(acc0, q, mu);
    out[(size_t)rows * N + (size_t)r * N + n] = barrett(acc1, q, mu);
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
    for (int i = 0; i < n_a; ++i) t[i] = barrett(xb[(size_t)i * N] * hat_inv[i], src_q[i], src_mu[i]);
    u64* yb = y + (size_t)b * n_b * N + n;
    for (int j = 0; j < n_b; ++j) {
        u64 q = dst_q[j], mu = dst_mu[j];
        const u64* hm = hat_mod + (size_t)j * n_a;
        u64 acc = 0;
        int pending = 0;
        for (int i = 0; i < n_a; ++i) {
            acc += t[i] * hm[i];
            if (++pending == 4) { acc = barrett(acc, q, mu); pending = 1; }
        }
        yb[(size_t)j * N] = barrett(acc, q, mu);
    }
}

/* ---- ModUp of every digit in one pass: rows of the digit copy the input, the
   others get the fast basis conversion of the digit; all rows then go through one NTT */
extern "C" __global__ void modup_convert(const u64* coeff, u64* out, const int* digit_start,
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
    u64 t[MAX_SRC];
    for (int i = 0; i < len; ++i) {
        int c = j * maxa + i;
        t[i] = barrett(coeff[(size_t)(s + i) * N + n] * hat_inv[c], src_q[c], src_mu[c]);
    }
    u64* o = out + (size_t)j * rows * N + n;
    for (int r = r0; r < r1; ++r) {
        int limb = row_limb[r];
        u64 v;
        if (limb >= s && limb < s + len) {
            v = coeff[(size_t)limb * N + n];
        } else {
            u64 q = row_q[r], mu = row_mu[r];
            const u64* hm = hat_mod + ((size_t)j * rows + r) * maxa;
            u64 acc = 0;
            int pending = 0;
            for (int i = 0; i < len; ++i) {
                acc += t[i] * hm[i];
                if (++pending == 4) { acc = barrett(acc, q, mu); pending = 1; }
            }
            v = barrett(acc, q, mu);
        }
        o[(size_t)r * N] = v;
    }
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
        t = barrett(t * inv01, q1, mu1);
        v = x0 + t * q0;
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
    # (a + q - b) * c mod q: ModDown's and rescale's final step
    "sub_mul": ("uint64 a, uint64 b, uint64 c, uint64 q, uint64 mu", "uint64 out",
                "out = barrett_(((a + q - b)) * c, q, mu)"),
    "add_mod": ("uint64 a, uint64 b, uint64 q", "uint64 out",
                "unsigned long long s = a + b; out = s >= q ? s - q : s"),
    "mul_mod": ("uint64 a, uint64 b, uint64 q, uint64 mu", "uint64 out", "out = barrett_(a * b, q, mu)"),
    "tensor": ("uint64 a0, uint64 a1, uint64 b0, uint64 b1, uint64 q, uint64 mu",
               "uint64 d0, uint64 d1, uint64 d2",
               "d0 = barrett_(a0 * b0, q, mu);"
               "d1 = barrett_(barrett_(a0 * b1, q, mu) + barrett_(a1 * b0, q, mu), q, mu);"
               "d2 = barrett_(a1 * b1, q, mu)"),
}
_PREAMBLE = r"""
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
MODUP_ROW_CHUNK = 8


def _cp():
    import cupy

    return cupy


def _module():
    mod = _state.get("module")
    if mod is None:
        cp = _cp()
        mod = cp.RawModule(code=_SRC, options=("--std=c++14",))
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
    """Barrett constants for a (L, 1) modulus column, cached per column object (kept alive here)."""
    cache = _state.setdefault("mu", {})
    hit = cache.get(id(qc))
    if hit is not None and hit[0] is qc:
        return hit[1]
    cp = _cp()
    mu = cp.asarray(_mu_of(cp.asnumpy(qc).ravel()).reshape(qc.shape))
    cache[id(qc)] = (qc, mu)
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
def _prep(a):
    cp = _cp()
    return cp.array(a, dtype=np.uint64, order="C", copy=True)


def _host_in_host_out(fn):
    """A numpy argument gets a numpy result: callers that hand host arrays keep host semantics."""
    def wrapper(obj, a, *rest, **kw):
        if isinstance(a, np.ndarray):
            return _cp().asnumpy(fn(obj, _cp().asarray(a), *rest, **kw))
        return fn(obj, a, *rest, **kw)

    wrapper.__doc__ = fn.__doc__
    wrapper.__name__ = fn.__name__
    return wrapper


def _transform_setup(ring, x, idx):
    """(rows, device tables, prime of each row, log2 of the shared-memory chunk) of an
    (I)NTT launch over the limbs of x (primes `idx`); rows == 0: nothing to do."""
    rows = x.size // ring.n
    if rows == 0:
        return 0, None, None, 0
    return rows, _ring_dev(ring), _prow(ring, list(idx), rows), min(SMEM_LOG, ring.log_n)


@_host_in_host_out
def ntt(ring, a, idx, inplace=False):
    """Forward negacyclic NTT of (..., L, N), limbs mod primes `idx`; bit-identical to ring._ntt_ref."""
    x = a if inplace else _prep(a)
    rows, d, prow, logc = _transform_setup(ring, x, idx)
    if rows == 0:
        return x
    logn, n = ring.log_n, ring.n
    chunks = n >> logc
    m = 1
    while m < chunks:  # stages whose half-span exceeds a chunk
        if m * 4 <= chunks:
            _fn("ntt_fwd_r4")(_grid(rows * n // 4), (THREADS,),
                              (x, prow, d["psi"], d["psish"], d["q"], np.int32(logn), np.int32(m),
                               np.int64(rows)))
            m *= 4
        else:
            _fn("ntt_fwd_r2")(_grid(rows * n // 2), (THREADS,),
                              (x, prow, d["psi"], d["psish"], d["q"], np.int32(logn), np.int32(m),
                               np.int64(rows)))
            m *= 2
    threads = min(512, (1 << logc) // 2)
    _fn("ntt_fwd_smem")((rows * chunks,), (threads,),
                        (x, prow, d["psi"], d["psish"], d["q"], np.int32(logn), np.int32(logc)),
                        shared_mem=4 << logc)
    return x


@_host_in_host_out
def intt(ring, a, idx):
    x = _prep(a)
    rows, d, prow, logc = _transform_setup(ring, x, idx)
    if rows == 0:
        return x
    logn, n = ring.log_n, ring.n
    c = 1 << logc
    threads = min(512, c // 2)
    tail = c < n
    _fn("intt_smem")((rows * (n >> logc),), (threads,),
                     (x, prow, d["ipsi"], d["ipsish"], d["q"], d["ninv"], d["ninvsh"],
                      np.int32(logn), np.int32(logc), np.int32(0 if tail else 1)),
                     shared_mem=4 << logc)
    t = c
    while t < n:
        if t * 4 <= n:
            last = t * 4 == n
            _fn("intt_r4")(_grid(rows * n // 4), (THREADS,),
                           (x, prow, d["ipsi"], d["ipsish"], d["q"], d["ninv"], d["ninvsh"],
                            np.int32(logn), np.int32(t), np.int64(rows), np.int32(last)))
            t *= 4
        else:
            last = t * 2 == n
            _fn("intt_r2")(_grid(rows * n // 2), (THREADS,),
                           (x, prow, d["ipsi"], d["ipsish"], d["q"], d["ninv"], d["ninvsh"],
                            np.int32(logn), np.int32(t), np.int64(rows), np.int32(last)))
            t *= 2
    return x


# ---------------------------------------------------------------- key switching
def ks_inner(ext, key, qc, rows, perm=None):
    """(2, rows, N): sum over digits j of ext[j][:, perm] * (key.b[j], key.a[j]) mod q (rows P then Q)."""
    cp = _cp()
    ext = cp.ascontiguousarray(cp.asarray(ext), dtype=np.uint64)
    kb = cp.ascontiguousarray(cp.asarray(key.b), dtype=np.uint32)
    ka = cp.ascontiguousarray(cp.asarray(key.a), dtype=np.uint32)
    digits, _, n = ext.shape
    logn = n.bit_length() - 1
    out = cp.empty((2, rows, n), dtype=np.uint64)
    q = cp.ascontiguousarray(qc.ravel())
    mu = _mu_col(qc).ravel()
    if perm is not None:
        perm = cp.ascontiguousarray(perm, dtype=np.int64)
    _fn("ks_inner")(_grid(rows * n), (THREADS,),
                    (ext, kb, ka, perm if perm is not None else np.uint64(0), q, cp.ascontiguousarray(mu),
                     out, np.int32(digits), np.int32(rows), np.int32(logn),
                     np.int64(ext.shape[1] * n), np.int64(kb.shape[1] * n)))
    return out


def sub_mul(a, b, c, qc):
    """(a + q - b) * c mod q with (L, 1) columns c, q broadcast over (..., L, N)."""
    return _ew("sub_mul")(a, b, c, qc, _mu_col(qc))


def add_mod(a, b, qc):
    return _ew("add_mod")(a, b, qc)


def mul_mod(a, b, qc):
    return _ew("mul_mod")(a, b, qc, _mu_col(qc))


def tensor(a, b, qc):
    """Degree-2 product (d0, d1, d2) of two ciphertexts' (2, L, N) data, one pass."""
    return _ew("tensor")(a[0], a[1], b[0], b[1], qc, _mu_col(qc))


# ---------------------------------------------------------------- basis conversion
@_host_in_host_out
def basis_convert(conv, x):
    """BasisConverter.convert on the device: exact sum_i [x_i hat_i^-1] (A/a_i) mod b_j, fully reduced."""
    cp = _cp()
    k = getattr(conv, "_kernel_consts", None)
    if k is None:
        src_q = cp.asnumpy(conv.src_q).ravel()
        dst_q = cp.asnumpy(conv.dst_q).ravel()
        k = {
            "src_q": cp.asarray(src_q), "src_mu": cp.asarray(_mu_of(src_q)),
            "hat_inv": cp.asarray(cp.asnumpy(conv.hat_inv).ravel()),
            "dst_q": cp.asarray(dst_q), "dst_mu": cp.asarray(_mu_of(dst_q)),
            "hat_mod": cp.asarray(cp.asnumpy(conv.hat_mod).astype(np.uint64)),
        }
        conv._kernel_consts = k
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
    """KeySwitcher.modup on the device: one INTT, one conversion kernel for all digits, one NTT."""
    cp = _cp()
    consts = _modup_consts(ks, level)
    ring = ks.ring
    limbs = ks.params.limbs_at(level)
    coeff = intt(ring, d, list(range(limbs)))
    digits, rows = consts["digits"], consts["rows"]
    n = ring.n
    out = cp.empty((digits, rows, n), dtype=np.uint64)
    chunk = MODUP_ROW_CHUNK
    chunks = -(-rows // chunk)
    _fn("modup_convert")(_grid(digits * chunks * n), (THREADS,),
                         (coeff, out, consts["start"], consts["len"], consts["hat_inv"], consts["src_q"],
                          consts["src_mu"], consts["hat_mod"], consts["row_q"], consts["row_mu"],
                          consts["row_limb"], np.int32(rows), np.int32(consts["maxa"]),
                          np.int32(ring.log_n), np.int32(digits), np.int32(chunk)))
    return ntt(ring, out, consts["ring_rows"], inplace=True)


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
    for j, dg in enumerate(digits):
        src = list(dg)
        dst = ks.p_idx + [i for i in q_idx if i not in dg]
        conv = ks._converter(("up", level, j), src, dst)
        hat_inv[j, :len(src)] = cp.asnumpy(conv.hat_inv).ravel()
        src_q[j, :len(src)] = [prm.qp[i] for i in src]
        hm = cp.asnumpy(conv.hat_mod).astype(np.uint64)  # (|dst|, |src|), dst = P then other Q rows
        dst_rows = list(range(n_p)) + [n_p + i for i in q_idx if i not in dg]
        hat_mod[j, dst_rows, :len(src)] = hm
    c = {
        "digits": len(digits), "rows": rows, "maxa": maxa, "ring_rows": ring_rows,
        "start": cp.asarray(np.array([dg.start for dg in digits], dtype=np.int32)),
        "len": cp.asarray(np.array([len(dg) for dg in digits], dtype=np.int32)),
        "hat_inv": cp.asarray(hat_inv), "src_q": cp.asarray(src_q), "src_mu": cp.asarray(_mu_of(src_q.ravel())),
        "hat_mod": cp.asarray(hat_mod), "row_q": cp.asarray(row_q), "row_mu": cp.asarray(_mu_of(row_q)),
        "row_limb": cp.asarray(row_limb),
    }
    cache[level] = c
    return c


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
    return sub_mul(data[:, :keep], res, inv, qc)


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
