"""Where public-key encryption's time goes (the ring `bench ops` matches to the peer at
--logn / --levels; default N=2^16, 24 levels): the whole call, the message's
coefficients (the host FFT), the fused draw + reduction kernel with the NTT of v,
e0 + m, e1, and the two products; the samplers alone and the Plaintext encoding for
comparison. Each line is the mean of 20 calls after a warm one, with a device sync
around them.

    AEGIS_BACKEND=cupy python scripts/profile_encrypt.py [--logn 15 --levels 8]
"""
import argparse, time, numpy as np
from aegis_hpc import backend
from aegis_hpc.benchmarks.ops import match_params, peer_log2_q
from aegis_hpc.ckks import Context
from aegis_hpc.ckks.params import ERROR_ETA
ap = argparse.ArgumentParser()
ap.add_argument("--logn", type=int, default=16)
ap.add_argument("--levels", type=int, default=24)
args = ap.parse_args()
p = match_params(args.logn, args.levels, peer_log2_q(args.levels))
print(p.describe())
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
    print(f"{label:42s} {(time.perf_counter()-t)/reps*1e3:7.3f} ms", flush=True)
    return r
T("encrypt (public key)", lambda: ctx.encrypt(x, keys.public))
coeffs, _ = T("message coefficients (host FFT)", lambda: ctx.encoder.to_coefficients(x, p.scale_at(p.max_level), p.slots))
noise = T("encryption_noise (draws, reduction, NTT)", lambda: kg.encryption_noise(idx, coeffs))
qc = ctx.ring.q_col(idx)
T("the two halves (mul_add x2)", lambda: ctx._public_halves(keys.public, noise, qc))
sm = kg.small("t")
T("ternary alone (cupy operations)", lambda: sm.ternary(p.n))
T("centred binomial alone", lambda: sm.centered_binomial(p.n, ERROR_ETA))
T("encode (the Plaintext path)", lambda: ctx.encode(x))
