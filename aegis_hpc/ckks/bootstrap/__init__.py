"""CKKS bootstrapping (issue 8): dft (CoeffToSlot / SlotToCoeff), mod1 (EvalMod), bootstrapper."""

from .bootstrapper import (CONFIGS, BootstrapConfig, BootstrapError, Bootstrapper, EncapsulationKeys,
                           add_bootstrap_keys, bootstrap, bootstrap_rotations, default_config)
from .mod1 import EvalMod

__all__ = ["Bootstrapper", "BootstrapConfig", "BootstrapError", "EvalMod", "CONFIGS",
           "EncapsulationKeys", "add_bootstrap_keys", "bootstrap", "bootstrap_rotations", "default_config"]
