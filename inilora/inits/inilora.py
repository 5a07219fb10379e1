"""IniLoRA (paper Sec. 3) and its random variants IniLoRA-alpha and -beta: residual base W - s B A."""

# torch, peft and inilora.decompose (torch) are imported inside the functions: the config layer reads the
# @register records while Snakemake parses the workflow (in every cluster job too), which must not import them.
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from inilora.inits.lora import init_lora
from inilora.inits.registry import InitError, register
from inilora.inits.residual import lora_layers, set_residual

if TYPE_CHECKING:
    import torch
    from peft import PeftModel


@register("inilora", residual=True, needs=("factors",), paper="IniLoRA, Sec. 3")
def init_inilora(model, rank, alpha, target_modules, task_type=None, factors_path: str | None = None,
                 factors=None, check: bool = True) -> PeftModel:
    """IniLoRA (this repository's paper, Sec. 3): B A fitted to W by Adam, residual base.

    The factors come from a decomposition artifact (``factors_path``, what ``inilora decompose``
    writes) or from memory (``factors``, what :func:`inilora.decompose.decompose_model` returns).
    As in the original code (hihi885/IniLoRA, peft/tuners/lora/layer.py:sgd_svd) the factors are
    not divided by the scaling, so the adapter holds the rank-r approximation of W only when
    alpha = r; the step-0 output is unchanged for any alpha because scaling * B A is subtracted
    from W. Their record must match the weights in hand (fingerprint) and the rank; ``check=False``
    skips that, for factors made elsewhere on purpose.
    """
    from inilora.decompose import ArtifactError, check_provenance, fingerprint, load_artifact

    if (factors_path is None) == (factors is None):
        raise InitError("method 'inilora' needs one of the options factors_path (a decomposition artifact) "
                        "or factors (inilora.decompose_model's result)")
    where = factors_path or "the factors given"
    stored = load_artifact(factors_path) if factors_path else factors.tensors
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)
    if check:
        weights = {n: layer.get_base_layer().weight for n, layer in lora_layers(peft_model).items()}
        if factors_path:
            check_provenance(factors_path, weights, rank)
        elif factors.rank != rank or set(stored) != set(weights) or fingerprint(weights) != factors.fingerprint:
            raise ArtifactError(f"{where} were computed for rank {factors.rank} from other weights or modules than "
                                f"the model being initialised (rank {rank}); refusing to use them")

    def cached(name, W, scaling):
        if name not in stored:
            raise InitError(f"{where} has no factors for module {name}; it holds {len(stored)} others")
        A, B = stored[name]["A"], stored[name]["B"]
        if A.shape[0] != rank or tuple(B.shape[:1]) + tuple(A.shape[1:]) != tuple(W.shape):
            raise InitError(
                f"{where}: factors of {name} are B {tuple(B.shape)}, A {tuple(A.shape)}; "
                f"expected rank {rank} and W {tuple(W.shape)}"
            )
        return A, B

    set_residual(peft_model, cached)
    return peft_model


DISTRIBUTIONS = ("normal", "uniform", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform")


def draw(shape: tuple[int, int], distribution: str, std: float | None, g: torch.Generator) -> torch.Tensor:
    """A rows x cols factor from ``distribution``; fan_in = cols, fan_out = rows (nn.Linear's layout).

    normal / uniform take ``std`` (uniform on +-sqrt(3) std, so the std matches); the Kaiming
    and Xavier draws use PyTorch's default gains (kaiming: a = 0, fan_in, leaky_relu; xavier: 1).
    """
    import torch

    rows, cols = shape
    if distribution == "normal":
        return torch.randn(shape, generator=g) * std
    if distribution == "uniform":
        return (torch.rand(shape, generator=g) * 2 - 1) * (math.sqrt(3) * std)
    if distribution == "kaiming_normal":
        return torch.randn(shape, generator=g) * math.sqrt(2 / cols)
    if distribution == "kaiming_uniform":
        return (torch.rand(shape, generator=g) * 2 - 1) * math.sqrt(6 / cols)
    if distribution == "xavier_normal":
        return torch.randn(shape, generator=g) * math.sqrt(2 / (rows + cols))
    if distribution == "xavier_uniform":
        return (torch.rand(shape, generator=g) * 2 - 1) * math.sqrt(6 / (rows + cols))
    raise InitError(f"option distribution '{distribution}' unknown; valid: {list(DISTRIBUTIONS)}")


@register("inilora_random", residual=True, paper="IniLoRA, Table 7 (Iter=0), Figures 3-4")
def init_random_residual(model, rank, alpha, target_modules, task_type=None, distribution: str = "normal",
                         std: float | None = None, seed: int = 0) -> PeftModel:
    """Random A and B with the residual base W - scaling * B A (IniLoRA with zero iterations).

    The IniLoRA code's ``sgdSvd-alpha`` / ``sgdSvd-beta`` inits and its "just_init" std
    ablations (hihi885/IniLoRA; docs/init-methods.md sec. 1c) are all this function. With
    ``std=None`` a normal / uniform draw uses IniLoRA's global sigma: the mean over layers of
    each weight's std, rounded to 3 decimals, one per module type (the paper's Eq. 2).
    """
    import torch

    from inilora.decompose import global_sigma, module_seed, module_type

    if distribution not in DISTRIBUTIONS:
        raise InitError(f"option distribution '{distribution}' unknown; valid: {list(DISTRIBUTIONS)}")
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)
    layers = lora_layers(peft_model)
    sigma: dict[str, float] = {}
    if std is None and distribution in ("normal", "uniform"):
        by_type: dict[str, list[torch.Tensor]] = {}
        for name, layer in layers.items():
            by_type.setdefault(module_type(name), []).append(layer.get_base_layer().weight)
        sigma = {t: global_sigma(ws) for t, ws in by_type.items()}

    def random(name, W, scaling):
        g = torch.Generator().manual_seed(module_seed(seed, name))
        s = std if std is not None else sigma.get(module_type(name))
        B = draw((W.shape[0], rank), distribution, s, g)
        A = draw((rank, W.shape[1]), distribution, s, g)
        return A, B

    set_residual(peft_model, random)
    return peft_model


@register("inilora_alpha", residual=True, paper="IniLoRA, Sec. 3 (IniLoRA-alpha)")
def init_inilora_alpha(model, rank, alpha, target_modules, task_type=None, std: float = 0.5, seed: int = 0):
    """IniLoRA-alpha (paper Sec. 3): A, B ~ N(0, std^2), std 0.5 by default; residual base."""
    return init_random_residual(model, rank, alpha, target_modules, task_type, "normal", std, seed)


@register("inilora_beta_kn", residual=True, paper="IniLoRA, Table 3 (IniLoRA-beta K-N)")
def init_inilora_beta_kn(model, rank, alpha, target_modules, task_type=None, seed: int = 0):
    """IniLoRA-beta, Kaiming normal (the paper's Table 3 "K-N"): PyTorch's kaiming_normal_
    defaults on both factors (A std sqrt(2/in), B std sqrt(2/r)); residual base."""
    return init_random_residual(model, rank, alpha, target_modules, task_type, "kaiming_normal", None, seed)


@register("inilora_beta_ku", residual=True, paper="IniLoRA, Table 3 (IniLoRA-beta K-U)")
def init_inilora_beta_ku(model, rank, alpha, target_modules, task_type=None, seed: int = 0):
    """IniLoRA-beta, Kaiming uniform (Table 3 "K-U"): kaiming_uniform_ defaults, bound sqrt(6/fan_in);
    the original code has this branch but hard-codes the normal one."""
    return init_random_residual(model, rank, alpha, target_modules, task_type, "kaiming_uniform", None, seed)
