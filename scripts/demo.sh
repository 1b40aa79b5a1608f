#!/usr/bin/env bash
# The README's main job: client keygen + encryption of two sentences, encrypted
# inference of one `tiny` encoder layer on 2 MPI ranks (secure `demo` preset),
# decryption, and the cosine similarity against the plaintext float model.
# --refresh client: where levels run out the key holder decrypts and re-encrypts
# (it sees those intermediate values); every output says so.
set -euo pipefail
PY=${PY:-python3}
MPIRUN=${MPIRUN:-mpirun --oversubscribe}
OUT=${OUT:-out/demo}
rm -rf "$OUT" && mkdir -p "$OUT"
S1="$(sed -n 7p inputs/sentences.txt)"
S2="$(sed -n 20p inputs/sentences.txt)"
echo "== client: keys for model tiny on the demo preset"
$PY -m aegis_hpc.client keygen --preset demo --for-model tiny --out "$OUT/keys"
echo "== client: encrypt two sentences"
$PY -m aegis_hpc.client encrypt --public-key "$OUT/keys/eval.h5" --model tiny --text "$S1" --out "$OUT/s1.h5"
$PY -m aegis_hpc.client encrypt --public-key "$OUT/keys/eval.h5" --model tiny --text "$S2" --out "$OUT/s2.h5"
echo "== server: mpirun -n 2 python -m aegis_hpc.infer"
$MPIRUN -n 2 $PY -m aegis_hpc.infer --model tiny --layers 1 --keys "$OUT/keys/eval.h5" \
    --input "$OUT/s1.h5" "$OUT/s2.h5" --output "$OUT/o1.h5" "$OUT/o2.h5" \
    --refresh client --key-holder "$OUT/keys/secret.h5"
echo "== client: decrypt and compare with the plaintext model"
$PY -m aegis_hpc.client decrypt --key "$OUT/keys/secret.h5" --input "$OUT/o1.h5" --out "$OUT/o1.npy"
$PY -m aegis_hpc.client decrypt --key "$OUT/keys/secret.h5" --input "$OUT/o2.h5" --out "$OUT/o2.npy"
$PY -m aegis_hpc.nn.check --model tiny --layers 1 --text "$S1" --decrypted "$OUT/o1.npy" \
    --text "$S2" --decrypted "$OUT/o2.npy"
