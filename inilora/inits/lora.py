"""LoRA and the inits that draw random factors: the base weight is untouched (unless asked)."""

# torch, peft and inilora.decompose (torch) are imported inside the functions: the config layer reads the
# @register records while Snakemake parses the workflow (in every cluster job too), which must not import them.
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from inilora.inits.registry import check_positive, register
from inilora.inits.residual import lora_config, lora_layers, subtract_adapter

if TYPE_CHECKING:
    from peft import PeftModel


@register("lora", paper="Hu et al. 2021, arXiv:2106.09685")
def init_lora(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """LoRA (Hu et al. 2021) as PEFT does it: A Kaiming-uniform(a=sqrt 5), B = 0, so BA = 0."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(rank, alpha, target_modules, True, task_type))


@register("gaussian", paper="PEFT init_lora_weights='gaussian'")
def init_gaussian(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """PEFT's ``gaussian``: A ~ N(0, (1/r)^2), B = 0."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(rank, alpha, target_modules, "gaussian", task_type))


@register("lora_reversed", paper="Hayou, Ghosh & Yu 2024, arXiv:2406.08447")
def init_lora_reversed(model, rank, alpha, target_modules, task_type=None, seed: int = 0) -> PeftModel:
    """Init[B] of Hayou, Ghosh & Yu 2024 ("The Impact of Initialization on LoRA Finetuning
    Dynamics"): A = 0 and B random, the mirror of LoRA's B = 0. B is drawn as PEFT draws A,
    Kaiming-uniform with a = sqrt(5), here with fan_in = r: U(-1/sqrt(r), 1/sqrt(r)).
    BA = 0, so nothing is subtracted from the base.
    """
    import torch

    from inilora.decompose.solver import module_seed

    peft_model = init_lora(model, rank, alpha, target_modules, task_type)
    with torch.no_grad():
        for name, layer in lora_layers(peft_model).items():
            g = torch.Generator().manual_seed(module_seed(seed, name))
            B = layer.lora_B["default"].weight
            B.copy_(torch.rand(B.shape, generator=g).mul_(2).sub_(1).div_(math.sqrt(rank)))
            layer.lora_A["default"].weight.zero_()
    return peft_model


@register("nonzero", residual=lambda options: bool(options.get("subtract", False)),
          changes_output=lambda options: not options.get("subtract", False),
          paper="Li et al. 2025 (ICML), arXiv:2505.23194")
def init_nonzero(model, rank, alpha, target_modules, task_type=None, scale_a: float = 1.0, scale_b: float = 1.0,
                 subtract: bool = False, seed: int = 0) -> PeftModel:
    """Non-zero LoRA (Li et al. 2025, "Beyond Zero Initialization"): A and B both random at step 0.

    A (r x in) ~ U(-sqrt(scale_a / in), sqrt(scale_a / in)) and B (out x r) ~ U(-sqrt(scale_b / in),
    sqrt(scale_b / in)): Kaiming-uniform bounds with the layer's fan-in for both, as the
    re-implementation that cites the official code (Leopold1423/non_zero_lora-icml25) writes them;
    scale_a = 1 is PEFT's own A. The paper's point is that the noise s * B A need not be removed:
    ``subtract=False`` (default) leaves the base as it is, so the step-0 output differs from the base
    model's; ``subtract=True`` makes the base W - s B A instead (a residual init). Deviation: the
    defaults scale_a = scale_b = 1 are ours; the official code was not available to check its defaults.
    """
    import torch

    from inilora.decompose.solver import module_seed

    check_positive("nonzero", "scale_a", scale_a)
    check_positive("nonzero", "scale_b", scale_b)
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)
    with torch.no_grad():
        for name, layer in lora_layers(peft_model).items():
            g = torch.Generator().manual_seed(module_seed(seed, name))
            A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            fan_in = A.shape[1]
            for factor, scale in ((A, scale_a), (B, scale_b)):
                bound = math.sqrt(scale / fan_in)
                factor.copy_(torch.rand(factor.shape, generator=g).mul_(2 * bound).sub_(bound))
            if subtract:
                subtract_adapter(layer)
    return peft_model
