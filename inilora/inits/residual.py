"""The shared mechanics of every init: the LoRA config, the wrapped layers, the residual base."""

# torch and peft are imported inside the functions: the config layer reads the @register records while
# Snakemake parses the workflow (in every cluster job too), which must not import them.
from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig, PeftModel
    from torch import nn

Factors = tuple["torch.Tensor", "torch.Tensor"]  # (A: r x in, B: out x r)


# Options of the adapter itself rather than of its init, which every method takes (where it makes
# sense, inilora.inits.registry says): PEFT's rsLoRA scaling alpha / sqrt(r) and DoRA's magnitude.
ADAPTER_OPTIONS = ("use_rslora", "use_dora")
_ADAPTER: contextvars.ContextVar[dict | None] = contextvars.ContextVar("inilora_adapter_options", default=None)


@contextlib.contextmanager
def adapter_options(**options: bool):
    """Within the block, every LoRA config an init builds (:func:`lora_config`) carries ``options``;
    an init's own code then sees rsLoRA's scaling in ``layer.scaling``, as PEFT's own inits do."""
    token = _ADAPTER.set(dict(options))
    try:
        yield
    finally:
        _ADAPTER.reset(token)


def lora_config(rank: int, alpha: float, target_modules: list[str], init, task_type: str | None) -> LoraConfig:
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(target_modules),
        init_lora_weights=init,
        task_type=task_type,
        **(_ADAPTER.get() or {}),
    )


def refresh_magnitudes(peft_model: PeftModel) -> None:
    """DoRA's magnitude of every layer from its weight as the init left it, ``||W + s B A||`` per
    output row, as PEFT computes it when an init runs inside ``update_layer``. An init that sets its
    factors afterwards (most here) would otherwise keep the magnitude of PEFT's default factors."""
    import torch

    with torch.no_grad():
        for layer in lora_layers(peft_model).values():
            if "default" not in getattr(layer, "lora_magnitude_vector", {}):
                continue
            layer.lora_magnitude_vector["default"].update_layer(
                base_layer=layer.get_base_layer(), lora_A=layer.lora_A["default"].weight,
                lora_B=layer.lora_B["default"].weight, scaling=layer.scaling["default"])


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
