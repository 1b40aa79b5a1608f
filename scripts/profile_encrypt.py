"""Where public-key encryption's time goes (N=2^16, 42 limbs): the whole call, the
message encoding (its host-side FFT separately), the small samplers on the ring's
device, the batched NTT of v, e0, e1 and the fused products. Each line is the mean
of 20 calls after a warm one, with a device sync around them.

    AEGIS_BACKEND=cupy python scripts/profile_encrypt.py
"""
import time, numpy as np
from aegis_hpc import backend
from aegis_hpc.ckks import Context, params
from aegis_hpc.ckks.params import ERROR_ETA
p = params.build(log_n=16, levels=20, scale_bits=50, primes_per_level=2, base_primes=2, dnum=7)
ctx = Context(p)
sk, keys = ctx.keygen()
x = np.random.uniform(-1, 1, p.slots)
kg = ctx.keygenerator
idx = list(range(p.limbs_at(p.max_level)))
def T(label, f, reps=20):
    f(); backend.sync()
    t = time.perf_counter()
    for _ in range(reps): r = f()
    backend.sync()
    print(f"{label:30s} {(time.perf_counter()-t)/reps*1e3:7.3f} ms", flush=True)
    return r
T("encrypt (public key)", lambda: ctx.encrypt(x, keys.public))
T("encode", lambda: ctx.encode(x))
T("host coefficients", lambda: ctx.encoder.sparse_coefficients_many(x[None, :], 2.0**50, p.slots))
sm = kg.small("t")
T("ternary", lambda: sm.ternary(p.n))
T("cbd", lambda: sm.centered_binomial(p.n, ERROR_ETA))
xp = ctx.xp
c = xp.stack([sm.ternary(p.n), sm.centered_binomial(p.n, ERROR_ETA), sm.centered_binomial(p.n, ERROR_ETA)])
T("small_to_ntt x3", lambda: kg.small_to_ntt(c, idx))
v = kg.small_to_ntt(c, idx)
qc = ctx.ring.q_col(idx)
r = ctx.ring
T("combine", lambda: (r.add_mod(r.add_mod(r.mul_mod(v[0], keys.public.b, qc), v[1], qc), v[2], qc), r.add_mod(r.mul_mod(v[0], keys.public.a, qc), v[2], qc)))
T("chacha keystream, 2N words", lambda: sm._words(2 * p.n))
