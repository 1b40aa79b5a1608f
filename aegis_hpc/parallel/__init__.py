"""Distributed runtime: communicators, sharded ciphertext tensors, planner, overlap, failure."""

from .comm import CommError, Communicator, CommStats, make_comm, wire_bytes
from .failure import abort_on_error
from .overlap import OverlapScheduler
from .sharding import (HEAD, LIMB, REPLICATED, TOKEN, CipherTensor, RankGrid, ShardSpec,
                       redistribute, redistribute_async, shard)

__all__ = [
    "CommError", "Communicator", "CommStats", "make_comm", "wire_bytes", "abort_on_error",
    "OverlapScheduler", "HEAD", "LIMB", "REPLICATED", "TOKEN", "CipherTensor", "RankGrid",
    "ShardSpec", "redistribute", "redistribute_async", "shard",
]
