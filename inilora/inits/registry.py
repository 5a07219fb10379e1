"""One record per LoRA initialisation, in the style of lm-eval's registry.

Each init is a function ``init_x(model, rank, alpha, target_modules, task_type=None, **options)``
that returns a PEFT model, decorated with what the workflow needs to know about it::

    @register("milora", residual=True, paper="arXiv:2406.09044")
    def init_milora(model, rank, alpha, target_modules, task_type=None): ...

``residual``: the frozen base becomes ``W - scaling * B A``, so the output at step 0 equals the
base model's (a callable of the options where that depends on them). ``needs``: what the workflow
hands the init besides the model: ``"factors"`` (a decomposition artifact, ``factors_path``) or
``"data"`` (training batches, ``data``). The README's methods table and the config schema's
method list are checked against this record by tests/test_inits.py.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from peft import PeftModel
from torch import nn

from inilora.inits.residual import lora_layers

NEEDS = ("factors", "data")
FIXED_ARGS = ("model", "rank", "alpha", "target_modules", "task_type")


class InitError(ValueError):
    pass


@dataclass(frozen=True)
class Method:
    """A registered init: its function and what the workflow must know about it."""

    name: str
    init: Callable[..., PeftModel]
    residual: bool | Callable[[dict], bool]
    needs: tuple[str, ...]
    paper: str

    def __call__(self, *args, **kwargs) -> PeftModel:
        return self.init(*args, **kwargs)

    def is_residual(self, options: dict | None = None) -> bool:
        return self.residual(options or {}) if callable(self.residual) else bool(self.residual)

    @property
    def option_names(self) -> set[str]:
        """The keyword options the init takes (from its function's signature)."""
        return set(inspect.signature(self.init).parameters) - set(FIXED_ARGS)

    @property
    def defaults(self) -> dict:
        return {k: p.default for k, p in inspect.signature(self.init).parameters.items()
                if k in self.option_names and p.default is not inspect.Parameter.empty}


REGISTRY: dict[str, Method] = {}


def register(name: str, *, residual: bool | Callable[[dict], bool] = False, needs: tuple[str, ...] = (),
             paper: str):
    """Add the decorated init function to REGISTRY under ``name``."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"register('{name}'): unknown needs {sorted(unknown)}; valid: {list(NEEDS)}")

    def add(init: Callable[..., PeftModel]) -> Callable[..., PeftModel]:
        if name in REGISTRY:
            raise ValueError(f"init method '{name}' is registered twice")
        REGISTRY[name] = Method(name, init, residual, tuple(needs), paper)
        return init

    return add


def get(method: str) -> Method:
    """The record of ``method``; a miss lists what exists."""
    if method not in REGISTRY:
        raise InitError(f"unknown init method '{method}'; valid: {sorted(REGISTRY)}")
    return REGISTRY[method]


def needing(what: str) -> list[str]:
    """Methods whose record needs ``what`` ("factors" or "data")."""
    return sorted(m for m, rec in REGISTRY.items() if what in rec.needs)


def is_residual(method: str, options: dict | None = None) -> bool:
    """Whether ``method`` with ``options`` moves part of W into the adapter (base = W - s B A)."""
    return get(method).is_residual(options)


def option_names(method: str) -> set[str]:
    """The keyword options ``method`` takes (from its function's signature)."""
    return get(method).option_names


def option_defaults(method: str) -> dict:
    """The default value of each keyword option of ``method`` (its function's signature)."""
    return get(method).defaults


def check_options(method: str, options: dict, extra: set[str] = frozenset()) -> None:
    allowed = option_names(method) | set(extra)
    unknown = set(options) - allowed
    if unknown:
        raise InitError(f"method '{method}' got unknown option(s) {sorted(unknown)}; valid: {sorted(allowed) or 'none'}")


def apply_init(
    model: nn.Module,
    method: str,
    rank: int,
    alpha: float,
    target_modules: list[str],
    task_type: str | None = None,
    **options,
) -> PeftModel:
    """Wrap ``model`` in a PEFT LoRA of ``rank`` on ``target_modules``, initialised by ``method``."""
    check_options(method, options)
    peft_model = get(method)(model, rank, alpha, target_modules, task_type=task_type, **options)
    check_finite(peft_model, method)
    return peft_model


def check_finite(peft_model: PeftModel, method: str) -> None:
    """Stop on NaN/inf in any adapter or changed base weight, naming the tensor."""
    for name, layer in lora_layers(peft_model).items():
        for label, t in (("lora_A", layer.lora_A["default"].weight), ("lora_B", layer.lora_B["default"].weight),
                         ("base weight", layer.get_base_layer().weight)):
            if not bool(torch.isfinite(t).all()):
                raise InitError(f"init '{method}' produced non-finite values in {name} {label}; "
                                "check the method's options (a std too large?)")


def save_initial_adapter(peft_model: PeftModel, out_dir: Path) -> None:
    """Save the step-0 adapter marked as a plain LoRA, for PEFT's rank-2r conversion later.

    PEFT's protocol (examples/pissa_finetuning): the initial adapter's config must say
    ``init_lora_weights=True`` or loading it would initialise (and subtract) again.
    """
    cfg = peft_model.peft_config["default"]
    original = cfg.init_lora_weights
    cfg.init_lora_weights = True
    try:
        peft_model.save_pretrained(str(out_dir))
    finally:
        cfg.init_lora_weights = original
