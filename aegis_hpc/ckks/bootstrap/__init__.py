"""CKKS bootstrapping (issue 8): dft (CoeffToSlot / SlotToCoeff), mod1 (EvalMod), bootstrapper."""

from .bootstrapper import (BootstrapConfig, BootstrapError, Bootstrapper, EncapsulationKeys,
                           add_bootstrap_keys, bootstrap, bootstrap_rotations, default_config)
from .mod1 import EvalMod

__all__ = ["Bootstrapper", "BootstrapConfig", "BootstrapError", "EvalMod",
           "EncapsulationKeys", "add_bootstrap_keys", "bootstrap", "bootstrap_rotations", "default_config"]
