"""Encrypted Transformer encoder: packing, blocks, approximations, mirror, model import.

See packing.py for the ciphertext layout, approx.py for the approximations,
block.py for the encoder written once for both the plaintext mirror
(mirror.py) and the encrypted run (infer.py), calibrate.py for ranges.
"""
