import pytest

from inilora.speed import random_weights, run
from inilora.decompose import SolverSettings


def test_reference_and_solver_reach_the_same_mse_side_by_side():
    weights = random_weights([(3, 24, 16)], std=0.1)
    (row,) = run(weights, SolverSettings(rank=4, iterations=200, step_size=50), "cpu", reference_count=None)
    assert abs(row["ours_vs_reference_mse"] - 1) < 1e-4
    assert row["svd_mse_ratio"] < 1 + 1e-4  # the SVD is the optimum
    assert row["ours_mse_ratio"] >= row["svd_mse_ratio"] - 1e-6
    assert row["reference_s"] > 0 and row["ours_s"] > 0


def tiny_config(tmp_path, model_dir):
    """A config with one benchmark of 4 chain_sum items on the tiny model."""
    import yaml

    config = {"models": {"tiny": {"path": str(model_dir)}}, "methods": ["lora"],
              "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 8, "seed": 1}],
                              "benchmarks": ["b"]}},
              "benchmarks": {"b": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 4, "seed": 9},
                                   "max_new_tokens": 5, "batch_size": 2}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return str(tmp_path / "c.yaml")


def test_generation_benchmark_compares_the_ways_of_batching_on_a_benchmarks_prompts(tmp_path, tiny_llama_dir):
    from inilora.speed import GENERATE_RUNS, generation_times

    rows, bounds = generation_times(str(tiny_llama_dir), tiny_config(tmp_path, tiny_llama_dir), ["b"], single=True,
                                    overheads=(0,))
    assert [r["run"] for r in rows] == [label for label, _, _ in GENERATE_RUNS] + [
        "one at a time", "the default, prefill groups at an overhead of 0 tokens"]
    assert [r["batch"] for r in rows] == [2, 2, 2, 2, 2, 2, 16, 2, 1, 2]  # the benchmark's own batch unless a run sets one
    plain, drafting = rows[2], rows[3]  # the default without and with drafted tokens
    assert plain["drafted"] == 0 and drafting["decode_steps"] <= plain["decode_steps"]
    assert 0 <= drafting["drafted_taken"] <= drafting["drafted"]
    assert all(r["seconds"] > 0 and r["generated_tokens_per_s"] > 0 for r in rows)
    assert all(r["same_output"] == 1.0 for r in rows)  # no way of batching changes a greedy output
    assert sorted(b["batch"] for b in bounds) == [1, 2, 16] and all(0 < r["share_of_floor"] for r in rows)


def test_the_decode_bound_counts_every_linear_and_the_kv_cache(tiny_llama):
    """FLOPs and bytes by hand from the model's shapes; the floor is the slower of the two limits."""
    import torch

    from inilora.speed import decode_bound

    b = decode_bound(tiny_llama, batch=3, context=10, repeats=1)
    cfg = tiny_llama.config
    weights = sum(m.weight.numel() for m in tiny_llama.modules() if isinstance(m, torch.nn.Linear))
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * 10 * 3
    assert b["gflop_per_step"] * 1e9 == pytest.approx(2 * weights * 3 + attention)
    cache = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 10 * 3 * 4
    assert b["gb_read_per_step"] * 1e9 == pytest.approx(weights * 4 + cache)
    assert b["floor_tokens_per_s"] == pytest.approx(3 / (max(b["matmul_ms"], b["memory_ms"]) / 1e3))
    # on a CPU the products are timed both ways and the faster is the bound's
    assert b["product"] in ("torch", "oneDNN, packed") and b["matmul_ms"] <= b["torch_matmul_ms"]
    assert (b["product"] == "torch") == (b["matmul_ms"] == b["torch_matmul_ms"])


def test_a_benchmark_can_ask_for_the_static_cache_and_a_bad_cache_is_refused(tiny_llama_dir):
    from inilora.evaluate.generate import generate
    from inilora.models import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(str(tiny_llama_dir)), load_causal_lm(str(tiny_llama_dir))
    prompts = ["What is 2 + 2?", "Name a colour of the sky at noon on a clear day"]
    assert generate(model, tok, prompts, 6, 2, kv_cache="static") == generate(model, tok, prompts, 6, 2)
    with pytest.raises(ValueError, match=r"kv_cache='paged': allowed are \['dynamic', 'static'\]"):
        generate(model, tok, prompts, 6, 2, kv_cache="paged")


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
    from inilora import speed
    from inilora.data import humaneval

    three = dict(list(humaneval.load_problems().items())[:3])
    monkeypatch.setattr(speed, "load_problems", lambda: three)
    rows = speed.sandbox_times(["none", "bwrap"], workers=1, repeats=1)
    assert [r["mode"] for r in rows] == ["none", "bwrap"]
    assert all(r["passed"] == r["checks"] == 3 and r["ms_per_check"] > 0 for r in rows)


def test_an_evaluation_job_is_split_into_phases_that_add_up(tmp_path, tiny_llama_dir):
    from inilora.speed import evaluation_profile

    rows = evaluation_profile(tiny_config(tmp_path, tiny_llama_dir), "b", str(tiny_llama_dir))
    by = {r["phase"]: r for r in rows}
    phases = [r for r in rows[:-1] if r["phase"] != "total" and not r["phase"].startswith("decode:")]
    assert by["total"]["seconds"] == pytest.approx(sum(r["seconds"] for r in phases))
    assert sum(r["share"] for r in phases) == pytest.approx(1.0)
    assert all(by[p]["seconds"] > 0 for p in ("start-up: interpreter and imports", "prefill", "decode",
                                              "stop strings: checks", "held-out loss"))
    (steps,) = [r["phase"] for r in rows if r["phase"].startswith("decode:")]
    assert "n = 4" in steps and "steps over" in steps  # 2 batches of 2 rows, at most 4 decode steps each


def test_one_pass_and_two_are_timed_side_by_side_with_the_same_answers_and_losses(tmp_path, tiny_llama_dir):
    import yaml

    from inilora.speed import evaluation_profile, pass_times

    path = tiny_config(tmp_path, tiny_llama_dir)
    config = yaml.safe_load(open(path))
    config["benchmarks"]["b"].update(batch_size=16, data={"loader": "reasoning_gym", "dataset": "chain_sum", "n": 20,
                                                          "seed": 9})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    (row,) = pass_times(str(tiny_llama_dir), path, ["b"])
    assert row["items"] == 20 and row["batch"] == 16 and row["one_pass_s"] > 0 and row["two_passes_s"] > 0
    assert row["same_answers"] == 20 and row["max_loss_diff"] == 0.0
    phases = {r["phase"] for r in evaluation_profile(path, "b", str(tiny_llama_dir))}
    assert "prefill" in phases and "decode" in phases and "held-out loss" not in phases  # the one pass is the prefill


def test_the_lm_head_benchmark_times_both_ways_and_finds_the_same_adapter(tmp_path, tiny_llama_dir):
    import yaml

    from inilora.speed import head_times

    path = tiny_config(tmp_path, tiny_llama_dir)
    config = yaml.safe_load(open(path))
    config["train"] = {"batch_size": 2, "grad_accum": 2, "max_length": 64, "learning_rate": 1e-2}
    config["ranks"] = [4]
    (tmp_path / "head.yaml").write_text(yaml.safe_dump(config))
    (row,) = head_times(str(tiny_llama_dir), str(tmp_path / "head.yaml"), "t", steps=2, repeats=2)
    assert row["steps"] == 2 and row["batch"] == 4 and row["every_position_s"] > 0 and row["answer_positions_s"] > 0
    assert row["max_adapter_diff"] < 1e-6 and row["max_loss_rel_diff"] < 1e-6  # float32 rounding at most
    assert row["same_adapter"] == (row["max_adapter_diff"] == 0.0)
