"""The benchmark command line: sub-commands, parameter matching, report formatting (no timings)."""

import math

import pytest

from aegis_hpc import bench
from aegis_hpc.benchmarks import ops


TINY = ["--model", "tiny", "--tokens", "8", "--preset", "test", "--layers", "1", "--gpus", "1,2", "--quiet"]


def test_reproduce_planner_only_writes_table_plots_and_json(tmp_path, capsys):
    """--no-run: the planner's reductions reach the table; the measured claims say 'not run'."""
    import json

    from aegis_hpc.ckks.params import preset
    from aegis_hpc.parallel.planner import Planner, reduction

    assert bench.main(["reproduce", "--no-run", "--out", str(tmp_path), *TINY]) == 0
    for f in ("reproduce.md", "reproduce.json", "bytes_per_block.png", "memory_per_gpu.png", "scaling.png"):
        assert (tmp_path / f).stat().st_size > 0, f
    plans = Planner("tiny", preset("test"), 2, 8, 1).plans()
    a, lb = plans["aegis"].bytes_by_block(), plans["limb"].bytes_by_block()
    ffn, att = reduction(a["FFN"], lb["FFN"]), reduction(a["attention"], lb["attention"])
    assert 0 < att < 100 and lb["FFN"] > 0
    md = (tmp_path / "reproduce.md").read_text()
    assert f"| -57.9 % | -{ffn:.1f} % | planner, 2 GPUs |" in md
    assert f"| -81.3 % | -{att:.1f} % | planner, 2 GPUs |" in md
    assert "| scaling efficiency | 96.62 % | not run |" in md
    res = json.loads((tmp_path / "reproduce.json").read_text())
    assert res["planner"]["by_gpus"]["2"]["strategies"]["limb"]["bytes_by_block"] == lb
    assert "measured" not in res


def test_lintrans_compares_the_key_sets_on_one_transform(tmp_path):
    """Both key sets give m @ x; pow2 holds fewer, power-of-two keys for the
    same key switches; the compact diagonals are 2 * N/(2*slots) times smaller."""
    import json

    assert bench.main(["lintrans", "--backend", "numpy", "--preset", "test", "--slots", "64",
                       "--budget", "0", "--out", str(tmp_path)]) == 0
    (res,) = [json.loads(p.read_text()) for p in tmp_path.glob("lintrans-*-numpy-test-s64.json")]
    p2, al = res["key_sets"]["pow2"], res["key_sets"]["all"]
    assert p2["max_abs_error"] < 1e-6 and al["max_abs_error"] < 1e-6
    assert p2["key_switches"] == al["key_switches"] == 7 + 4 + 4
    assert (p2["rotation_keys"], al["rotation_keys"]) == (6, 10)
    assert p2["rotation_key_bytes"] * 10 == al["rotation_key_bytes"] * 6
    assert p2["modups"] > al["modups"]
    assert res["encoded_bytes"]["full"] == 32 * res["encoded_bytes"]["compact"]   # N = 2^11, 64 slots


@pytest.mark.parametrize("argv", [["reproduce", "--gpus", "0,2"], ["reproduce", "--gpus", "two"],
                                  ["reproduce", "--run-model", "nope"], ["comm", "--sizes", "0"],
                                  ["lintrans", "--preset", "test", "--slots", "4096"],
                                  ["ops", "--dnum", "0"]])
def test_bench_usage_errors_are_one_line(argv, capsys):
    assert bench.main(argv) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("error:")


def test_plan_without_planner_says_so(capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_planner(name, globals=None, locals=None, fromlist=(), level=0):
        if "planner" in (fromlist or ()) or name.endswith("planner"):
            raise ImportError("no planner here")
        return real(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_planner)
    assert bench.main(["plan", "--anything"]) == 2
    assert "aegis_hpc.parallel.planner" in capsys.readouterr().err


@pytest.mark.parametrize("log_n,levels", [(15, 8), (16, 24)])
def test_matched_parameters_hit_the_peer_modulus(log_n, levels):
    target = ops.peer_log2_q(levels)
    prm = ops.match_params(log_n, levels, target)
    assert prm.n == 1 << log_n
    assert abs(sum(math.log2(q) for q in prm.q) - target) < 8
    assert not prm.insecure


def test_a_digit_count_too_small_for_the_bound_says_so(capsys):
    assert bench.main(["ops", "--logn", "16", "--levels", "24", "--dnum", "1"]) == 2
    out = capsys.readouterr().out.strip()
    assert "dnum=1" in out and "a larger --dnum" in out and len(out.splitlines()) == 1


def test_a_digit_count_above_the_primes_of_q_says_so(capsys):
    """An explicit --dnum is never capped to the chain (the results file is named after it)."""
    assert bench.main(["ops", "--logn", "16", "--levels", "24", "--dnum", "100"]) == 2
    out = capsys.readouterr().out.strip()
    assert "dnum=100" in out and "a smaller --dnum" in out and len(out.splitlines()) == 1
    with pytest.raises(ops.DigitCountError, match="dnum=100"):
        ops.match_params(16, 24, ops.peer_log2_q(24), 100)
    # above the matching Q's 42 primes, though a Q of more levels (not matching) has 44
    with pytest.raises(ops.DigitCountError, match="dnum=43: .* has 42 primes"):
        ops.match_params(16, 24, ops.peer_log2_q(24), 43)


def test_matched_parameters_take_an_explicit_digit_count():
    """--dnum changes the digits (and so |P|) at the peer's log2 Q; a count whose P breaks the
    128-bit bound there is refused rather than matched at fewer levels."""
    target = ops.peer_log2_q(24)
    peer_like, three = ops.match_params(16, 24, target), ops.match_params(16, 24, target, 3)
    assert (peer_like.dnum, three.dnum) == (ops.PEER_DNUM[16], 3)
    assert three.q == peer_like.q and len(three.p) > len(peer_like.p) and not three.insecure
    with pytest.raises(RuntimeError, match="dnum=1"):
        ops.match_params(16, 24, target, 1)


def test_table_has_ratio_per_op():
    result = {
        "backend": "numpy", "peer_name": "desilofhe",
        "machine": {"cpu": "x", "cores": 2, "packages": {"numpy": "2"}},
        "aegis": {"params": {"ring_degree": 32768, "levels": 8, "limbs": 18, "log2_q": 422.0,
                             "special_primes": 4, "dnum": 5, "log2_qp": 546.0},
                  "ops": {"rotate": {"median_ms": 3.0}}, "extra": {}},
        "peer": {"params": {"ring_degree": 32768, "levels": 8, "log2_q": 420.0, "mode": "cpu",
                            "log2_q_source": "probe"},
                 "ops": {"rotate": {"median_ms": 2.0}}},
    }
    table = ops.format_table(result)
    assert "| rotate (1 key switch) | 3.00 | 2.00 | 1.50 |" in table


def test_encoder_bench_runs_server_only_and_matches_the_mirror(tmp_path):
    """`bench encoder` end to end on a bootstrappable ring: every refresh is a
    bootstrap (no key holder), the decryption matches the float64 mirror of the
    same circuit and the float model; the per-layer counts add up to the totals."""
    import json

    # 40 tokens: two blocks, so the softmax's parts are refreshed in pairs (ops.need_many)
    argv = ["encoder", "--model", "tiny", "--preset", "test-deep-boot", "--layers", "1", "--tokens", "40",
            "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    (path,) = tmp_path.glob("encoder-tiny-1l-*-test-deep-boot.json")
    res = json.loads(path.read_text())
    (row,) = res["inputs"]
    assert row["tokens"] == 40 and row["ciphertexts"] == 2 and row["slot_use"] == 40 * 32 / 2048
    assert row["bootstraps"] > 0 and row["bootstraps"] == row["mirror_refreshes"]
    (layer,) = row["layers"]
    assert layer["attention_bootstraps"] + layer["ffn_bootstraps"] == row["bootstraps"]
    assert layer["attention_keyswitches"] + layer["ffn_keyswitches"] == row["keyswitches"]
    # bootstrapping noise at N=2^11 (~2^-20 relative per refresh, ~20 refreshes)
    assert row["max_abs_vs_mirror"] < 2e-3
    assert row["cosine_vs_float"] > 0.999
    assert row["correct"] and layer["max_abs_vs_mirror"] == row["max_abs_vs_mirror"]  # checked after each layer
    assert path.with_suffix(".md").read_text().count("| 40 tokens | 40 | 2 |") == 1


def test_encoder_bench_reports_a_wrong_decryption_as_an_error(monkeypatch, capsys):
    """A run whose decryption left the mirror keeps its timing but is marked WRONG and
    the command exits 1 with a one-line error (a wrong result is never an answer)."""
    from aegis_hpc.benchmarks import encoder

    rows = [{"input": "128 tokens", "correct": False, "max_abs_vs_mirror": 1.21, "cosine_vs_float": 0.97},
            {"input": "19 tokens", "correct": True, "max_abs_vs_mirror": 1e-3, "cosine_vs_float": 1.0}]
    monkeypatch.setattr(encoder, "run", lambda args, on_input=None: {"inputs": rows})
    assert bench.main(["encoder", "--model", "tiny", "--preset", "test-deep-boot", "--tokens", "8", "--no-save"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "128 tokens: the decryption is wrong" in err[0] and "1.21e+00" in err[0]


def test_reproduce_predicts_the_measured_runs_bytes_from_the_planner():
    """The prediction each measured infer run is compared with is the planner's
    total for that strategy and rank count (40 tiny tokens: two blocks)."""
    from aegis_hpc.benchmarks.reproduce import predicted_total
    from aegis_hpc.ckks.params import preset
    from aegis_hpc.parallel.planner import Planner

    plans = Planner("tiny", preset("test"), 2, 40, 1).plans()
    for strategy in ("aegis", "limb", "replicate"):
        want = sum(plans[strategy].bytes_by_block().values())
        assert want > 0
        assert predicted_total("tiny", "test", 40, 1, 2, strategy) == want
