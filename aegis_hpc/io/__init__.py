"""HDF5 files of aegis_hpc: params, keys, ciphertext tensors (single, sharded), weights.

The format is described in docs/formats.md. Every reader raises FormatError
(one-line message) for any file it cannot trust.
"""

from .ciphertexts import (ROW_PER_CIPHERTEXT, TOKEN_BLOCKS, CiphertextTensor, Shard, decode_rows, pack_rows,
                          rank_range, read_ciphertexts, row_slots, rows_per_ciphertext, shard_path, slot_use,
                          token_block_slots, feature_chunks, row_width_error, unpack_rows, write_ciphertexts, write_index)
from .container import (FORMAT, FORMAT_VERSION, KINDS, FormatError, OutputExistsError, atomic_output,
                        check_output)
from .inspect import describe
from .keys import (LooseSecretKeyWarning, has_bootstrap_keys, eval_key_id, read_eval_keys, read_secret_key, secret_key_id,
                   write_eval_keys, write_secret_key)
from .params import InsecureParametersWarning, read_params, write_params
from .weights import read_weights, write_weights

__all__ = [
    "FORMAT", "FORMAT_VERSION", "KINDS", "FormatError", "OutputExistsError", "atomic_output",
    "check_output", "read_params", "write_params", "InsecureParametersWarning", "read_secret_key",
    "write_secret_key", "read_eval_keys", "write_eval_keys", "secret_key_id", "eval_key_id", "LooseSecretKeyWarning",
    "has_bootstrap_keys",
    "write_ciphertexts", "read_ciphertexts", "write_index", "CiphertextTensor", "Shard", "rank_range",
    "shard_path", "decode_rows", "ROW_PER_CIPHERTEXT", "TOKEN_BLOCKS", "pack_rows", "row_slots",
    "rows_per_ciphertext", "slot_use", "token_block_slots", "feature_chunks", "row_width_error", "unpack_rows", "read_weights", "write_weights", "describe",
]
