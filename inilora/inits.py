"""One registry of LoRA initialisations, all returning a PEFT model.

``apply_init(model, method, rank, alpha, target_modules, **options)`` is the single entry
point: the fine-tuning rule uses it, and so can a notebook. Each method is one small
function below that cites where it comes from.

Residual inits change the frozen base weight to ``W - scaling * B A`` so that the model's
output at step 0 equals the base model's (up to rounding).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from inilora.decompose import module_seed

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


def init_inilora(model, rank, alpha, target_modules, task_type=None, factors_path: str | None = None,
                 check: bool = True) -> PeftModel:
    """IniLoRA (this repository's paper, Sec. 3): B A fitted to W by Adam, residual base.

    ``factors_path`` is a decomposition artifact (``inilora decompose``). As in the original
    code (hihi885/IniLoRA, peft/tuners/lora/layer.py:sgd_svd) the factors are not divided by
    the scaling, so the adapter holds the rank-r approximation of W only when alpha = r; the
    step-0 output is unchanged for any alpha because scaling * B A is subtracted from W.
    The artifact's metadata must match the weights in hand (fingerprint) and the rank;
    ``check=False`` skips that, for factors made elsewhere on purpose.
    """
    from inilora.decompose import check_provenance, load_artifact

    if not factors_path:
        raise InitError("method 'inilora' needs option factors_path (a decomposition artifact)")
    stored = load_artifact(factors_path)
    peft_model = init_lora(model, rank, alpha, target_modules, task_type)
    if check:
        weights = {n: layer.get_base_layer().weight for n, layer in lora_layers(peft_model).items()}
        check_provenance(factors_path, weights, rank)

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


def init_gaussian(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """PEFT's ``gaussian``: A ~ N(0, (1/r)^2), B = 0."""
    return get_peft_model(model, _lora_config(rank, alpha, target_modules, "gaussian", task_type))


def init_olora(model, rank, alpha, target_modules, task_type=None) -> PeftModel:
    """OLoRA (Buyukakyuz 2024) as PEFT does it: QR of W, B = Q[:, :r], A = R[:r], residual base."""
    return get_peft_model(model, _lora_config(rank, alpha, target_modules, "olora", task_type))


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


DISTRIBUTIONS = ("normal", "uniform", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform")


def draw(shape: tuple[int, int], distribution: str, std: float | None, g: torch.Generator) -> torch.Tensor:
    """A rows x cols factor from ``distribution``; fan_in = cols, fan_out = rows (nn.Linear's layout).

    normal / uniform take ``std`` (uniform on +-sqrt(3) std, so the std matches); the Kaiming
    and Xavier draws use PyTorch's default gains (kaiming: a = 0, fan_in, leaky_relu; xavier: 1).
    """
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


def init_random_residual(model, rank, alpha, target_modules, task_type=None, distribution: str = "normal",
                         std: float | None = None, seed: int = 0) -> PeftModel:
    """Random A and B with the residual base W - scaling * B A (IniLoRA with zero iterations).

    The IniLoRA code's ``sgdSvd-alpha`` / ``sgdSvd-beta`` inits and its "just_init" std
    ablations (hihi885/IniLoRA; init-methods.md sec. 1c) are all this function. With
    ``std=None`` a normal / uniform draw uses IniLoRA's global sigma: the mean over layers of
    each weight's std, rounded to 3 decimals, one per module type (the paper's Eq. 2).
    """
    from inilora.decompose import global_sigma, module_type

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


def init_inilora_alpha(model, rank, alpha, target_modules, task_type=None, std: float = 0.5, seed: int = 0):
    """IniLoRA-alpha (paper Sec. 3.2): A, B ~ N(0, std^2), std 0.5 by default; residual base."""
    return init_random_residual(model, rank, alpha, target_modules, task_type, "normal", std, seed)


def init_inilora_beta_kn(model, rank, alpha, target_modules, task_type=None, seed: int = 0):
    """IniLoRA-beta, Kaiming normal (the paper's Table 3 "K-N"): PyTorch's kaiming_normal_
    defaults on both factors (A std sqrt(2/in), B std sqrt(2/r)); residual base."""
    return init_random_residual(model, rank, alpha, target_modules, task_type, "kaiming_normal", None, seed)


def init_inilora_beta_ku(model, rank, alpha, target_modules, task_type=None, seed: int = 0):
    """IniLoRA-beta, Kaiming uniform (Table 3 "K-U"): kaiming_uniform_ defaults, bound sqrt(6/fan_in);
    the original code has this branch but hard-codes the normal one."""
    return init_random_residual(model, rank, alpha, target_modules, task_type, "kaiming_uniform", None, seed)


def estimate_gradients(model: nn.Module, target_modules: list[str], data, batches: int) -> dict[str, torch.Tensor]:
    """Mean full-weight gradient of the loss over ``batches`` batches, per target weight (out x in).

    As the official LoRA-GA ``estimate_gradient``: only the target weights require grad, each
    batch's gradient is summed on the CPU, the sum is divided by the number of batches.
    """
    from inilora.models import target_linears

    linears = target_linears(model, target_modules)
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for m in linears.values():
        m.weight.requires_grad_(True)
    sums = {n: torch.zeros_like(m.weight, device="cpu", dtype=torch.float32) for n, m in linears.items()}
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
                sums[n] += m.weight.grad.detach().float().cpu()
                m.weight.grad = None
            seen += 1
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
        model.train(was_training)
    if seen == 0:
        raise InitError("method 'loraga' got no training batches to estimate gradients from")
    return {n: g / seen for n, g in sums.items()}


def loraga_factors(G: torch.Tensor, rank: int, gamma: float = 16.0, svd_niter: int = 4) -> Factors:
    """LoRA-GA's ``ArB2r`` direction with the ``stable`` scale (official Outsider565/LoRA-GA code).

    ``torch.svd_lowrank(G, q=4r, niter)``; A = top-r right singular vectors (r x in),
    B = the *next* r left singular vectors (out x r); both times d_out^(1/4) / sqrt(gamma).
    Singular values are not used. PEFT's port differs: it multiplies B by diag(S[r:2r]) and
    scales only B (init-methods.md sec. 3.2).
    """
    out_f, in_f = G.shape
    q = min(4 * rank, out_f, in_f)
    if q < 2 * rank:
        raise InitError(f"method 'loraga' needs 2r = {2 * rank} <= min(out, in) = {min(out_f, in_f)}")
    U, S, V = torch.svd_lowrank(G.float(), q=q, niter=svd_niter)
    scale = out_f**0.25 / math.sqrt(gamma)
    return V[:, :rank].T.contiguous() * scale, U[:, rank : 2 * rank].contiguous() * scale


def init_loraga(model, rank, alpha, target_modules, task_type=None, data=None, batches: int = 64,
                gamma: float = 16.0, svd_niter: int = 4, seed: int = 0) -> PeftModel:
    """LoRA-GA (Wang, Yu & Li 2024): align the first LoRA step with full fine-tuning's gradient.

    ``data`` is an iterable of training batches (``input_ids``, ``attention_mask``, ``labels``);
    the official default is 64 batches of 2 examples. Residual base: W - scaling * B A.
    """
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
        updates = {n: (l.scaling["default"] * l.lora_B["default"].weight @ l.lora_A["default"].weight).float().cpu()
                   for n, l in lora_layers(hot).items()}
    hot.unload()
    return updates


def init_hrp(model, rank, alpha, target_modules, task_type=None, data=None, preheat_rank: int | None = None,
             steps: int = 10, lr: float = 1e-3, form: str = "direction", seed: int = 0) -> PeftModel:
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


def is_residual(method: str, options: dict | None = None) -> bool:
    """Whether ``method`` with ``options`` moves part of W into the adapter (base = W - s B A)."""
    if method == "hrp":
        return (options or {}).get("form", "direction") == "residual"
    return method in RESIDUAL


REGISTRY: dict[str, Callable[..., PeftModel]] = {
    "lora": init_lora,
    "gaussian": init_gaussian,
    "lora_reversed": init_lora_reversed,
    "pissa": init_pissa,
    "milora": init_milora,
    "olora": init_olora,
    "inilora": init_inilora,
    "inilora_alpha": init_inilora_alpha,
    "inilora_beta_kn": init_inilora_beta_kn,
    "inilora_beta_ku": init_inilora_beta_ku,
    "inilora_random": init_random_residual,
    "loraga": init_loraga,
    "hrp": init_hrp,
}
RESIDUAL = {"pissa", "milora", "olora", "inilora", "inilora_alpha", "inilora_beta_kn", "inilora_beta_ku",
            "inilora_random", "loraga"}
NEEDS_FACTORS = {"inilora"}
NEEDS_DATA = {"loraga", "hrp"}  # the workflow passes training batches as option `data`


def method_options(method: str) -> set[str]:
    """The keyword options ``method`` takes (from its function's signature)."""
    import inspect

    if method not in REGISTRY:
        raise InitError(f"unknown init method '{method}'; valid: {sorted(REGISTRY)}")
    fixed = {"model", "rank", "alpha", "target_modules", "task_type"}
    return set(inspect.signature(REGISTRY[method]).parameters) - fixed


def option_defaults(method: str) -> dict:
    """The default value of each keyword option of ``method`` (its function's signature)."""
    import inspect

    return {k: p.default for k, p in inspect.signature(REGISTRY[method]).parameters.items()
            if k in method_options(method) and p.default is not inspect.Parameter.empty}


def check_options(method: str, options: dict, extra: set[str] = frozenset()) -> None:
    allowed = method_options(method) | set(extra)
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
    peft_model = REGISTRY[method](model, rank, alpha, target_modules, task_type=task_type, **options)
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
