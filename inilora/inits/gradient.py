"""Inits that read the training data: LoRA-GA (gradient) and High-Rank Preheating (a short LoRA run)."""

# torch and peft are imported inside the functions: the config layer reads the @register records while
# Snakemake parses the workflow (in every cluster job too), which must not import them.
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from inilora.inits.lora import init_lora
from inilora.inits.registry import InitError, check_positive, register
from inilora.inits.residual import Factors, lora_layers, set_residual, subtract_adapter
from inilora.models import target_linears

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from torch import nn


def estimate_gradients(model: nn.Module, target_modules: list[str], data, batches: int,
                       method: str = "loraga") -> dict[str, torch.Tensor]:
    """Mean full-weight gradient of the loss over ``batches`` batches, per target weight (out x in).

    As the official LoRA-GA ``estimate_gradient``: only the target weights require grad, each
    batch's gradient is summed (on the weights' device; the official code moves each to the CPU), the sum
    is divided by the number of batches.
    """
    import torch

    linears = target_linears(model, target_modules)
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for m in linears.values():
        m.weight.requires_grad_(True)
    # summed where the weights are (the GPU at paper scale: 64 x 4096^2 per batch would cross PCIe otherwise)
    sums = {n: torch.zeros_like(m.weight, dtype=torch.float32) for n, m in linears.items()}
    seen = 0
    was_training = model.training
    model.train()
    try:
        for batch in data:
            if seen == batches:
                break
            device = next(model.parameters()).device
            model(**{k: v.to(device) for k, v in batch.items()}).loss.backward()
            for n, m in linears.items():
                sums[n] += m.weight.grad.detach().float()
                m.weight.grad = None
            seen += 1
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
        model.train(was_training)
    if seen == 0:
        raise InitError(f"method '{method}' got no training batches to estimate gradients from")
    return {n: g / seen for n, g in sums.items()}


def loraga_factors(G: torch.Tensor, rank: int, gamma: float = 16.0, svd_niter: int = 4) -> Factors:
    """LoRA-GA's ``ArB2r`` direction with the ``stable`` scale (official Outsider565/LoRA-GA code).

    ``torch.svd_lowrank(G, q=4r, niter)``; A = top-r right singular vectors (r x in),
    B = the *next* r left singular vectors (out x r); both times d_out^(1/4) / sqrt(gamma).
    Singular values are not used. PEFT's port differs: it multiplies B by diag(S[r:2r]) and
    scales only B (docs/init-methods.md sec. 3.2).
    """
    import torch

    out_f, in_f = G.shape
    q = min(4 * rank, out_f, in_f)
    if q < 2 * rank:
        raise InitError(f"method 'loraga' needs 2r = {2 * rank} <= min(out, in) = {min(out_f, in_f)}")
    U, S, V = torch.svd_lowrank(G.float(), q=q, niter=svd_niter)
    scale = out_f**0.25 / math.sqrt(gamma)
    return V[:, :rank].T.contiguous() * scale, U[:, rank : 2 * rank].contiguous() * scale


@register("loraga", residual=True, needs=("data",), paper="Wang, Yu & Li 2024, arXiv:2407.05000")
def init_loraga(model, rank, alpha, target_modules, task_type=None, data=None, batches: int = 64,
                gamma: float = 16.0, svd_niter: int = 4, seed: int = 0) -> PeftModel:
    """LoRA-GA (Wang, Yu & Li 2024): align the first LoRA step with full fine-tuning's gradient.

    ``data`` is an iterable of training batches (``input_ids``, ``attention_mask``, ``labels``);
    the official default is 64 batches of 2 examples. Residual base: W - scaling * B A.
    """
    import torch

    if data is None:
        raise InitError("method 'loraga' needs training batches (option data)")
    grads = estimate_gradients(model, target_modules, data, batches)
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)
    torch.manual_seed(seed)  # svd_lowrank draws a random start

    set_residual(peft_model, lambda name, W, scaling: loraga_factors(grads[name], rank, gamma, svd_niter))
    return peft_model


def preheat_updates(model: nn.Module, target_modules: list[str], data, preheat_rank: int, steps: int, lr: float,
                    seed: int) -> dict[str, torch.Tensor]:
    """Train a LoRA of ``preheat_rank`` for ``steps`` batches (AdamW), return scaling * B A per module.

    The preheated LoRA is removed again (``unload``), so ``model`` leaves with its weights untouched.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=preheat_rank, lora_alpha=preheat_rank, lora_dropout=0.0, target_modules=list(target_modules))
    hot = get_peft_model(model, cfg)
    params = [p for p in hot.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    hot.train()
    done = 0
    for batch in data:
        if done == steps:
            break
        device = next(hot.parameters()).device
        hot(**{k: v.to(device) for k, v in batch.items()}).loss.backward()
        opt.step()
        opt.zero_grad()
        done += 1
    if done == 0:
        raise InitError("method 'hrp' got no training batches to preheat on")
    with torch.no_grad():
        updates = {n: (layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight)
                   .float() for n, layer in lora_layers(hot).items()}
    hot.unload()
    return updates


@register("hrp", residual=lambda options: options.get("form", "direction") == "residual",
          needs=("data",), paper="Chen et al. 2025, arXiv:2502.07739")
def init_hrp(model, rank, alpha, target_modules, task_type=None, data=None, preheat_rank: int | None = None,
             steps: int = 10, lr: float = 1e-3, form: Literal["direction", "residual"] = "direction",
             seed: int = 0) -> PeftModel:
    """High-Rank Preheating (Chen et al. 2025, arXiv 2502.07739): our re-implementation, no public code exists.

    1. Train a LoRA of ``preheat_rank`` (default 4r) for ``steps`` training batches with AdamW at ``lr``
       (the paper says "a few steps"; 10 at 1e-3 is our choice).
    2. SVD of each preheated update scaling * B_h A_h = U S V^T.
    3. ``form="direction"`` (default; the paper changes "only the initial direction"): A = V_r^T / sqrt(3),
       B = 0. The 1/sqrt(3) keeps PEFT's initial row norm of A (Kaiming-uniform(a=sqrt 5) rows have
       expected norm 1/sqrt 3), so only the direction differs from LoRA; no residual.
       ``form="residual"``: the PiSSA split of the preheated update, B = U_r sqrt(S_r/s),
       A = sqrt(S_r/s) V_r^T, and the base becomes W - s B A.
    The preheated update itself is discarded; the run restarts from the pretrained weights.
    """
    import torch

    if data is None:
        raise InitError("method 'hrp' needs training batches (option data)")
    if form not in ("direction", "residual"):
        raise InitError(f"option form '{form}' unknown; valid: ['direction', 'residual']")
    updates = preheat_updates(model, target_modules, data, preheat_rank or 4 * rank, steps, lr, seed)
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)

    if form == "direction":  # PEFT already set B = 0; only A's direction changes
        with torch.no_grad():
            for name, layer in lora_layers(peft_model).items():
                Vh = torch.linalg.svd(updates[name], full_matrices=False)[2]
                layer.lora_A["default"].weight.copy_(Vh[:rank] / math.sqrt(3))
        return peft_model

    def pissa_split(name, W, scaling):
        U, S, Vh = torch.linalg.svd(updates[name], full_matrices=False)
        s = (S[:rank] / scaling).sqrt()
        return s[:, None] * Vh[:rank], U[:, :rank] * s[None, :]

    set_residual(peft_model, pissa_split)
    return peft_model


@register("lora_one", residual=lambda options: bool(options.get("subtract", False)),
          changes_output=lambda options: not options.get("subtract", False), needs=("data",),
          paper="Zhang, Liu & Chen 2025 (ICML), arXiv:2502.01235")
def init_lora_one(model, rank, alpha, target_modules, task_type=None, data=None, batches: int = 8,
                  gamma: float = 128.0, subtract: bool = False) -> PeftModel:
    """LoRA-One (Zhang, Liu & Chen 2025): start where one best rank-r step of full fine-tuning lands.

    1. G = the mean full-weight gradient over ``batches`` training batches (the official code: 8
       iterations of batch size 1; ours: the run's own batches, as for ``loraga``).
    2. Full SVD of -G = U S V^T (fp32, as the official code's later version; its first used
       svd_lowrank with q=512, niter=16).
    3. B = U_r diag(sqrt S_r) / sqrt(S_1 gamma), A = diag(sqrt S_r) V_r^T / sqrt(S_1 gamma): the "stable"
       scale, gamma = 128 as in the README's commands (its config file says 16).
    4. The base is left as it is (``subtract=False``, the official code): W + s B A is already one
       descent step, so the step-0 output differs from the base model's. ``subtract=True`` makes
       the base W - s B A instead.
    Written here from the paper and the official code (YuanheZ/LoRA-One); not its preconditioned
    optimizer (LoRA-One with preconditioners), only the initialisation (LoRA-One (-) in its README).
    Its runs use rsLoRA's scaling alpha / sqrt(r); ours is the config's alpha / r unless set otherwise.
    """
    import torch

    if data is None:
        raise InitError("method 'lora_one' needs training batches (option data)")
    check_positive("lora_one", "gamma", gamma)
    grads = estimate_gradients(model, target_modules, data, batches, method="lora_one")
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)
    with torch.no_grad():
        for name, layer in lora_layers(peft_model).items():
            U, S, Vh = torch.linalg.svd(-grads[name].float(), full_matrices=False)
            root = S[:rank].sqrt() / (S[0] * gamma).sqrt()
            A, B = root[:, None] * Vh[:rank], U[:, :rank] * root[None, :]
            A_w, B_w = layer.lora_A["default"].weight, layer.lora_B["default"].weight
            A_w.data = A.to(A_w.device, A_w.dtype).contiguous()
            B_w.data = B.to(B_w.device, B_w.dtype).contiguous()
            if subtract:
                subtract_adapter(layer)
    return peft_model
