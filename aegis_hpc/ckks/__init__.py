"""RNS-CKKS: parameters, NTT, basis conversion, encoder, keys, evaluator, circuits."""

from .ciphertext import Ciphertext, Plaintext
from .context import Context
from .encoder import EncodingError
from .evaluator import EvaluationError, Evaluator, MissingKeyError
from .keys import EvaluationKeys, PublicKey, SecretKey, SwitchingKey
from .lintrans import BlockTransform, LinearTransform
from .params import InsecureParametersError, ParameterError, Parameters, build, preset
from .polynomial import ChebyshevSeries

__all__ = [
    "Context", "Ciphertext", "Plaintext", "Evaluator", "EvaluationKeys", "PublicKey", "SecretKey",
    "SwitchingKey", "LinearTransform", "BlockTransform", "ChebyshevSeries", "Parameters", "build", "preset",
    "InsecureParametersError", "ParameterError", "EvaluationError", "MissingKeyError", "EncodingError",
]
