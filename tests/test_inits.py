import copy

import pytest
import torch

from inilora.decompose import SolverSettings, decompose_weights, save_artifact
from inilora.inits import RESIDUAL, InitError, apply_init, lora_layers, save_initial_adapter
from inilora.models import target_linears

TARGETS = ["q_proj", "v_proj"]


@pytest.fixture
def factors_file(tiny_llama, tmp_path):
    weights = {n: m.weight.detach().clone() for n, m in target_linears(tiny_llama, TARGETS).items()}
    res = decompose_weights(weights, SolverSettings(rank=4, lr=1e-2, iterations=300), [300])[300]
    path = tmp_path / "it300.safetensors"
    save_artifact(path, tmp_path / "it300.json", res, {"rank": 4})
    return path


def options(method, factors_file):
    return {"factors_path": str(factors_file)} if method == "inilora" else {}


@pytest.mark.parametrize("method", sorted(RESIDUAL | {"lora"}))
@pytest.mark.parametrize("alpha", [4, 16])
def test_step0_logits_equal_base_model(method, alpha, tiny_llama, input_ids, factors_file):
    with torch.no_grad():
        base = tiny_llama(input_ids).logits
    peft_model = apply_init(copy.deepcopy(tiny_llama), method, 4, alpha, TARGETS, **options(method, factors_file))
    with torch.no_grad():
        init = peft_model(input_ids).logits
    assert (init - base).abs().max() < 1e-4
    if method in RESIDUAL:  # the adapter really carries weight, and the base moved by exactly that
        for layer in lora_layers(peft_model).values():
            assert layer.lora_B["default"].weight.abs().max() > 1e-3


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
    with pytest.raises(InitError, match="expected rank 8"):
        apply_init(copy.deepcopy(tiny_llama), "inilora", 8, 8, TARGETS, factors_path=str(factors_file))


def test_unknown_method_and_option_name_the_valid_ones(tiny_llama):
    with pytest.raises(InitError, match=r"unknown init method 'nope'; valid: \['inilora', 'lora', 'milora', 'pissa'\]"):
        apply_init(tiny_llama, "nope", 4, 4, TARGETS)
    with pytest.raises(InitError, match=r"unknown option\(s\) \['sigma'\]; valid: \['svd_niter'\]"):
        apply_init(tiny_llama, "pissa", 4, 4, TARGETS, sigma=0.1)


@pytest.mark.parametrize("method", ["milora", "inilora"])
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
