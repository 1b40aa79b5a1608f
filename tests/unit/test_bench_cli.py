"""The benchmark command line: sub-commands, parameter matching, report formatting (no timings)."""

import math

import pytest

from aegis_hpc import bench
from aegis_hpc.benchmarks import ops


def test_reproduce_is_not_implemented_yet(capsys):
    assert bench.main(["reproduce"]) == 2
    assert "issue 9" in capsys.readouterr().out


def test_plan_without_planner_says_so(capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_planner(name, globals=None, locals=None, fromlist=(), level=0):
        if "planner" in (fromlist or ()) or name.endswith("planner"):
            raise ImportError("no planner here")
        return real(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", no_planner)
    assert bench.main(["plan", "--anything"]) == 2
    assert "aegis_hpc.dist.planner" in capsys.readouterr().err


@pytest.mark.parametrize("log_n,levels", [(15, 8), (16, 24)])
def test_matched_parameters_hit_the_peer_modulus(log_n, levels):
    target = ops.peer_log2_q(levels)
    prm = ops.match_params(log_n, levels, target)
    assert prm.n == 1 << log_n
    assert abs(sum(math.log2(q) for q in prm.q) - target) < 8
    assert not prm.insecure


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
