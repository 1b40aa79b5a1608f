"""CKKS bootstrapping (issue 8): dft (CoeffToSlot / SlotToCoeff), mod1 (EvalMod), bootstrapper."""

from .bootstrapper import (CONFIGS, BootstrapConfig, BootstrapError, Bootstrapper, bootstrap,
                           bootstrap_rotations, default_config)
from .mod1 import EvalMod

__all__ = ["Bootstrapper", "BootstrapConfig", "BootstrapError", "EvalMod", "CONFIGS",
           "bootstrap", "bootstrap_rotations", "default_config"]
