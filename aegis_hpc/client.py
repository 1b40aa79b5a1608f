"""Client command line: make keys, encrypt inputs, decrypt results, inspect files.

    python -m aegis_hpc.client keygen --preset NAME [--rotations LIST | --for-model NAME] [--bootstrap]
                                      --out DIR
    python -m aegis_hpc.client encrypt (--key secret.h5 | --public-key eval.h5)
                                       (--input X.npy | --text "..." --model NAME) --out ct.h5
    python -m aegis_hpc.client decrypt --key secret.h5 --input ct.h5|index.h5 --out result.npy
    python -m aegis_hpc.client inspect FILE [--verify]

Only the client ever opens secret.h5; eval.h5 is what the server gets. Every
mistake the user can make ends in one "error: ..." line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import warnings

import numpy as np

from . import io
from .ckks import Context, EncodingError, EvaluationError, ParameterError
from .ckks.bootstrap import BootstrapError, bootstrap_rotations

EXIT_USAGE = 2
SECRET_NAME, EVAL_NAME = "secret.h5", "eval.h5"


class UsageError(Exception):
    pass


# Exceptions that mean "the user gave us something wrong", as opposed to a bug.
USER_ERRORS = (UsageError, io.FormatError, ParameterError, EncodingError, EvaluationError, BootstrapError,
               OSError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _model_hook(name: str):
    """A function of the optional model package (aegis_hpc.nn.models), or a clear refusal."""
    return _model_hook_in("aegis_hpc.nn.models", name)


def _model_hook_in(module_name: str, name: str):
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"model support not installed ({io.container.one_line(e)})") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise UsageError(f"model support not installed ({module_name} has no {name})")
    return fn


def _call_model(name: str, *args):
    try:
        return _model_hook(name)(*args)
    except (KeyError, ValueError) as e:
        raise UsageError(f"model {args[0]!r}: {io.container.one_line(e)}") from None


def _parse_rotations(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(f"--rotations must be comma-separated integers, got {text!r}") from None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- commands -----------------------------------------------------------------------
def cmd_keygen(args) -> int:
    params = Context.from_preset(args.preset).params
    secret_path, eval_path = (os.path.join(args.out, n) for n in (SECRET_NAME, EVAL_NAME))
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a directory")
    os.makedirs(args.out, mode=0o700, exist_ok=True)
    # Refuse before the (possibly minutes long) key generation, not after it.
    for path in (secret_path, eval_path):
        io.check_output(path, args.force)
    if args.bootstrap:
        bootstrap_rotations(params)   # refuses chains too short for bootstrapping, before keygen
    ctx = Context(params)
    if args.row_slots and not args.for_model:
        raise UsageError("--row-slots needs --for-model (the rotations of that model's layout)")
    rotations = (_parse_rotations(args.rotations) if args.rotations
                 else _call_model("required_rotations", args.for_model, params, args.row_slots) if args.for_model
                 else [])
    if args.bootstrap and args.for_model:
        # bootstrapping runs at S and S*G_max slots (nn/refresh.py); each count has its own rotations
        rotations = list(rotations) + _model_hook_in("aegis_hpc.nn.refresh", "required_rotations")(
            args.for_model, params)
    if params.insecure:
        warnings.warn(io.InsecureParametersWarning(
            f"preset {args.preset!r} is INSECURE (below 128-bit security): for tests only"))
    t0 = time.perf_counter()
    sk, keys = ctx.keygen(rotations=rotations, bootstrap=args.bootstrap)
    elapsed = time.perf_counter() - t0
    # eval.h5 first: it is the large one, so a full disk fails before the
    # secret exists; if the secret then fails, its orphan eval.h5 goes too.
    io.write_eval_keys(eval_path, params, keys, force=args.force, key_id=io.secret_key_id(sk))
    try:
        io.write_secret_key(secret_path, params, sk, force=args.force)
    except BaseException:
        os.unlink(eval_path)
        raise
    _say(f"{params.describe()}\nkeys in {elapsed:.1f} s: {secret_path} (keep private), "
         f"{eval_path} ({os.path.getsize(eval_path):,} bytes, {len(keys.galois)} rotation keys"
         f"{', bootstrapping keys' if io.has_bootstrap_keys(keys) else ''})")
    return 0


def cmd_encrypt(args) -> int:
    io.check_output(args.out, args.force)
    if args.key:
        ctx, key = io.read_secret_key(args.key)
        key_id = io.secret_key_id(key)
    else:
        ctx, key = io.read_eval_keys(args.public_key)
        key, key_id = key.public, io.eval_key_id(args.public_key)
    if args.text is not None:
        if not args.model:
            raise UsageError("--text needs --model NAME (the tokenizer and embedding to use)")
        values = _call_model("embed_text", args.model, args.text)
        values = np.asarray(values[0] if isinstance(values, list) else values, dtype=np.float64)
        if values.ndim != 2 or 0 in values.shape:
            raise UsageError(f"model {args.model!r} gave no token embeddings for this text")
    else:
        if args.model:
            raise UsageError("--model only applies to --text")
        values = _load_matrix(args.input)
    T, F = values.shape
    # a model's heads must stay inside a feature chunk: rows a multiple of its head size
    unit = _call_model("head_dim", args.model) if args.model else 1
    S = args.row_slots or io.token_block_slots(T, F, ctx.params.slots, unit=unit)
    why = io.row_width_error(S, F, ctx.params.slots, unit)
    if why:
        raise UsageError(f"{F} features on {ctx.params.name} ({ctx.params.slots} slots): {why}")
    t0 = time.perf_counter()
    # token blocks: consecutive rows share a ciphertext, features in chunks of S slots
    # where that takes fewer ciphertexts (io.ciphertexts, nn/packing.py)
    cts = [ctx.encrypt(v, key, slots=v.size) for v in io.pack_rows(values, ctx.params.slots, S)]
    io.write_ciphertexts(args.out, cts, shape=values.shape, packing=io.TOKEN_BLOCKS,
                         force=args.force, key_id=key_id, row_width=S)
    rows = io.rows_per_ciphertext(T, S, ctx.params.slots)
    chunks = io.feature_chunks(F, S)
    use = io.slot_use(values.size, len(cts), ctx.params.slots)
    _say(f"encrypted {T} x {F} -> {len(cts)} ciphertext(s) of {rows} row(s)"
         f"{f' x {S} features ({chunks} feature chunks)' if chunks > 1 else ''} "
         f"({cts[0].slots} slots, level {cts[0].level}, slot use {100 * use:.1f} %) in "
         f"{time.perf_counter() - t0:.1f} s: {args.out}")
    return 0


def _load_matrix(path) -> np.ndarray:
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable .npy array ({io.container.one_line(e)})") from None
    if not isinstance(values, np.ndarray) or values.ndim != 2 or 0 in values.shape:
        raise UsageError(f"{path}: expected a non-empty 2-D array (tokens x features), got shape "
                         f"{getattr(values, 'shape', '?')}")
    if values.dtype.kind not in "biufc":
        raise UsageError(f"{path}: dtype {values.dtype} is not numeric")
    if not np.all(np.isfinite(values)):
        raise UsageError(f"{path}: contains NaN or infinity")
    return values


def cmd_decrypt(args) -> int:
    io.check_output(args.out, args.force)
    ctx, sk = io.read_secret_key(args.key)
    tensor = io.read_ciphertexts(args.input, ctx.params)
    if tensor.key_id and tensor.key_id != io.secret_key_id(sk):
        raise UsageError(f"{args.input} is encrypted under key {tensor.key_id}, {args.key} is key "
                         f"{io.secret_key_id(sk)}: wrong secret key")
    result = io.decode_rows(ctx, tensor, sk)
    if tensor.model:
        _check_encoder_output(args.input, tensor, result)
    with io.atomic_output(args.out, args.force) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, result)
    _say(f"decrypted {len(tensor.ciphertexts)} ciphertexts -> {args.out} {result.shape} {result.dtype}")
    return 0


def _check_encoder_output(path, tensor, result):
    """An encoder output ends in a LayerNorm: every value is finite and within
    |gamma_f| sqrt(d - 1) + |beta_f| (nn/domains.py). Anything else is a broken
    result (an input outside the model's domains, a failed refresh) and is not written."""
    bound = _model_hook_in("aegis_hpc.nn.domains", "output_bound")(tensor.model, tensor.layers)
    # encryption noise on values that sit on the bound
    slack = 1.01 * bound[: result.shape[1]] + 0.01
    bad = ~np.isfinite(result) | (np.abs(result) > slack)
    if bad.any():
        t, f = (int(i) for i in np.argwhere(bad)[0])
        raise UsageError(f"{path}: the decrypted output of {tensor.model} ({tensor.layers} layer(s)) is numerically "
                         f"broken: {bad.sum()} value(s) outside the bound of its last LayerNorm (token {t}, feature "
                         f"{f}: {result[t, f]:.4g}, bound {bound[f]:.4g}); nothing written")


def cmd_inspect(args) -> int:
    print("\n".join(io.describe(args.file, verify=args.verify)))
    return 0


# ---- entry point --------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m aegis_hpc.client", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    k = sub.add_parser("keygen", help="make secret.h5 (keep it) and eval.h5 (give it to the server)")
    k.add_argument("--preset", required=True, help="parameter preset (test, demo, n16, test-boot, n16-boot, ...)")
    which = k.add_mutually_exclusive_group()
    which.add_argument("--rotations", help="comma-separated rotation steps, e.g. 1,2,-1")
    which.add_argument("--for-model", help="make the rotation keys a model needs")
    k.add_argument("--bootstrap", action="store_true",
                   help="add bootstrapping keys (presets ending in -boot), for infer --refresh bootstrap")
    k.add_argument("--out", required=True, help="directory for secret.h5 and eval.h5")
    k.add_argument("--row-slots", type=int, default=None,
                   help="with --for-model: also the rotations of inputs packed with rows of this many "
                        "slots (client encrypt --row-slots)")
    k.set_defaults(func=cmd_keygen)

    e = sub.add_parser("encrypt", help="encrypt a tokens x features array, one ciphertext per row")
    key = e.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", help="secret.h5 (symmetric encryption)")
    key.add_argument("--public-key", help="eval.h5 (public-key encryption)")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="2-D .npy array, tokens x features")
    src.add_argument("--text", help="text to tokenize and embed with --model")
    e.add_argument("--model", help="model whose tokenizer and embedding turn --text into features")
    e.add_argument("--out", required=True)
    e.add_argument("--row-slots", type=int, default=None,
                   help="slots per token row (a power of two that holds or divides the features; "
                        "default: the packing that takes the fewest ciphertexts)")
    e.set_defaults(func=cmd_encrypt)

    d = sub.add_parser("decrypt", help="decrypt a ciphertext file or shard index to .npy")
    d.add_argument("--key", required=True, help="secret.h5")
    d.add_argument("--input", required=True, help="ciphertext file or index file of shards")
    d.add_argument("--out", required=True, help="result .npy")
    d.set_defaults(func=cmd_decrypt)

    i = sub.add_parser("inspect", help="print kind, version, fingerprint, shapes and sizes")
    i.add_argument("file")
    i.add_argument("--verify", action="store_true", help="read every dataset to check its checksum")
    i.set_defaults(func=cmd_inspect, force=False)

    for cmd in (k, e, d):
        cmd.add_argument("--force", action="store_true", help="overwrite existing output")
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {io.container.one_line(message)}", file=sys.stderr)


def main(argv=None) -> int:
    warnings.showwarning = _one_line_warning
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except BrokenPipeError:
        # stdout closed early (e.g. `inspect ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as e:
        print(f"error: {io.container.one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
