"""Packing of a tokens x features activation matrix into CKKS slots.

Layout "token-blocks": a token block holds B consecutive tokens of one
sequence in rows of S slots, its features in C feature chunks: chunk c is a
ciphertext whose row b holds features [c S, c S + S) of token b. With one
chunk S = 2^ceil(log2 hidden) (the rest of the row zero); with several, S is
the largest power of two dividing hidden (bert-base: 3 chunks of 256), a
multiple of the head size, so every head sits in one chunk. The client picks
whichever takes fewer ciphertexts (io.ciphertexts.token_block_slots; bert-base
at 128 tokens: 3 full ciphertexts, 100 % of the slots, against 4). B = N/(2S),
or the power of two at or above a shorter sequence's length (then the
ciphertexts have B S slots, sparse). A sequence of T tokens is ceil(T/B)
blocks; the last one's padding tokens are zero and stay zero (every bias,
LayerNorm weight and mask is zero there).

- Token-wise work is block-wise: a linear layer is the same matrix on every
  token row, a BlockTransform of S x S blocks between input and output chunks,
  each with 2S - 1 S-periodic diagonals (compact S-slot plaintexts; babies
  once per input chunk, giants once per output chunk, for B tokens at once).
  FFN activations are ceil(FFN / S) chunk ciphertexts. A token's sums
  (LayerNorm) add its chunks, then rotate within its row (sum to the row's
  first slot, mask, broadcast back).
- Attention runs in every chunk on its own heads, as follows.
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

from ..ckks import BlockTransform
from ..io import ciphertexts as files


class PackingError(ValueError):
    pass


def _log2(n: int) -> int:
    return int(math.log2(n))


def row_slots_for(cfg, tokens: int, max_slots: int) -> int:
    """S for a `tokens`-token sequence of model cfg: the file format's rule
    (io.ciphertexts.token_block_slots) with rows a multiple of the head size."""
    return files.token_block_slots(tokens, cfg.hidden, max_slots, unit=cfg.head_dim)


def layouts(cfg, max_slots: int) -> list:
    """The layouts a `cfg` input may arrive in at some length (one chunk, and feature
    chunks where the rule can pick them): keys must serve both."""
    return [Layout(cfg, max_slots, S) for S in files.token_block_widths(cfg.hidden, max_slots, cfg.head_dim)
            if S <= max_slots]


class Layout:
    name = "token-blocks"

    def __init__(self, cfg, max_slots: int, row_slots: int | None = None):
        self.cfg = cfg
        self.S = row_slots or files.row_slots(cfg.hidden)
        if cfg.head_dim & (cfg.head_dim - 1):
            raise PackingError("head_dim must be a power of two for the rotation sums")
        why = files.row_width_error(self.S, cfg.hidden, max_slots, cfg.head_dim)
        if why:
            raise PackingError(why)
        self.max_slots = max_slots
        self.dh = cfg.head_dim
        # feature chunks: a token's hidden features over `hidden_chunks` ciphertexts of
        # `width` features per row (one chunk: the hidden size padded to S)
        self.hidden_chunks = -(-cfg.hidden // self.S)
        self.width = min(cfg.hidden, self.S)
        self.row_heads = self.width // self.dh
        self.chunks = -(-cfg.intermediate // self.S)
        self.B_max = max_slots // self.S

    @classmethod
    def for_tokens(cls, cfg, max_slots: int, tokens: int) -> "Layout":
        return cls(cfg, max_slots, row_slots_for(cfg, tokens, max_slots))

    # ---- shapes ----------------------------------------------------------------
    def tokens_per_ct(self, tokens: int) -> int:
        """B for a sequence of `tokens` tokens (a power of two): the file format's rule
        (io.ciphertexts.rows_per_ciphertext), so client and server agree."""
        return files.rows_per_ciphertext(tokens, self.S, self.max_slots)

    def slots(self, tokens: int) -> int:
        return self.tokens_per_ct(tokens) * self.S

    def blocks(self, tokens: int) -> int:
        return -(-tokens // self.tokens_per_ct(tokens))

    def ciphertexts(self, tokens: int) -> int:
        return self.blocks(tokens) * self.hidden_chunks

    def block_tokens(self, tokens: int, block: int) -> int:
        """Valid tokens of block `block` of a `tokens`-token sequence."""
        B = self.tokens_per_ct(tokens)
        return max(0, min(B, tokens - block * B))

    def groups(self, B: int) -> int:
        """Compact score ciphertexts per (query block, key block, chunk): dh shifts each."""
        return -(-B // self.dh)

    def pad(self, vec) -> np.ndarray:
        """A feature vector (hidden, FFN or bias) as its chunks' rows: (chunks, S)."""
        vec = np.asarray(vec, dtype=np.float64)
        rows = max(1, -(-len(vec) // self.S))
        out = np.zeros(rows * self.S)
        out[: len(vec)] = vec
        return out.reshape(rows, self.S)

    # ---- client side: matrices <-> slot vectors -----------------------------------
    def pack(self, rows) -> list:
        """(tokens, hidden) float rows -> per block, the slot vectors of its chunks."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.shape[1] != self.cfg.hidden:
            raise PackingError(f"rows of {rows.shape[1]} features; the model has {self.cfg.hidden}")
        flat = files.pack_rows(rows, self.max_slots, self.S)
        c = self.hidden_chunks
        return [flat[j:j + c] for j in range(0, len(flat), c)]

    def unpack(self, blocks, tokens: int, features: int) -> np.ndarray:
        """The chunk slot vectors of a sequence's blocks (as pack gives them) -> (tokens, features)."""
        return files.unpack_rows([v for blk in blocks for v in blk], tokens, features, self.S)

    # ---- masks (plaintext slot vectors of one block) ------------------------------
    def token_mask(self, B: int, valid: int, width: int | None = None) -> np.ndarray:
        """1 on the first `width` (hidden) slots of each of the first `valid` token rows."""
        m = np.zeros((B, self.S))
        m[:valid, : width or self.width] = 1.0
        return m.ravel()

    def row_start_mask(self, B: int, valid: int) -> np.ndarray:
        m = np.zeros((B, self.S))
        m[:valid, 0] = 1.0
        return m.ravel()

    def score_mask(self, B: int, q_valid: int, k_valid: int, g: int, u: int | None = None) -> np.ndarray:
        """Compact-score slots of group g (all offsets u, or one) with a valid query,
        a valid key ((b + g dh + u) mod B < k_valid) and a real head."""
        m = np.zeros((B, self.S))
        H, dh = self.row_heads, self.dh
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
        m[:q_valid, 0: self.width: self.dh] = 1.0
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

    def transform(self, matrix) -> BlockTransform:
        """A weight matrix (outputs x inputs) on every token row of a block, at any block
        size: S x S blocks between the input and output chunks."""
        return BlockTransform.block_diagonal(matrix, self.S, self.max_slots)

    def linear_rotations(self):
        return set(self.transform(np.ones((self.S, self.S))).rotations())

    def describe(self, tokens: int | None = None):
        T = tokens or self.cfg.max_positions
        chunks = f"{self.hidden_chunks} feature chunks of {self.S}" if self.hidden_chunks > 1 else f"{self.S} slots"
        return (f"layout {self.name}: {chunks} per token, {self.tokens_per_ct(T)} tokens per ciphertext "
                f"({self.slots(T)} slots), FFN in {self.chunks} chunk(s)")