import pytest
import torch

from inilora.decompose import (
    SolverSettings,
    decompose_weights,
    eckart_young_mse,
    global_sigma,
    init_factors,
    load_artifact,
    save_artifact,
    solve,
)


def low_rank_plus_noise(n, out_f, in_f, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n, out_f, 6, generator=g)
    V = torch.randn(n, 6, in_f, generator=g)
    return (U @ V) * 0.05 + 0.01 * torch.randn(n, out_f, in_f, generator=g)


def test_batched_solver_reaches_eckart_young_optimum():
    W = low_rank_plus_noise(4, 32, 24)
    settings = SolverSettings(rank=4, lr=1e-2, iterations=3000, step_size=1000)
    A0, B0 = init_factors(list("abcd"), 32, 24, 4, [0.05] * 4, seed=0)
    (ck,) = solve(W, A0, B0, settings, [3000])
    ratio = ck.mse / eckart_young_mse(W, 4).float()
    assert torch.all(ratio < 1.01), ratio
    # and it really optimised: the start was far away
    (start,) = solve(W, A0, B0, settings, [0])
    assert torch.all(start.mse / eckart_young_mse(W, 4).float() > 2)


def test_solver_matches_autograd_adam_with_the_original_steplr_order():
    """The closed-form batched update is the paper code's per-matrix Adam + StepLR, quirk included."""
    W = low_rank_plus_noise(2, 20, 16, seed=1)
    settings = SolverSettings(rank=3, lr=5e-3, iterations=300, step_size=100, gamma=0.5)
    A0, B0 = init_factors(["x", "y"], 20, 16, 3, [0.1, 0.1], seed=3)
    (ck,) = solve(W, A0, B0, settings, [300])
    for i in range(2):
        U = B0[i].clone().requires_grad_()
        P = A0[i].clone().requires_grad_()
        opt = torch.optim.Adam([U, P], lr=settings.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=0.5)
        with pytest.warns(UserWarning):  # torch warns about the scheduler-before-optimizer order
            for _ in range(300):
                opt.zero_grad()
                ((U @ P - W[i]) ** 2).mean().backward()
                sched.step()
                opt.step()
        torch.testing.assert_close(ck.B[i], U.detach(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ck.A[i], P.detach(), atol=1e-5, rtol=1e-4)


def test_batched_equals_each_matrix_alone():
    g = torch.Generator().manual_seed(5)
    weights = {f"layers.{i}.q_proj": torch.randn(24, 16, generator=g) * 0.1 for i in range(3)}
    weights |= {f"layers.{i}.v_proj": torch.randn(8, 16, generator=g) * 0.1 for i in range(3)}
    settings = SolverSettings(rank=4, lr=5e-3, iterations=200)
    together = decompose_weights(weights, settings, [200])[200]
    for name in weights:
        # alone, but with the same per-type sigma the batch used
        others = {n: w for n, w in weights.items() if n.endswith(name[-6:])}
        alone = decompose_weights(others, settings, [200])[200]
        torch.testing.assert_close(alone["A"][name], together["A"][name], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(alone["B"][name], together["B"][name], atol=1e-6, rtol=1e-5)


def test_global_sigma_is_rounded_mean_of_layer_stds():
    ws = [torch.full((10, 10), 0.0) + torch.linspace(-1, 1, 100).reshape(10, 10) * s for s in (0.1, 0.3)]
    expected = round((float(ws[0].std()) + float(ws[1].std())) / 2, 3)
    assert global_sigma(ws) == expected


def test_checkpoints_in_one_run_and_artifact_round_trip(tmp_path):
    g = torch.Generator().manual_seed(7)
    weights = {"m.0.q_proj": torch.randn(12, 10, generator=g), "m.1.q_proj": torch.randn(12, 10, generator=g)}
    res = decompose_weights(weights, SolverSettings(rank=2, lr=1e-2, iterations=50), [0, 20, 50])
    assert set(res) == {0, 20, 50}
    assert res[50]["mse"]["m.0.q_proj"] < res[20]["mse"]["m.0.q_proj"] < res[0]["mse"]["m.0.q_proj"]
    st, js = tmp_path / "it50.safetensors", tmp_path / "it50.json"
    save_artifact(st, js, res[50], {"rank": 2})
    back = load_artifact(st)
    for n in weights:
        assert back[n]["A"].shape == (2, 10) and back[n]["B"].shape == (12, 2)
        torch.testing.assert_close(back[n]["A"], res[50]["A"][n])
        torch.testing.assert_close(back[n]["B"], res[50]["B"][n])
    import json

    meta = json.loads(js.read_text())
    assert meta["modules"]["m.0.q_proj"]["ratio_to_optimum"] >= 1.0


def test_rank_above_matrix_size_is_refused():
    with pytest.raises(ValueError, match="exceeds min"):
        decompose_weights({"a.q_proj": torch.randn(4, 3)}, SolverSettings(rank=5, iterations=1), [1])


def test_chunking_by_memory_budget_changes_nothing():
    weights = {f"l.{i}.q_proj": t for i, t in enumerate(low_rank_plus_noise(5, 16, 12, seed=2))}
    whole = decompose_weights(weights, SolverSettings(rank=3, lr=1e-2, iterations=100), [100])[100]
    per_matrix_mb = 16 * 12 * 4 / 2**20
    chunked = decompose_weights(weights, SolverSettings(rank=3, lr=1e-2, iterations=100, chunk_mb=2.5 * per_matrix_mb),
                                [100])[100]
    for n in weights:
        torch.testing.assert_close(chunked["A"][n], whole["A"][n], atol=1e-6, rtol=1e-5)


def test_early_stop_is_off_by_default_and_stops_within_tolerance():
    W = low_rank_plus_noise(2, 24, 20, seed=4)
    A0, B0 = init_factors(["a", "b"], 24, 20, 4, [0.05, 0.05], seed=0)
    opt = eckart_young_mse(W, 4)
    settings = SolverSettings(rank=4, lr=1e-2, iterations=4000, early_stop_tol=0.02, log_every=50)
    (ck,) = solve(W, A0, B0, settings, [4000], optimum=opt)
    assert ck.stopped_at is not None and ck.stopped_at < 4000
    assert torch.all(ck.mse <= opt.float() * 1.021)
    (full,) = solve(W, A0, B0, SolverSettings(rank=4, lr=1e-2, iterations=4000, log_every=50), [4000], optimum=opt)
    assert full.stopped_at is None


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_narrow_weight_reads_stay_close_to_fp32(dtype):
    W = low_rank_plus_noise(2, 32, 24, seed=6)
    A0, B0 = init_factors(["a", "b"], 32, 24, 4, [0.05, 0.05], seed=0)
    (ref,) = solve(W, A0, B0, SolverSettings(rank=4, lr=1e-2, iterations=1500), [1500])
    (low,) = solve(W, A0, B0, SolverSettings(rank=4, lr=1e-2, iterations=1500, weight_dtype=dtype), [1500])
    assert torch.all((low.mse / ref.mse - 1).abs() < 0.02)


def test_the_gpu_and_cpu_forms_of_the_products_reading_w_agree():
    from inilora.decompose import products_reading_w

    W = low_rank_plus_noise(3, 20, 12, seed=2)
    A, B = torch.randn(3, 4, 12), torch.randn(3, 20, 4)
    for device_type in ("cpu", "cuda"):
        WAt, BtW = products_reading_w(device_type)(W, A, B)
        torch.testing.assert_close(WAt, W @ A.transpose(1, 2))
        torch.testing.assert_close(BtW, B.transpose(1, 2) @ W)


def test_tf32_reads_change_nothing_on_a_cpu():
    W = low_rank_plus_noise(2, 32, 24, seed=6)
    A0, B0 = init_factors(["a", "b"], 32, 24, 4, [0.05, 0.05], seed=0)
    (ref,) = solve(W, A0, B0, SolverSettings(rank=4, lr=1e-2, iterations=50), [50])
    (tf,) = solve(W, A0, B0, SolverSettings(rank=4, lr=1e-2, iterations=50, weight_dtype="tfloat32"), [50])
    assert torch.equal(ref.A, tf.A) and torch.equal(ref.B, tf.B)


def test_divergence_stops_with_the_iteration_and_the_fix():
    W = low_rank_plus_noise(2, 16, 12)
    A0, B0 = init_factors(["a", "b"], 16, 12, 3, [0.1, 0.1], seed=0)
    with pytest.raises(FloatingPointError, match=r"diverged at iteration \d+: non-finite MSE .* lower decompose.lr"):
        list(solve(W, A0, B0, SolverSettings(rank=3, lr=1e30, iterations=500, log_every=10), [500]))


def test_same_config_and_seed_give_a_bit_identical_artifact(tmp_path):
    g = torch.Generator().manual_seed(9)
    weights = {f"m.{i}.v_proj": torch.randn(20, 16, generator=g) for i in range(3)}
    paths = []
    for k in range(2):
        res = decompose_weights(weights, SolverSettings(rank=3, lr=1e-2, iterations=80, seed=4), [80])[80]
        paths.append(tmp_path / f"run{k}.safetensors")
        save_artifact(paths[-1], tmp_path / f"run{k}.json", res, {"rank": 3})
    assert paths[0].read_bytes() == paths[1].read_bytes()
    other = decompose_weights(weights, SolverSettings(rank=3, lr=1e-2, iterations=80, seed=5), [80])[80]
    assert not torch.equal(other["A"]["m.0.v_proj"], res["A"]["m.0.v_proj"])
