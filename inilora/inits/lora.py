"""LoRA and the inits that keep B A = 0 at step 0: the base weight is untouched."""

from __future__ import annotations

import math

import torch
from peft import PeftModel, get_peft_model

from inilora.decompose.solver import module_seed
from inilora.inits.registry import register
from inilora.inits.residual import lora_config, lora_layers


@register("lora", paper="Hu et al. 2021, arXiv:2106.09685")
def init_lora(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """LoRA (Hu et al. 2021) as PEFT does it: A Kaiming-uniform(a=sqrt 5), B = 0, so BA = 0."""
    return get_peft_model(model, lora_config(rank, alpha, target_modules, True, task_type))


@register("gaussian", paper="PEFT init_lora_weights='gaussian'")
def init_gaussian(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """PEFT's ``gaussian``: A ~ N(0, (1/r)^2), B = 0."""
    return get_peft_model(model, lora_config(rank, alpha, target_modules, "gaussian", task_type))


@register("lora_reversed", paper="Hayou, Ghosh & Yu 2024, arXiv:2406.08447")
def init_lora_reversed(model, rank, alpha, target_modules, task_type=None, seed: int = 0) -> PeftModel:
    """Init[B] of Hayou, Ghosh & Yu 2024 ("The Impact of Initialization on LoRA Finetuning
    Dynamics"): A = 0 and B random, the mirror of LoRA's B = 0. B is drawn as PEFT draws A,
    Kaiming-uniform with a = sqrt(5), here with fan_in = r: U(-1/sqrt(r), 1/sqrt(r)).
    BA = 0, so nothing is subtracted from the base.
    """
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)
    with torch.no_grad():
        for name, layer in lora_layers(peft_model).items():
            g = torch.Generator().manual_seed(module_seed(seed, name))
            B = layer.lora_B["default"].weight
            B.copy_(torch.rand(B.shape, generator=g).mul_(2).sub_(1).div_(math.sqrt(rank)))
            layer.lora_A["default"].weight.zero_()
    return peft_model
