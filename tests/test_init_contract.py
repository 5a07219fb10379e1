"""The contract PEFT's own tests (tests/test_initialization.py) hold its inits to, for every registry entry.

- the step-0 output equals the base model's where the method claims it (tests/test_inits.py);
- the saved adapter reproduces the fine-tuned output on the *original* base: through PEFT's
  rank-2r conversion for a residual init, as saved for the others;
- random factors pass a Kolmogorov-Smirnov test against the distribution they claim;
- unknown options are refused with the valid ones listed;
- a changed base combined with another adapter is warned about, once.
"""

import copy
import math
import re
import warnings

import pytest
import torch
from scipy import stats
from test_inits import TARGETS, options

from inilora.inits import REGISTRY, InitError, apply_init, lora_layers, save_initial_adapter

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # the changed-base warning has its own test
ALPHA = 8


def _move_adapters(peft_model) -> None:
    """Stand-in for training: every trainable factor moves."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for layer in lora_layers(peft_model).values():
            for factor in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
                if factor.requires_grad:
                    factor.add_(0.05 * torch.randn(factor.shape, generator=g))


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_the_saved_adapter_reproduces_the_fine_tuned_output_on_the_original_base(method, tiny_llama, input_ids,
                                                                                factors_file, tmp_path):
    from peft import PeftModel

    record = REGISTRY[method]
    peft_model = apply_init(copy.deepcopy(tiny_llama), method, 4, ALPHA, TARGETS, **options(method, factors_file))
    save_initial_adapter(peft_model, tmp_path / "init")
    _move_adapters(peft_model)
    with torch.no_grad():
        tuned = peft_model(input_ids).logits
    kwargs = {"path_initial_model_for_weight_conversion": str(tmp_path / "init")} if record.is_residual() else {}
    peft_model.save_pretrained(str(tmp_path / "final"), **kwargs)
    reloaded = PeftModel.from_pretrained(copy.deepcopy(tiny_llama), str(tmp_path / "final"))
    with torch.no_grad():
        assert (reloaded(input_ids).logits - tuned).abs().max() < 1e-4


def _factors(method, tiny_llama, **opts):
    layers = lora_layers(apply_init(copy.deepcopy(tiny_llama), method, 4, ALPHA, TARGETS, **opts))
    return [(layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()) for layer in layers.values()]


def _ks_uniform(x: torch.Tensor, bound: float) -> float:
    return stats.kstest(x.flatten().numpy(), stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue


def _ks_normal(x: torch.Tensor, std: float) -> float:
    return stats.kstest(x.flatten().numpy(), stats.norm(scale=std).cdf).pvalue


# (method, options, factor, claimed distribution as a p-value function of the factor); in = 32, r = 4
CLAIMS = [
    ("lora", {}, "A", lambda A: _ks_uniform(A, 1 / math.sqrt(A.shape[1]))),  # kaiming_uniform(a=sqrt 5)
    ("gaussian", {}, "A", lambda A: _ks_normal(A, 1 / 4)),  # PEFT: N(0, (1/r)^2), r = 4
    ("lora_reversed", {}, "B", lambda B: _ks_uniform(B, 1 / math.sqrt(B.shape[1]))),
    ("nonzero", {}, "A", lambda A: _ks_uniform(A, math.sqrt(1 / A.shape[1]))),
    ("nonzero", {"scale_b": 0.25}, "B", lambda B: _ks_uniform(B, math.sqrt(0.25 / 32))),
    ("inilora_alpha", {"std": 0.5}, "A", lambda A: _ks_normal(A, 0.5)),
    # orthogonal: each row of A is iid normal with a row-dependent std: standardised, N(0, 1)
    ("orthogonal", {}, "A", lambda A: stats.kstest(((A - 0) / A.std(dim=1, keepdim=True)).flatten().numpy(),
                                                   stats.norm.cdf).pvalue),
]


@pytest.mark.parametrize("method,opts,which,pvalue", CLAIMS, ids=[f"{m}-{w}-{o}" for m, o, w, _ in CLAIMS])
def test_random_factors_pass_a_ks_test_against_the_distribution_they_claim(method, opts, which, pvalue, tiny_llama):
    values = torch.cat([(A if which == "A" else B).flatten() for A, B in _factors(method, tiny_llama, **opts)])
    shaped = values.view(-1, 32) if which == "A" else values.view(-1, 4)  # rows of A (in = 32), of B (r = 4)
    assert pvalue(shaped) > 0.01


def test_the_ks_test_has_power_a_wrong_claim_fails(tiny_llama):
    A = torch.cat([A for A, _ in _factors("lora", tiny_llama)]).view(-1, 32)
    assert _ks_uniform(A, 2 / math.sqrt(32)) < 1e-6 and _ks_normal(A, 1 / math.sqrt(32)) < 0.01


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_unknown_options_are_refused_with_the_valid_ones_listed(method, tiny_llama):
    valid = sorted(REGISTRY[method].option_names)
    message = f"method '{method}' got unknown option(s) ['no_such_option']; valid: {valid or 'none'}"
    with pytest.raises(InitError, match=re.escape(message)):
        apply_init(copy.deepcopy(tiny_llama), method, 4, ALPHA, TARGETS, no_such_option=1)


@pytest.mark.parametrize("method,bad", [("orthogonal", {}), ("corda", {"corda_method": "xpm"}),
                                        ("eva", {"rho": 0.5}), ("loraga_peft", {"direction": "BA"}),
                                        ("nonzero", {"scale_b": -1}), ("lora_one", {"gamma": 0})])
def test_bad_option_values_name_the_option_and_what_is_allowed(method, bad, tiny_llama, factors_file):
    rank = 3 if method == "orthogonal" else 4
    with pytest.raises(InitError, match=r"even rank|allowed"):
        apply_init(copy.deepcopy(tiny_llama), method, rank, ALPHA, TARGETS, **{**options(method, factors_file), **bad})


def test_mica_trains_a_only(tiny_llama):
    peft_model = apply_init(copy.deepcopy(tiny_llama), "mica", 4, ALPHA, TARGETS)
    for layer in lora_layers(peft_model).values():
        assert layer.lora_A["default"].weight.requires_grad and not layer.lora_B["default"].weight.requires_grad
        B = layer.lora_B["default"].weight
        assert torch.allclose(B.T @ B, torch.eye(4), atol=1e-5)  # orthonormal minor left singular vectors


def test_eva_redistributes_ranks_within_rho(tiny_llama, factors_file):
    layers = lora_layers(apply_init(copy.deepcopy(tiny_llama), "eva", 4, ALPHA, TARGETS, **options("eva", factors_file)))
    ranks = [layer.r["default"] for layer in layers.values()]
    assert sum(ranks) == 4 * len(ranks) and max(ranks) <= 8  # the budget is kept, each rank <= r * rho


def test_a_changed_base_with_another_adapter_is_warned_about_once(tiny_llama):
    from peft import LoraConfig

    peft_model = apply_init(copy.deepcopy(tiny_llama), "pissa", 4, ALPHA, TARGETS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model.add_adapter("other", LoraConfig(r=2, target_modules=TARGETS))
        peft_model.add_adapter("third", LoraConfig(r=2, target_modules=TARGETS))
    said = [str(w.message) for w in caught if "changed this model's base weights" in str(w.message)]
    assert len(said) == 1 and "'pissa' init" in said[0] and "adapter 'other'" in said[0].lower()
    assert "fresh copy of the pretrained model" in said[0]
    copied = copy.deepcopy(peft_model)  # the copy warns for itself, and adds to itself
    assert type(copied) is type(peft_model)
    with warnings.catch_warnings(record=True) as none:
        warnings.simplefilter("always")
        apply_init(copy.deepcopy(tiny_llama), "lora", 4, ALPHA, TARGETS).add_adapter("x", LoraConfig(r=2, target_modules=TARGETS))
    assert not [w for w in none if "changed this model's base weights" in str(w.message)]


VARIANTS = {"rslora": {"use_rslora": True}, "rslora+dora": {"use_rslora": True, "use_dora": True}}
ADAPTER_CASES = [(m, v) for m in sorted(REGISTRY) for v in VARIANTS if REGISTRY[m].takes_adapter_options(VARIANTS[v])]


@pytest.mark.parametrize("method,variant", ADAPTER_CASES, ids=[f"{m}-{v}" for m, v in ADAPTER_CASES])
def test_rslora_and_dora_keep_the_init_contract(method, variant, tiny_llama, input_ids, factors_file, tmp_path):
    """With rsLoRA's scaling and/or DoRA, every init that takes them still: keeps the step-0 output
    (where it claims to), scales by alpha / sqrt(r), and saves an adapter that reproduces the
    fine-tuned output on the original base (residual inits through PEFT's rank-2r conversion)."""
    from peft import PeftModel

    opts = VARIANTS[variant]
    record = REGISTRY[method]
    with torch.no_grad():
        base = tiny_llama(input_ids).logits
    peft_model = apply_init(copy.deepcopy(tiny_llama), method, 4, ALPHA, TARGETS, **opts, **options(method, factors_file))
    config = peft_model.peft_config["default"]
    assert config.use_rslora == opts.get("use_rslora", False) and config.use_dora == opts.get("use_dora", False)
    for layer in lora_layers(peft_model).values():
        assert layer.scaling["default"] == pytest.approx(ALPHA / (2 if opts.get("use_rslora") else 4))
        assert ("default" in layer.lora_magnitude_vector) == opts.get("use_dora", False)
        if opts.get("use_dora"):  # the magnitude of the weight the init left, W + s B A, as PEFT's own inits get
            with torch.no_grad():
                A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
                weight = layer.get_base_layer().weight + layer.scaling["default"] * B @ A
                assert torch.allclose(layer.lora_magnitude_vector["default"].weight, weight.norm(dim=1), atol=1e-5)
    with torch.no_grad():
        init = peft_model(input_ids).logits
    if record.keeps_output():
        assert (init - base).abs().max() < 1e-4
    save_initial_adapter(peft_model, tmp_path / "init")
    _move_adapters(peft_model)
    with torch.no_grad():
        tuned = peft_model(input_ids).logits
    assert (tuned - init).abs().max() > 1e-4  # the stand-in for training moved the output
    kwargs = {"path_initial_model_for_weight_conversion": str(tmp_path / "init")} if record.is_residual() else {}
    peft_model.save_pretrained(str(tmp_path / "final"), **kwargs)
    reloaded = PeftModel.from_pretrained(copy.deepcopy(tiny_llama), str(tmp_path / "final"))
    with torch.no_grad():
        assert (reloaded(input_ids).logits - tuned).abs().max() < 1e-4


def test_dora_is_refused_where_it_cannot_keep_the_contract_naming_the_option(tiny_llama):
    refused = sorted(m for m in REGISTRY if not REGISTRY[m].takes_adapter_options({"use_dora": True}))
    for method in refused:
        with pytest.raises(InitError, match=f"method '{method}' option use_dora=True: .+"):
            REGISTRY[method](copy.deepcopy(tiny_llama), 4, ALPHA, TARGETS, use_dora=True)
    with pytest.raises(InitError, match="method 'lora' option use_rslora='yes': allowed is true or false"):
        apply_init(copy.deepcopy(tiny_llama), "lora", 4, ALPHA, TARGETS, use_rslora="yes")
