"""aegis_hpc: multi-GPU CKKS homomorphic inference for Transformers."""

__version__ = "0.1.0"
