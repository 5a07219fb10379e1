from inilora.bench import random_weights, run
from inilora.decompose import SolverSettings


def test_reference_and_solver_reach_the_same_mse_side_by_side():
    weights = random_weights([(3, 24, 16)], std=0.1)
    (row,) = run(weights, SolverSettings(rank=4, iterations=200, step_size=50), "cpu", reference_count=None)
    assert abs(row["ours_vs_reference_mse"] - 1) < 1e-4
    assert row["svd_mse_ratio"] < 1 + 1e-4  # the SVD is the optimum
    assert row["ours_mse_ratio"] >= row["svd_mse_ratio"] - 1e-6
    assert row["reference_s"] > 0 and row["ours_s"] > 0


def test_generation_benchmark_compares_batched_and_single_on_the_same_prompts(tiny_llama_dir):
    from inilora.bench import generation_times

    row = generation_times(str(tiny_llama_dir), n=4, batch=4, max_new_tokens=4)
    assert row["prompts"] == 4 and row["single_s"] > 0 and row["batched_s"] > 0
    assert row["speedup"] == row["single_s"] / row["batched_s"]
    assert row["same_output"] == 1.0  # left padding changes no greedy output


def test_the_optimum_can_be_taken_on_a_subset_and_bandwidth_is_reported():
    weights = random_weights([(4, 24, 16)], std=0.1)
    settings = SolverSettings(rank=4, iterations=50, step_size=20)
    (row,) = run(weights, settings, "cpu", reference_count=1, optimum_count=2)
    assert row["reference_matrices_timed"] == 1 and row["optimum_matrices"] == 2
    assert row["svd_mse_ratio"] < 1 + 1e-4 and row["ours_mse_ratio_all"] >= 1 - 1e-6
    # two reads of W (4 x 24 x 16 fp32) per step
    assert abs(row["ours_w_read_gb_s"] * row["ours_s"] * 1e9 - 2 * 50 * 4 * 24 * 16 * 4) < 1
    assert row["copy_gb_s"] > 0


def test_the_sandbox_benchmark_times_each_mode_on_canonical_solutions(monkeypatch):
    from inilora import bench
    from inilora.evaluate import humaneval

    three = dict(list(humaneval.load_problems().items())[:3])
    monkeypatch.setattr(humaneval, "load_problems", lambda: three)
    rows = bench.sandbox_times(["none", "bwrap"], workers=1, repeats=1)
    assert [r["mode"] for r in rows] == ["none", "bwrap"]
    assert all(r["passed"] == r["checks"] == 3 and r["ms_per_check"] > 0 for r in rows)
