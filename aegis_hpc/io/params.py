"""The /params group: the canonical parameter set whose SHA-256 is the fingerprint."""

from __future__ import annotations

import hashlib
import json
import warnings

from ..ckks import params as params_mod
from ..ckks.params import InsecureParametersError, ParameterError, Parameters
from . import container
from .container import FormatError

# The only parameter sets that may be below 128-bit security: the built-in tiny
# rings of the unit tests (presets built with unsafe_allow_insecure: test,
# test-boot, ...). A file only gets the opt-out if it names such a preset AND
# its chain is exactly that preset's, so relabelling a weak set as "test" does
# not get it past the security check.


class InsecureParametersWarning(UserWarning):
    pass


def _canonical_json(d: dict) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def write_group(f, params: Parameters) -> None:
    g = f.create_group("params")
    g.attrs.update({"canonical": _canonical_json(params.canonical()), "name": params.name,
                    "fingerprint": params.fingerprint, "insecure": bool(params.insecure),
                    "description": params.describe()})


def write_params(path, params: Parameters, force: bool = False) -> None:
    with container.create(path, "params", params.fingerprint, force=force) as f:
        write_group(f, params)


def _insecure_allowed(name: str, canonical: dict) -> bool:
    return (params_mod.PRESETS.get(name, {}).get("unsafe_allow_insecure", False)
            and canonical == params_mod.preset(name).canonical())


def read_group(f) -> Parameters:
    """Rebuild and re-check the parameter set stored in an open file."""
    path = f.filename
    g = container.group(f, "params")
    text = container.attr(g, "canonical", "U")
    name = container.attr(g, "name", "U")
    try:
        canonical = json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: /params canonical attribute is not JSON ({e})") from None
    recorded = container.fingerprint_of(f)
    actual = hashlib.sha256(text.encode()).hexdigest()
    if actual != recorded or container.attr(g, "fingerprint", "U") != recorded:
        raise FormatError(f"{path}: /params hashes to {actual}, but the file claims {recorded}")
    allowed = _insecure_allowed(name, canonical)
    try:
        params = Parameters.from_canonical(canonical, name=name, unsafe_allow_insecure=allowed)
    except InsecureParametersError as e:
        raise FormatError(f"{path}: parameter set {name!r} is below 128-bit security, refused "
                          f"(only the built-in test presets may be): {e}") from None
    except (ParameterError, KeyError, TypeError) as e:
        raise FormatError(f"{path}: invalid parameter set ({container.one_line(e)})") from None
    if params.fingerprint != recorded:
        raise FormatError(f"{path}: parameter fingerprint {recorded} does not match {params.fingerprint} "
                          f"rebuilt by this version of aegis_hpc")
    if params.insecure:
        warnings.warn(InsecureParametersWarning(
            f"{path} uses the INSECURE {name!r} parameter set (N=2^{params.log_n}): "
            f"for tests only, never for real data"), stacklevel=3)
    return params


def read_params(path) -> Parameters:
    """Parameters stored in any aegis-hpc file that carries a /params group."""
    with container.open_checked(path) as f:
        return read_group(f)
