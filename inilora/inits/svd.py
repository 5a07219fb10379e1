"""Inits from a decomposition of W itself (PiSSA, MiLoRA, OLoRA): residual base W - s B A."""

# torch and peft are imported inside the functions: the config layer reads the @register records while
# Snakemake parses the workflow (in every cluster job too), which must not import them.
from __future__ import annotations

from typing import TYPE_CHECKING

from inilora.inits.lora import init_lora
from inilora.inits.registry import register
from inilora.inits.residual import lora_config, set_residual

if TYPE_CHECKING:
    from peft import PeftModel


@register("pissa", residual=True, paper="Meng et al. 2024, arXiv:2404.02948",
          run_seeded=lambda options: options.get("svd_niter") is not None)
def init_pissa(model, rank, alpha, target_modules, task_type=None, svd_niter: int | None = None,
               seed: int = 0) -> PeftModel:
    """PiSSA (Meng et al. 2024): principal singular triplets, residual base; PEFT's own code.

    ``svd_niter`` selects PEFT's fast randomized SVD (``pissa_niter_K``, ``torch.svd_lowrank``),
    whose random start PEFT leaves to the global generator: here it is drawn from ``seed`` (the
    workflow passes the run's seed, so it is part of the job's spec), on a forked generator that
    leaves the caller's as it was. The full SVD (no ``svd_niter``) draws nothing.
    """
    import torch
    from peft import get_peft_model

    if svd_niter is None:
        return get_peft_model(model, lora_config(rank, alpha, target_modules, "pissa", task_type))
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(seed)
        return get_peft_model(model, lora_config(rank, alpha, target_modules, f"pissa_niter_{int(svd_niter)}",
                                                 task_type))


@register("milora", residual=True, paper="Wang et al. 2024, arXiv:2406.09044")
def init_milora(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """MiLoRA (Wang et al. 2024): the r *minor* singular triplets, residual base.

    As sufenlp/MiLoRA:svd_init.py: full fp32 SVD, S_sel / scaling, B = U diag(sqrt S),
    A = diag(sqrt S) V^T, so scaling * B A is exactly the minor rank-r part of W.
    """
    import torch

    peft_model = init_lora(model, rank, alpha, target_modules, task_type)

    def minor(name, W, scaling):
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        s = (S[-rank:] / scaling).sqrt()
        return s[:, None] * Vh[-rank:], U[:, -rank:] * s[None, :]

    set_residual(peft_model, minor)
    return peft_model


@register("olora", residual=True, paper="Buyukakyuz 2024, arXiv:2406.01775")
def init_olora(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """OLoRA (Buyukakyuz 2024) as PEFT does it: QR of W, B = Q[:, :r], A = R[:r], residual base."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(rank, alpha, target_modules, "olora", task_type))
