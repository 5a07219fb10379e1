"""The shared mechanics of every init: the LoRA config, the wrapped layers, the residual base."""

# torch and peft are imported inside the functions: the config layer reads the @register records while
# Snakemake parses the workflow (in every cluster job too), which must not import them.
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig, PeftModel
    from torch import nn

Factors = tuple["torch.Tensor", "torch.Tensor"]  # (A: r x in, B: out x r)


def lora_config(rank: int, alpha: float, target_modules: list[str], init, task_type: str | None) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(target_modules),
        init_lora_weights=init,
        task_type=task_type,
    )


def lora_layers(peft_model: PeftModel) -> dict[str, nn.Module]:
    """LoRA-wrapped layers keyed by their module name in the *base* model."""
    from peft.tuners.lora import LoraLayer

    return {
        name: mod for name, mod in peft_model.base_model.model.named_modules() if isinstance(mod, LoraLayer)
    }


def set_residual(peft_model: PeftModel, factors: Callable[[str, torch.Tensor, float], Factors]) -> None:
    """Overwrite every adapter with ``factors(name, W, scaling)`` and make the base W - scaling*BA.

    The post-hoc overwrite is how the MiLoRA code (sufenlp/MiLoRA:svd_init.py) sits on upstream
    PEFT; PEFT has no hook for precomputed factors (docs/init-methods.md sec. 2.4).
    """
    import torch

    with torch.no_grad():
        for name, layer in lora_layers(peft_model).items():
            base = layer.get_base_layer()
            W = base.weight.data
            scaling = layer.scaling["default"]
            A, B = factors(name, W.float(), scaling)
            layer.lora_A["default"].weight.data = A.to(W.device, layer.lora_A["default"].weight.dtype).contiguous()
            layer.lora_B["default"].weight.data = B.to(W.device, layer.lora_B["default"].weight.dtype).contiguous()
            subtract_adapter(layer)


def subtract_adapter(layer: nn.Module) -> None:
    """Make the layer's base W - scaling * B A with its current factors, formed in fp32 before rounding."""
    import torch

    with torch.no_grad():
        base = layer.get_base_layer()
        W = base.weight.data
        A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        base.weight.data = (W.float() - layer.scaling["default"] * (B.float() @ A.float()).to(W.device)).to(W.dtype)
