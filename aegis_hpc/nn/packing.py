"""Packing of a tokens x features activation matrix into CKKS slots.

Layout "token-blocks": a ciphertext holds B consecutive tokens of one
sequence, token b in slots [b S, b S + hidden) with S = 2^ceil(log2 hidden)
(the rest of its S slots zero). B = N/(2S) (MiniLM at N=2^16: 64 tokens,
bert-base: 32), or the power of two at or above the sequence's length for a
shorter one (then the ciphertext has B S slots, sparse). A sequence of T
tokens is ceil(T/B) blocks; the last one's padding tokens are zero and stay
zero (every bias, LayerNorm weight and mask is zero there).

- Token-wise work is block-wise: a linear layer is the same S x S matrix on
  every token row, a transform whose 2S - 1 diagonals are S-periodic
  (LinearTransform.block_diagonal: compact S-slot plaintexts, ~2 sqrt(2S)
  key switches for B tokens at once). FFN activations are ceil(FFN / S)
  chunk ciphertexts. A token's sums (LayerNorm) are rotations within its
  row (sum to the row's first slot, mask, broadcast back).
- Attention of a query block and a key block runs over the B token shifts
  r: a rotation by r S moves key token (b + r) mod B under query token b.
  With r = g dh + u (dh the head size), the product of rot(Q, -u) and
  rot(K, r S - u) has head h's dh terms in slots [h dh + u, h dh + u + dh) of
  each row, so the head sum lands in slot h dh + u: the scores of dh shifts
  share one ciphertext ("compact scores", slot (b, h dh + u) holds the score
  of query b with key (b + g dh + u) mod B, head h). Softmax runs on these;
  its sums over keys add the key blocks' and groups' ciphertexts and then
  the dh slots of each head block. A V = sum over shifts of each score,
  broadcast over its head's dh slots, times rot(V, r S - u); the dh offsets u
  are undone by a Horner chain of rotations by one.
"""

from __future__ import annotations

import math

import numpy as np

from ..ckks import LinearTransform
from ..io import ciphertexts as files


class PackingError(ValueError):
    pass


def _log2(n: int) -> int:
    return int(math.log2(n))


class Layout:
    name = "token-blocks"

    def __init__(self, cfg, max_slots: int):
        self.cfg = cfg
        self.S = files.row_slots(cfg.hidden)
        if self.S > max_slots:
            raise PackingError(f"hidden size {cfg.hidden} needs {self.S} slots; the ring has {max_slots}")
        if cfg.head_dim & (cfg.head_dim - 1):
            raise PackingError("head_dim must be a power of two for the rotation sums")
        self.max_slots = max_slots
        self.dh = cfg.head_dim
        self.chunks = -(-cfg.intermediate // self.S)
        self.B_max = max_slots // self.S

    # ---- shapes ----------------------------------------------------------------
    def tokens_per_ct(self, tokens: int) -> int:
        """B for a sequence of `tokens` tokens (a power of two): the file format's rule
        (io.ciphertexts.rows_per_ciphertext), so client and server agree."""
        return files.rows_per_ciphertext(tokens, self.cfg.hidden, self.max_slots)

    def slots(self, tokens: int) -> int:
        return self.tokens_per_ct(tokens) * self.S

    def blocks(self, tokens: int) -> int:
        return -(-tokens // self.tokens_per_ct(tokens))

    def block_tokens(self, tokens: int, block: int) -> int:
        """Valid tokens of block `block` of a `tokens`-token sequence."""
        B = self.tokens_per_ct(tokens)
        return max(0, min(B, tokens - block * B))

    def groups(self, B: int) -> int:
        """Compact score ciphertexts per (query block, key block): dh shifts each."""
        return -(-B // self.dh)

    def pad(self, vec) -> np.ndarray:
        """A feature vector as one token row's S slots."""
        out = np.zeros(self.S)
        out[: len(vec)] = vec
        return out

    # ---- client side: matrices <-> slot vectors -----------------------------------
    def pack(self, rows) -> list:
        """(tokens, hidden) float rows -> one slot vector per block."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.shape[1] != self.cfg.hidden:
            raise PackingError(f"rows of {rows.shape[1]} features; the model has {self.cfg.hidden}")
        return files.pack_rows(rows, self.max_slots)

    def unpack(self, vectors, tokens: int, features: int) -> np.ndarray:
        """The slot vectors of a sequence's blocks -> (tokens, features)."""
        return files.unpack_rows(vectors, tokens, features)

    # ---- masks (plaintext slot vectors of one block) ------------------------------
    def token_mask(self, B: int, valid: int, width: int | None = None) -> np.ndarray:
        """1 on the first `width` (hidden) slots of each of the first `valid` token rows."""
        m = np.zeros((B, self.S))
        m[:valid, : width or self.cfg.hidden] = 1.0
        return m.ravel()

    def row_start_mask(self, B: int, valid: int) -> np.ndarray:
        m = np.zeros((B, self.S))
        m[:valid, 0] = 1.0
        return m.ravel()

    def score_mask(self, B: int, q_valid: int, k_valid: int, g: int, u: int | None = None) -> np.ndarray:
        """Compact-score slots of group g (all offsets u, or one) with a valid query,
        a valid key ((b + g dh + u) mod B < k_valid) and a real head."""
        m = np.zeros((B, self.S))
        H, dh = self.cfg.heads, self.dh
        us = range(dh) if u is None else [u]
        for uu in us:
            r = g * dh + uu
            if r >= B:
                continue
            b = np.arange(q_valid)
            ok = b[(b + r) % B < k_valid]
            for h in range(H):
                m[ok, h * dh + uu] = 1.0
        return m.ravel()

    def score_window_mask(self, B: int, q_valid: int, k_valid: int, g: int, u: int, w: int) -> np.ndarray:
        """score_mask(g, u) widened to the w slots (b, h dh + u + a), a < w (the last
        head's window may run on into the next row: slots are cyclic)."""
        base = self.score_mask(B, q_valid, k_valid, g, u)
        return sum(np.roll(base, a) for a in range(w))

    def score_residue_mask(self, B: int, q_valid: int, k_valid: int, g: int, rho: int, w: int) -> np.ndarray:
        """The compact-score slots of group g whose offset u is rho mod w."""
        return sum(self.score_mask(B, q_valid, k_valid, g, u) for u in range(rho, self.dh, w))

    def head_window(self, count: int) -> int:
        """w of the two-stage head sum of `count` offsets (block.EncoderRunner._attend):
        steps w .. dh/2 on every offset, then steps 1 .. w/2 on the min(w, count)
        residue classes mod w, between two masks. w = 1 is the one-stage sum with one
        mask; it is kept on ties (a level fewer)."""
        log_dh = _log2(self.dh)
        j = min(range(log_dh + 1), key=lambda j: (count * (log_dh - j) + min(1 << j, count) * j, j))
        return 1 << j

    def head_start_mask(self, B: int, q_valid: int) -> np.ndarray:
        m = np.zeros((B, self.S))
        m[:q_valid, 0: self.cfg.hidden: self.dh] = 1.0
        return m.ravel()

    # ---- rotation steps -----------------------------------------------------------
    def row_sum_steps(self):
        return [1 << k for k in range(_log2(self.S))]

    def head_sum_steps(self):
        return [1 << k for k in range(_log2(self.dh))]

    def rotations(self) -> list:
        """Every rotation step the encoder uses at any sequence length (a key for step s
        rotates an n-slot ciphertext by s mod n, so one set serves every block size)."""
        r = set(self.linear_rotations())
        r |= set(self.row_sum_steps()) | {-s for s in self.row_sum_steps()}
        r |= set(self.head_sum_steps()) | {-s for s in self.head_sum_steps()}
        # key shifts: babies u (S - 1) by a tree over (S - 1) 2^j, giants by dh S 2^j;
        # Q's -u by the head steps' -2^j; the Horner chain of the output by 1
        r |= {(self.S - 1) << j for j in range(_log2(self.dh))}
        r |= {self.dh * self.S << j for j in range(max(0, _log2(max(1, self.B_max // self.dh))))}
        r = {x % self.max_slots for x in r}
        r.discard(0)
        return sorted(r)

    def transform(self, matrix) -> LinearTransform:
        """A weight matrix (at most S x S) on every token row of a block, at any block size."""
        return LinearTransform.block_diagonal(matrix, self.S, self.max_slots)

    def linear_rotations(self):
        return set(self.transform(np.ones((self.S, self.S))).rotations())

    def describe(self, tokens: int | None = None):
        T = tokens or self.cfg.max_positions
        return (f"layout {self.name}: {self.S} slots per token, {self.tokens_per_ct(T)} tokens per ciphertext "
                f"({self.slots(T)} slots), FFN in {self.chunks} chunk(s)")