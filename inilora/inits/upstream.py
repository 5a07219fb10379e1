"""Inits PEFT ships, driven the way PEFT's own docs drive them: orthogonal, mica, eva, corda, loraga_peft.

Checked against PEFT 0.21 (``peft/tuners/lora/{layer,eva,corda,loraga}.py``; docs/init-methods.md
sec. 2.1). The data-driven ones (eva, corda, loraga_peft) get their data pass from the run's
training batches, as ``loraga`` does, moved to the model's device (the GPU when there is one).
PEFT's cache files (``cache_file``, ``covariance_file``) are not offered: they are torch pickles.

``loftq`` is absent on purpose: PEFT's ``loftq_init`` needs bitsandbytes and runs on a CUDA or
XPU device only (``compute_device = "xpu" if is_xpu_available() else "cuda"``), so it cannot be
tested on the CPU machines this project's tests run on.
"""

# torch and peft are imported inside the functions: the config layer reads the @register records while
# Snakemake parses the workflow (in every cluster job too), which must not import them.
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from inilora.inits.registry import InitError, check_positive, register
from inilora.inits.residual import lora_config

if TYPE_CHECKING:
    from peft import PeftModel


def _batches(model, data, batches: int, method: str) -> list[dict]:
    """Up to ``batches`` training batches, on the model's device; InitError when there are none."""
    import torch

    if data is None:
        raise InitError(f"method '{method}' needs training batches (option data)")
    check_positive(method, "batches", batches, integer=True)
    device = next(model.parameters()).device
    out = []
    for batch in data:
        if len(out) == batches:
            break
        out.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
    if not out:
        raise InitError(f"method '{method}' got no training batches")
    return out


@register("orthogonal", paper="PEFT init_lora_weights='orthogonal' (0.16), after datta0 2024, 'Rethink LoRA initialisations'")
def init_orthogonal(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """PEFT's ``orthogonal``: a random r x r orthogonal Q split into its even and odd rows;
    A = (randn(in, r/2) Q_odd)^T / 10, B = randn(out, r/2) Q_even / 10. Both are non-zero, yet B A = 0
    because the two row sets are orthogonal, so the base is untouched. Needs an even rank."""
    from peft import get_peft_model

    if rank % 2:
        raise InitError(f"method 'orthogonal' needs an even rank; got rank {rank}")
    return get_peft_model(model, lora_config(rank, alpha, target_modules, "orthogonal", task_type))


@register("mica", paper="MiCA, arXiv:2604.01694; PEFT init_lora_weights='mica' (0.20)")
def init_mica(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """PEFT's MiCA: B = the r left singular vectors of W with the smallest singular values (no S),
    A = 0, and B stays frozen (only A trains). B A = 0, so the base is untouched. Not MiLoRA, which
    trains both factors and moves the minor part out of the base."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(rank, alpha, target_modules, "mica", task_type))


@register("eva", needs=("data",), paper="Paischer et al. 2024, arXiv:2410.07170; PEFT EvaConfig (0.14)")
def init_eva(model, rank, alpha, target_modules, task_type=None, data=None, batches: int = 8, rho: float = 2.0,
             tau: float = 0.99, use_label_mask: bool = True, whiten: bool = False,
             adjust_scaling_factors: bool = True) -> PeftModel:
    """EVA (explained variance adaptation) through PEFT's ``initialize_lora_eva_weights``: an
    incremental SVD of each target layer's *input activations* over the batches; A = the top right
    singular vectors, B = 0. Ranks are redistributed across layers by explained variance, each at
    most r * rho (rho = 1: none); it stops once consecutive components agree to cosine ``tau``.
    ``use_label_mask`` leaves out positions whose label is -100 (the prompt, here). PEFT skips a
    batch with fewer than r * rho such positions: with short answers raise the workflow's
    ``batch_size`` for eva, or turn ``use_label_mask`` off."""
    from peft import EvaConfig, get_peft_model, initialize_lora_eva_weights

    if rho < 1:
        raise InitError(f"method 'eva' option rho={rho!r}: allowed is a number >= 1")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 <= tau <= 1:
        raise InitError(f"method 'eva' option tau={tau!r}: allowed is a number in [0, 1]")
    # per-example labels (a classifier's) are no token mask: EVA then uses the attention mask alone
    feed = [{k: v for k, v in b.items() if not (k == "labels" and v.dim() != b["input_ids"].dim())}
            for b in _batches(model, data, batches, "eva")]
    cfg = lora_config(rank, alpha, target_modules, "eva", task_type)
    cfg.eva_config = EvaConfig(rho=float(rho), tau=float(tau), use_label_mask=bool(use_label_mask), whiten=bool(whiten),
                               adjust_scaling_factors=bool(adjust_scaling_factors))
    peft_model = get_peft_model(model, cfg, low_cpu_mem_usage=True)
    initialize_lora_eva_weights(peft_model, dataloader=feed, show_progress_bar=False)
    return peft_model


@register("corda", residual=True, needs=("data",), paper="Yang et al. 2024, arXiv:2406.05223; PEFT CordaConfig (0.15)")
def init_corda(model, rank, alpha, target_modules, task_type=None, data=None, batches: int = 8,
               corda_method: Literal["ipm", "kpm"] = "ipm", use_float16_for_covariance: bool = False) -> PeftModel:
    """CorDA (context-oriented decomposition) through PEFT's ``preprocess_corda``: the covariance C of
    each target layer's inputs over the batches, the SVD of W C, and the adapter from its top r
    (``ipm``, instruction-previewed) or bottom r (``kpm``, knowledge-preserved) components, split as
    PiSSA splits: B = U sqrt(S / s), A = sqrt(S / s) V^T C^-1. The base becomes W - s B A."""
    import torch
    from peft import get_peft_model
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    feed = _batches(model, data, batches, "corda")
    cfg = lora_config(rank, alpha, target_modules, "corda", task_type)
    cfg.corda_config = CordaConfig(corda_method=corda_method, use_float16_for_covariance=bool(use_float16_for_covariance))

    @torch.no_grad()
    def run_model():  # one example per forward, without its padding: PEFT's hook squeezes a batch of 1
        for batch in feed:
            for row, ids in enumerate(batch["input_ids"]):
                keep = batch["attention_mask"][row].bool() if "attention_mask" in batch else slice(None)
                model(input_ids=ids[keep][None])

    was_training = model.training
    model.eval()
    preprocess_corda(model, cfg, run_model=run_model)
    model.train(was_training)
    return get_peft_model(model, cfg)


@register("loraga_peft", residual=True, needs=("data",), paper="Wang, Yu & Li 2024, arXiv:2407.05000; PEFT's port (0.19)")
def init_loraga_peft(model, rank, alpha, target_modules, task_type=None, data=None, batches: int = 64,
                     direction: Literal["ArBr", "A2rBr", "ArB2r", "random"] = "ArB2r",
                     scale: Literal["stable", "weight_svd", "gd_scale", "unit"] = "stable", stable_gamma: float = 16,
                     seed: int = 0) -> PeftModel:
    """PEFT's own LoRA-GA (``LoraGAConfig`` + ``preprocess_loraga``), beside our ``loraga``, which
    follows the official code. PEFT sums the gradients of the batches (ours averages, as the
    official code does), multiplies B by diag(S[r:2r]) and scales only B (docs/init-methods.md
    sec. 3.2). The base becomes W - s B A."""
    import torch
    from peft import LoraGAConfig, get_peft_model, preprocess_loraga

    check_positive("loraga_peft", "stable_gamma", stable_gamma)
    feed = _batches(model, data, batches, "loraga_peft")
    cfg = lora_config(rank, alpha, target_modules, "lora_ga", task_type)
    cfg.lora_ga_config = LoraGAConfig(direction=direction, scale=scale, stable_gamma=stable_gamma)

    def train_step():
        for batch in feed:
            model(**batch).loss.backward()

    preprocess_loraga(model, cfg, train_step)
    torch.manual_seed(seed)  # PEFT's svd_lowrank draws a random start
    return get_peft_model(model, cfg)
