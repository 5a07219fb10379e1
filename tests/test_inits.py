import copy

import pytest
import torch

from inilora.decompose import ArtifactError, SolverSettings, decompose_weights, fingerprint, save_artifact
import math

from inilora.inits import (
    REGISTRY,
    InitError,
    apply_init,
    draw,
    lora_layers,
    save_initial_adapter,
)
from inilora.models import target_linears

TARGETS = ["q_proj", "v_proj"]
RESIDUAL = {m for m, record in REGISTRY.items() if record.is_residual()}  # with default options


def lm_batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(3, 300, (2, 10), generator=g)
        yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def options(method, factors_file):
    if method == "inilora":
        return {"factors_path": str(factors_file)}
    if method == "hrp":
        return {"data": lm_batches(), "steps": 3}
    if "data" in REGISTRY[method].needs:
        return {"data": lm_batches(), "batches": 3}
    return {}


ZERO_PRODUCT = sorted(set(REGISTRY) - RESIDUAL)
KEEPS = sorted(m for m, record in REGISTRY.items() if record.keeps_output())
CHANGES = sorted(set(REGISTRY) - set(KEEPS))  # lora_one, nonzero: the step-0 output moves by design


@pytest.mark.parametrize("method", KEEPS)
@pytest.mark.parametrize("alpha", [4, 16])
def test_step0_logits_equal_base_model(method, alpha, tiny_llama, input_ids, factors_file):
    with torch.no_grad():
        base = tiny_llama(input_ids).logits
    peft_model = apply_init(copy.deepcopy(tiny_llama), method, 4, alpha, TARGETS, **options(method, factors_file))
    with torch.no_grad():
        init = peft_model(input_ids).logits
    assert (init - base).abs().max() < 1e-4
    for layer in lora_layers(peft_model).values():
        BA = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        if method in RESIDUAL:  # the adapter really carries weight, and the base moved by exactly that
            assert BA.abs().max() > 1e-5  # (PEFT's LoRA-GA port: about 2e-4 here)
        else:  # the adapter contributes zero (orthogonal: non-zero factors whose product vanishes)
            assert BA.abs().max() < 1e-6


@pytest.mark.parametrize("method", CHANGES)
def test_methods_that_claim_a_step0_change_do_change_the_output(method, tiny_llama, input_ids, factors_file):
    with torch.no_grad():
        base = tiny_llama(input_ids).logits
    peft_model = apply_init(copy.deepcopy(tiny_llama), method, 4, 16, TARGETS, **options(method, factors_file))
    with torch.no_grad():
        assert (peft_model(input_ids).logits - base).abs().max() > 1e-4
    subtracted = apply_init(copy.deepcopy(tiny_llama), method, 4, 16, TARGETS, subtract=True,
                            **options(method, factors_file))
    assert REGISTRY[method].is_residual({"subtract": True}) and REGISTRY[method].keeps_output({"subtract": True})
    with torch.no_grad():  # the same factors, taken out of the base: the output is the base model's again
        assert (subtracted(input_ids).logits - base).abs().max() < 1e-4


def test_lora_reversed_zeroes_a_and_draws_b(tiny_llama):
    layers = lora_layers(apply_init(tiny_llama, "lora_reversed", 4, 4, TARGETS))
    for layer in layers.values():
        assert torch.count_nonzero(layer.lora_A["default"].weight) == 0
        B = layer.lora_B["default"].weight
        assert B.abs().max() <= 1 / math.sqrt(4) and B.std() > 0.2  # U(-1/sqrt r, 1/sqrt r): std 0.289


@pytest.mark.parametrize("distribution,std,expected", [
    ("normal", 0.5, lambda rows, cols: 0.5),
    ("uniform", 0.1, lambda rows, cols: 0.1),
    ("kaiming_normal", None, lambda rows, cols: math.sqrt(2 / cols)),
    ("kaiming_uniform", None, lambda rows, cols: math.sqrt(2 / cols)),  # bound sqrt(6/fan_in) -> std sqrt(2/fan_in)
    ("xavier_normal", None, lambda rows, cols: math.sqrt(2 / (rows + cols))),
    ("xavier_uniform", None, lambda rows, cols: math.sqrt(2 / (rows + cols))),
])
@pytest.mark.parametrize("shape", [(8, 512), (512, 8)])  # A (r x in) and B (out x r)
def test_factor_distributions_have_the_stds_pytorch_defines(distribution, std, expected, shape):
    x = draw(shape, distribution, std, torch.Generator().manual_seed(0))
    assert abs(float(x.std()) / expected(*shape) - 1) < 0.05
    ref = torch.empty(shape)
    if distribution.startswith(("kaiming", "xavier")):  # same scale as torch.nn.init's own
        getattr(torch.nn.init, distribution + "_")(ref)
        assert abs(float(x.std()) / float(ref.std()) - 1) < 0.08


def test_inilora_alpha_factors_have_std_sigma(tiny_llama):
    layers = lora_layers(apply_init(copy.deepcopy(tiny_llama), "inilora_alpha", 4, 4, TARGETS, std=0.5))
    values = torch.cat([torch.cat([layer.lora_A["default"].weight.flatten(), layer.lora_B["default"].weight.flatten()])
                        for layer in layers.values()])
    assert abs(float(values.std()) / 0.5 - 1) < 0.05


def test_inilora_random_uses_the_global_sigma_per_module_type(tiny_llama):
    from inilora.decompose import global_sigma

    q = [m.weight for n, m in target_linears(tiny_llama, ["q_proj"]).items()]
    layers = lora_layers(apply_init(copy.deepcopy(tiny_llama), "inilora_random", 4, 4, TARGETS))
    a = torch.cat([layer.lora_B["default"].weight.flatten() for n, layer in layers.items() if n.endswith("q_proj")])
    assert abs(float(a.std()) / global_sigma(q) - 1) < 0.15  # 2 x 32 x 4 draws
    with pytest.raises(InitError, match="distribution 'cauchy' unknown"):
        apply_init(copy.deepcopy(tiny_llama), "inilora_random", 4, 4, TARGETS, distribution="cauchy")


def test_random_inits_are_seeded(tiny_llama):
    a = lora_layers(apply_init(copy.deepcopy(tiny_llama), "inilora_beta_kn", 4, 4, TARGETS, seed=1))
    b = lora_layers(apply_init(copy.deepcopy(tiny_llama), "inilora_beta_kn", 4, 4, TARGETS, seed=1))
    c = lora_layers(apply_init(copy.deepcopy(tiny_llama), "inilora_beta_kn", 4, 4, TARGETS, seed=2))
    n = next(iter(a))
    assert torch.equal(a[n].lora_A["default"].weight, b[n].lora_A["default"].weight)
    assert not torch.equal(a[n].lora_A["default"].weight, c[n].lora_A["default"].weight)


def _truncated(W, rank, minor=False):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    sl = slice(-rank, None) if minor else slice(0, rank)
    return U[:, sl] @ torch.diag(S[sl]) @ Vh[sl]


@pytest.mark.parametrize("method,minor", [("pissa", False), ("milora", True)])
def test_svd_inits_hold_principal_or_minor_part(method, minor, tiny_llama):
    originals = {n: m.weight.detach().clone() for n, m in target_linears(tiny_llama, TARGETS).items()}
    peft_model = apply_init(copy.deepcopy(tiny_llama), method, 4, 8, TARGETS)
    for name, layer in lora_layers(peft_model).items():
        BA = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        torch.testing.assert_close(BA, _truncated(originals[name], 4, minor), atol=1e-5, rtol=1e-4)


def test_fast_pissa_is_seeded_and_leaves_the_callers_generator_alone(tiny_llama):
    def factors(seed):
        torch.manual_seed(123)
        layers = lora_layers(apply_init(copy.deepcopy(tiny_llama), "pissa", 4, 4, TARGETS, svd_niter=1, seed=seed))
        after = torch.rand(1)  # the caller's generator, as if PiSSA had drawn nothing
        return [layer.lora_A["default"].weight.detach().clone() for layer in layers.values()], after

    (a1, after1), (a2, after2), (b, _) = factors(1), factors(1), factors(2)
    torch.manual_seed(123)
    assert all(torch.equal(x, y) for x, y in zip(a1, a2)) and torch.equal(after1, torch.rand(1)) and torch.equal(after1, after2)
    assert any(not torch.equal(x, y) for x, y in zip(a1, b))  # one randomised-SVD iteration: the start shows
    assert REGISTRY["pissa"].takes_run_seed({"svd_niter": 1}) and not REGISTRY["pissa"].takes_run_seed({})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_rehearsal.sh runs it)")
def test_fast_pissa_and_dora_are_seeded_and_exact_on_the_gpu(tiny_llama, input_ids):
    """On CUDA: the randomised SVD draws from the run's seed (the caller's CUDA generator untouched),
    and rsLoRA + DoRA keep the base model's step-0 output."""
    model = tiny_llama.to("cuda")
    ids = input_ids.to("cuda")

    def factors(seed):
        torch.cuda.manual_seed(7)
        layers = lora_layers(apply_init(copy.deepcopy(model), "pissa", 4, 4, TARGETS, svd_niter=1, seed=seed))
        return [layer.lora_A["default"].weight.detach().clone() for layer in layers.values()], torch.rand(1, device="cuda")

    (a1, after1), (a2, after2) = factors(1), factors(1)
    torch.cuda.manual_seed(7)
    assert all(torch.equal(x, y) for x, y in zip(a1, a2)) and torch.equal(after1, torch.rand(1, device="cuda"))
    assert torch.equal(after1, after2)
    with torch.no_grad():
        base = model(ids).logits
        dora = apply_init(copy.deepcopy(model), "pissa", 4, 4, TARGETS, use_rslora=True, use_dora=True)
        assert next(dora.parameters()).device.type == "cuda"
        assert (dora(ids).logits - base).abs().max() < 1e-3


def test_pissa_is_peft_pissa(tiny_llama):
    from peft import LoraConfig, get_peft_model

    ours = apply_init(copy.deepcopy(tiny_llama), "pissa", 4, 4, TARGETS)
    peft_own = get_peft_model(copy.deepcopy(tiny_llama), LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS,
                                                                      init_lora_weights="pissa"))
    a, b = lora_layers(ours), lora_layers(peft_own)
    for name in a:
        torch.testing.assert_close(a[name].lora_A["default"].weight, b[name].lora_A["default"].weight)
        torch.testing.assert_close(a[name].get_base_layer().weight, b[name].get_base_layer().weight)


def test_inilora_loads_the_decomposition_factors(tiny_llama, factors_file):
    from inilora.decompose import load_artifact

    stored = load_artifact(factors_file)
    peft_model = apply_init(copy.deepcopy(tiny_llama), "inilora", 4, 4, TARGETS, factors_path=str(factors_file))
    for name, layer in lora_layers(peft_model).items():
        torch.testing.assert_close(layer.lora_A["default"].weight, stored[name]["A"])
        torch.testing.assert_close(layer.lora_B["default"].weight, stored[name]["B"])


def test_inilora_refuses_factors_of_another_rank(tiny_llama, factors_file):
    with pytest.raises(ArtifactError, match="holds rank-4 factors; this run needs rank 8"):
        apply_init(copy.deepcopy(tiny_llama), "inilora", 8, 8, TARGETS, factors_path=str(factors_file))


def test_inilora_refuses_factors_of_other_weights(factors_file):
    from conftest import make_llama

    other = make_llama(400, seed=1)  # same architecture, different weights
    with pytest.raises(ArtifactError, match="computed from other weights"):
        apply_init(other, "inilora", 4, 4, TARGETS, factors_path=str(factors_file))


def test_inilora_refuses_a_truncated_artifact(tiny_llama, factors_file):
    data = factors_file.read_bytes()
    factors_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="unreadable"):
        apply_init(copy.deepcopy(tiny_llama), "inilora", 4, 4, TARGETS, factors_path=str(factors_file))


def test_non_finite_init_is_stopped_naming_the_tensor(tiny_llama):
    with pytest.raises(InitError, match=r"non-finite values in model\.layers\.0\.self_attn\.q_proj lora_A"):
        apply_init(copy.deepcopy(tiny_llama), "inilora_alpha", 4, 4, TARGETS, std=float("inf"))


def test_unknown_method_and_option_name_the_valid_ones(tiny_llama):
    with pytest.raises(InitError, match=r"unknown init method 'nope'; valid: \['corda', 'eva', 'gaussian', 'hrp', "):
        apply_init(tiny_llama, "nope", 4, 4, TARGETS)
    with pytest.raises(InitError, match=r"unknown option\(s\) \['sigma'\]; valid: \['seed', 'svd_niter', 'use_dora', 'use_rslora'\]"):
        apply_init(tiny_llama, "pissa", 4, 4, TARGETS, sigma=0.1)


@pytest.mark.parametrize("method", sorted(RESIDUAL))
def test_trained_residual_adapter_loads_on_the_original_base(method, tiny_llama, input_ids, factors_file, tmp_path):
    """PEFT's rank-2r conversion: the saved adapter reproduces the fine-tuned logits on the unmodified base."""
    from peft import PeftModel

    peft_model = apply_init(copy.deepcopy(tiny_llama), method, 4, 4, TARGETS, **options(method, factors_file))
    save_initial_adapter(peft_model, tmp_path / "init")
    with torch.no_grad():  # stand-in for training: move every adapter
        for layer in lora_layers(peft_model).values():
            layer.lora_A["default"].weight.add_(0.05 * torch.randn_like(layer.lora_A["default"].weight))
            layer.lora_B["default"].weight.add_(0.05 * torch.randn_like(layer.lora_B["default"].weight))
        tuned = peft_model(input_ids).logits
    peft_model.save_pretrained(str(tmp_path / "final"), path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    reloaded = PeftModel.from_pretrained(copy.deepcopy(tiny_llama), str(tmp_path / "final"))
    assert reloaded.peft_config["default"].r == 8
    with torch.no_grad():
        assert (reloaded(input_ids).logits - tuned).abs().max() < 1e-4


@pytest.fixture
def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    model = BertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("query.weight", "value.weight")):
                p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("method", KEEPS)
def test_step0_logits_equal_base_on_a_bert_classifier(method, tiny_bert, input_ids, tmp_path):
    """query/value targets, SEQ_CLS task type (the classifier head trains too, as in the paper's GLUE runs)."""
    bert_targets = ["query", "value"]
    opts = {}
    if method == "inilora":
        weights = {n: m.weight.detach().clone() for n, m in target_linears(tiny_bert, bert_targets).items()}
        res = decompose_weights(weights, SolverSettings(rank=4, lr=1e-2, iterations=100), [100])[100]
        opts["factors_path"] = str(tmp_path / "it100.safetensors")
        save_artifact(opts["factors_path"], tmp_path / "it100.json", res,
                      {"rank": 4, "model": {"name": "bert", "path": "memory", "fingerprint": fingerprint(weights)}})
    if "data" in REGISTRY[method].needs:
        opts["data"] = [{"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
                         "labels": torch.tensor([0, 1])}]
    with torch.no_grad():
        base = tiny_bert(input_ids).logits
    peft_model = apply_init(copy.deepcopy(tiny_bert), method, 4, 4, bert_targets, task_type="SEQ_CLS", **opts)
    peft_model.eval()
    with torch.no_grad():
        assert (peft_model(input_ids).logits - base).abs().max() < 1e-4
    assert any(p.requires_grad for n, p in peft_model.named_parameters() if "classifier" in n)


def test_loraga_factors_follow_the_official_arb2r_stable_rule():
    """A spans the top-r right singular space of the gradient, B the next r left singular vectors."""
    from inilora.inits.gradient import loraga_factors

    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(48, 48, generator=g))
    V, _ = torch.linalg.qr(torch.randn(40, 40, generator=g))
    S = torch.tensor([2.0 ** -k for k in range(40)])
    G = U[:, :40] @ torch.diag(S) @ V.T  # known singular vectors, well separated values
    A, B = loraga_factors(G, rank=4, gamma=16, svd_niter=8)
    scale = 48**0.25 / 4
    Vr, Ur = V[:, :4], U[:, 4:8]
    torch.testing.assert_close((A / scale) @ Vr @ Vr.T, A / scale, atol=1e-4, rtol=1e-4)  # rows in span(V_r)
    torch.testing.assert_close(Ur @ Ur.T @ (B / scale), B / scale, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close((A / scale) @ (A / scale).T, torch.eye(4), atol=1e-4, rtol=1e-4)  # orthonormal


def test_loraga_needs_training_data(tiny_llama):
    with pytest.raises(InitError, match="needs training batches"):
        apply_init(tiny_llama, "loraga", 4, 4, TARGETS)


def test_hrp_direction_form_takes_the_top_right_singular_vectors_of_the_preheated_update(tiny_llama):
    from inilora.inits.gradient import preheat_updates

    updates = preheat_updates(copy.deepcopy(tiny_llama), TARGETS, lm_batches(), 16, 3, 1e-3, seed=0)
    layers = lora_layers(apply_init(copy.deepcopy(tiny_llama), "hrp", 4, 4, TARGETS, data=lm_batches(), steps=3,
                                    preheat_rank=16))
    for name, layer in layers.items():
        A = layer.lora_A["default"].weight * math.sqrt(3)
        _, _, Vh = torch.linalg.svd(updates[name], full_matrices=False)
        Vr = Vh[:4].T
        torch.testing.assert_close(A @ A.T, torch.eye(4), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(A @ Vr @ Vr.T, A, atol=1e-4, rtol=1e-4)
        assert torch.count_nonzero(layer.lora_B["default"].weight) == 0


def test_hrp_residual_form_keeps_step0_logits(tiny_llama, input_ids):
    from inilora.inits import is_residual

    with torch.no_grad():
        base = tiny_llama(input_ids).logits
    peft_model = apply_init(copy.deepcopy(tiny_llama), "hrp", 4, 4, TARGETS, data=lm_batches(), steps=3,
                            form="residual")
    with torch.no_grad():
        assert (peft_model(input_ids).logits - base).abs().max() < 1e-4
    assert is_residual("hrp", {"form": "residual"}) and not is_residual("hrp", {})
    layer = next(iter(lora_layers(peft_model).values()))
    assert (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).abs().max() > 0


def test_loraga_matches_peft_lora_ga_up_to_the_documented_differences(tiny_llama, input_ids):
    """Cross-check with PEFT's port: the same mean gradient, the same singular directions; only the
    documented scale differs (PEFT: B = U[:, r:2r] diag(S[r:2r]) d^¼/√γ, A = Vᵀ[:r] unscaled;
    official: both x d^¼/√γ, no S). Rank 8 makes q = 4r cover the tiny matrices, so both SVDs are exact."""
    from peft import LoraConfig, LoraGAConfig, get_peft_model, preprocess_loraga

    from inilora.inits.gradient import estimate_gradients

    batches = list(lm_batches(3))
    ours_grads = estimate_gradients(copy.deepcopy(tiny_llama), TARGETS, batches, 3)
    peft_base = copy.deepcopy(tiny_llama)
    config = LoraConfig(r=8, lora_alpha=8, target_modules=TARGETS, init_lora_weights="lora_ga",
                        lora_ga_config=LoraGAConfig(direction="ArB2r", scale="stable", stable_gamma=16))

    def train_step():
        for b in batches:
            peft_base(**b).loss.backward()

    preprocess_loraga(peft_base, config, train_step)
    for name, module in target_linears(peft_base, TARGETS).items():
        torch.testing.assert_close(module._peft_loraga_grad, ours_grads[name], atol=1e-6, rtol=1e-5)
    theirs = lora_layers(get_peft_model(peft_base, config).eval())
    ours = lora_layers(apply_init(copy.deepcopy(tiny_llama), "loraga", 8, 8, TARGETS, data=iter(batches),
                                  batches=3).eval())
    for name, layer in ours.items():
        A_o, B_o = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        A_p, B_p = theirs[name].lora_A["default"].weight, theirs[name].lora_B["default"].weight
        scale = B_o.shape[0] ** 0.25 / 4
        S = torch.linalg.svdvals(ours_grads[next(n for n in ours_grads if n.endswith(name))])
        cos_a = torch.nn.functional.cosine_similarity(A_o, A_p, dim=1).abs()
        cos_b = torch.nn.functional.cosine_similarity(B_o, B_p, dim=0).abs()
        assert cos_a.min() > 0.999 and cos_b.min() > 0.999  # same singular vectors, up to sign
        torch.testing.assert_close(A_o.norm(dim=1), torch.full((8,), scale), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(A_p.norm(dim=1), torch.ones(8), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(B_p.norm(dim=0) / B_o.norm(dim=0), S[8:16], atol=1e-5, rtol=1e-4)
