"""Packing of a tokens x features activation matrix into CKKS slots.

Layout "token-rows" (the only one so far):

- One ciphertext per token. Its S = 2^ceil(log2(hidden)) slots hold the
  token's features (zero padded), using sparse packing: a ciphertext of S
  slots is the same plaintext as the S-vector tiled across all N/2 slots, so
  rotations are cyclic over S and cost the same as on a full ciphertext.
  Token-wise work (linear layers, bias, GELU, LayerNorm, residuals) therefore
  touches one ciphertext and needs no traffic between ranks that own
  different tokens: the planner's token shard. A head shard is a slot range
  of every ciphertext (heads are contiguous blocks of head_dim slots) and a
  limb shard is a row range of the (2, limbs, N) array; neither changes the
  slot layout.
- FFN activations (intermediate > S) are ceil(intermediate / S) ciphertexts
  of S slots ("chunks").
- Linear layers: y = W x is a BSGS diagonal transform over S slots
  (ckks.LinearTransform); W is padded to S x S, FFN weights are split into
  S x S blocks; the plaintext diagonals are encoded once per level and
  cached. 1/sqrt(head_dim) is folded into W_q and b_q.
- Attention (per sentence, tokens grouped G = min(2^ceil(log2 T), N/2 / S)
  to a ciphertext): because an S-slot ciphertext *is* its vector tiled,
  viewing it as S*G slots costs nothing. K_g = sum_j mask_j * view(k_j) puts
  key token j of group g into slot block j (one plaintext product per
  token). For query i, view(q_i) * K_g multiplies q_i with every key of the
  group at once; log2(head_dim) rotations sum each head block, a mask keeps
  the head sums (and drops padded tokens) and log2(head_dim) more rotations
  broadcast each score back over its head block. exp runs slot-wise on all
  (key, head) pairs at once; log2(G) rotations by multiples of S sum over
  keys, giving the softmax denominator and, after a product with V_g (built
  like K_g), the numerator sum_j e_ij v_j in every slot block. The result,
  S-periodic, is viewed back as an S-slot ciphertext.
"""

from __future__ import annotations

import math

import numpy as np

from ..ckks import LinearTransform


class PackingError(ValueError):
    pass


def pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class Layout:
    name = "token-rows"

    def __init__(self, cfg, max_slots: int, max_tokens: int | None = None):
        self.cfg = cfg
        self.S = pow2(cfg.hidden)
        if self.S > max_slots:
            raise PackingError(f"hidden size {cfg.hidden} needs {self.S} slots; the ring has {max_slots}")
        if cfg.head_dim & (cfg.head_dim - 1):
            raise PackingError("head_dim must be a power of two for the rotation sums")
        self.max_slots = max_slots
        self.chunks = -(-cfg.intermediate // self.S)
        self.max_tokens = max_tokens or cfg.max_positions
        self.G_max = max(1, min(pow2(self.max_tokens), max_slots // self.S))

    def group_size(self, tokens: int) -> int:
        return max(1, min(pow2(tokens), self.G_max))

    def head_sum_steps(self):
        return [1 << k for k in range(int(math.log2(self.cfg.head_dim)))]

    def feature_sum_steps(self):
        return [1 << k for k in range(int(math.log2(self.S)))]

    def block_sum_steps(self, G: int):
        return [self.S << k for k in range(int(math.log2(G)))]

    def linear_rotations(self):
        h, f, S = self.cfg.hidden, self.cfg.intermediate, self.S
        rots = set()
        shapes = {(h, h)} | {(min(S, f - c * S), h) for c in range(self.chunks)} \
            | {(h, min(S, f - c * S)) for c in range(self.chunks)}
        for shape in shapes:
            rots |= set(LinearTransform(matrix=np.ones(shape), slots=S).rotations())
        return rots

    def rotations(self):
        r = set(self.linear_rotations())
        r |= set(self.head_sum_steps()) | {-s for s in self.head_sum_steps()}
        r |= set(self.feature_sum_steps()) | set(self.block_sum_steps(self.G_max))
        return sorted(r)

    def pad(self, vec, n=None):
        out = np.zeros(n or self.S)
        out[: len(vec)] = vec
        return out

    def describe(self):
        return (f"layout {self.name}: {self.S} slots/token, FFN in {self.chunks} chunk(s), "
                f"up to {self.G_max} keys per attention ciphertext")
