"""bench comm: the bytes it reports per call are what aegis_hpc.parallel recorded
for the buffers it actually sent, and both sides moved the same residues."""

import pytest


@pytest.mark.mpi(min_size=2)
def test_bench_comm_reports_the_bytes_dist_sent(comm):
    from aegis_hpc.benchmarks.comm import OPS, run
    from aegis_hpc.ckks.params import preset

    params = preset("test")
    comm.stats.reset()
    rows = run(comm, params, [1, 2], budget=0.0)["rows"]
    assert [r["op"] for r in rows] == list(OPS) * 2
    limbs = params.limbs_at(params.max_level)
    for op in OPS:
        site = comm.stats.sites[f"bench/{op}"]
        mine = [r for r in rows if r["op"] == op]
        # aegis_hpc.parallel records every call at its real size; the bench runs each size `calls / sizes` times
        per_size_calls = site.calls // len(mine)
        assert site.bytes_sent == per_size_calls * sum(r["bytes_sent_per_rank"] for r in mine)
        for r in mine:
            cts = r["ciphertexts_per_rank"] * (comm.size if op == "alltoall" else 1)
            assert r["residues_per_rank"] == cts * 2 * limbs * params.n
            assert r["ours_ms"] > 0 and r["raw_ms"] > 0
