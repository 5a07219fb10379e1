"""One registry of LoRA initialisations, all returning a PEFT model.

``apply_init(model, method, rank, alpha, target_modules, **options)`` is the single entry
point: the fine-tuning rule uses it, and so can a notebook. Each method is one small
function below that cites where it comes from.

Residual inits change the frozen base weight to ``W - scaling * B A`` so that the model's
output at step 0 equals the base model's (up to rounding).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

Factors = tuple[torch.Tensor, torch.Tensor]  # (A: r x in, B: out x r)


class InitError(ValueError):
    pass


def _lora_config(rank: int, alpha: float, target_modules: list[str], init, task_type: str | None) -> LoraConfig:
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


@torch.no_grad()
def set_residual(peft_model: PeftModel, factors: Callable[[str, torch.Tensor, float], Factors]) -> None:
    """Overwrite every adapter with ``factors(name, W, scaling)`` and make the base W - scaling*BA.

    The post-hoc overwrite is how the MiLoRA code (sufenlp/MiLoRA:svd_init.py) sits on upstream
    PEFT; PEFT has no hook for precomputed factors (init-methods.md, sec. 2.4).
    """
    for name, layer in lora_layers(peft_model).items():
        base = layer.get_base_layer()
        W = base.weight.data
        scaling = layer.scaling["default"]
        A, B = factors(name, W.float(), scaling)
        layer.lora_A["default"].weight.data = A.to(W.device, layer.lora_A["default"].weight.dtype).contiguous()
        layer.lora_B["default"].weight.data = B.to(W.device, layer.lora_B["default"].weight.dtype).contiguous()
        base.weight.data = (W.float() - scaling * (B.float() @ A.float()).to(W.device)).to(W.dtype)


# ----------------------------------------------------------------------------- methods


def init_lora(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """LoRA (Hu et al. 2021) as PEFT does it: A Kaiming-uniform(a=sqrt 5), B = 0, so BA = 0."""
    return get_peft_model(model, _lora_config(rank, alpha, target_modules, True, task_type))


def init_pissa(model, rank, alpha, target_modules, task_type=None, svd_niter: int | None = None) -> PeftModel:
    """PiSSA (Meng et al. 2024): principal singular triplets, residual base; PEFT's own code.

    ``svd_niter`` selects PEFT's fast randomized SVD (``pissa_niter_K``).
    """
    init = "pissa" if svd_niter is None else f"pissa_niter_{int(svd_niter)}"
    return get_peft_model(model, _lora_config(rank, alpha, target_modules, init, task_type))


def init_milora(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """MiLoRA (Wang et al. 2024): the r *minor* singular triplets, residual base.

    As sufenlp/MiLoRA:svd_init.py: full fp32 SVD, S_sel / scaling, B = U diag(sqrt S),
    A = diag(sqrt S) V^T, so scaling * B A is exactly the minor rank-r part of W.
    """
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)

    def minor(name, W, scaling):
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        s = (S[-rank:] / scaling).sqrt()
        return s[:, None] * Vh[-rank:], U[:, -rank:] * s[None, :]

    set_residual(peft_model, minor)
    return peft_model


def init_inilora(model, rank, alpha, target_modules, task_type=None, factors_path: str | None = None) -> PeftModel:
    """IniLoRA (this repository's paper, Sec. 3): B A fitted to W by Adam, residual base.

    ``factors_path`` is a decomposition artifact (``inilora decompose``). As in the original
    code (hihi885/IniLoRA, peft/tuners/lora/layer.py:sgd_svd) the factors are not divided by
    the scaling, so the adapter holds the rank-r approximation of W only when alpha = r; the
    step-0 output is unchanged for any alpha because scaling * B A is subtracted from W.
    """
    from inilora.decompose import load_artifact

    if not factors_path:
        raise InitError("method 'inilora' needs option factors_path (a decomposition artifact)")
    stored = load_artifact(factors_path)
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)

    def cached(name, W, scaling):
        if name not in stored:
            raise InitError(f"{factors_path} has no factors for module {name}; it holds {len(stored)} others")
        A, B = stored[name]["A"], stored[name]["B"]
        if A.shape[0] != rank or tuple(B.shape[:1]) + tuple(A.shape[1:]) != tuple(W.shape):
            raise InitError(
                f"{factors_path}: factors of {name} are B {tuple(B.shape)}, A {tuple(A.shape)}; "
                f"expected rank {rank} and W {tuple(W.shape)}"
            )
        return A, B

    set_residual(peft_model, cached)
    return peft_model


REGISTRY: dict[str, Callable[..., PeftModel]] = {
    "lora": init_lora,
    "pissa": init_pissa,
    "milora": init_milora,
    "inilora": init_inilora,
}
RESIDUAL = {"pissa", "milora", "inilora"}
NEEDS_FACTORS = {"inilora"}


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
    if method not in REGISTRY:
        raise InitError(f"unknown init method '{method}'; valid: {sorted(REGISTRY)}")
    fn = REGISTRY[method]
    import inspect

    allowed = set(inspect.signature(fn).parameters) - {"model", "rank", "alpha", "target_modules", "task_type"}
    unknown = set(options) - allowed
    if unknown:
        raise InitError(f"method '{method}' got unknown option(s) {sorted(unknown)}; valid: {sorted(allowed) or 'none'}")
    return fn(model, rank, alpha, target_modules, task_type=task_type, **options)


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
