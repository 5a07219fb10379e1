"""IniLoRA weight approximation: fit B A ~ W for every target matrix.

The paper (IniLoRA, Sec. 3, Eq. 1-3) and its code (hihi885/IniLoRA,
matrix_decomposition/model_weight_decomposition_llm.py) minimise the element-mean
MSE  L(A, B) = mean((B A - W)^2)  with Adam (lr 5e-4, default betas), a
StepLR(step 5000, gamma 0.9) schedule and 20000 full-batch iterations, starting
from A, B ~ N(0, sigma^2) where sigma is the mean over layers of each weight's std,
rounded to 3 decimals, one sigma per module type.

Shapes: W is out x in, B is out x r (PEFT ``lora_B``), A is r x in (PEFT ``lora_A``).

What differs from the original, on purpose:
- All matrices of one shape move together as one batched problem. Each matrix's
  loss depends only on its own A and B and Adam is elementwise, so the update rule
  per matrix is the paper's; only the floating-point summation order changes.
- Gradients are closed-form, so no autograd graph and no d x k residual per step:
  dL/dB = 2/N (B (A A^T) - W A^T),  dL/dA = 2/N ((B^T B) A - B^T W),  N = out * in.
- Every matrix gets its own generator seeded from (seed, module name), so a matrix
  gets the same start whether it is solved alone or in a batch; the original sets
  no seed at all.
Kept on purpose (paper fidelity): the original calls ``scheduler.step()`` before
``optimizer.step()``, so each learning-rate decay lands one iteration early.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class SolverSettings:
    """Hyper-parameters of the approximation; defaults are the paper's."""

    rank: int = 8
    lr: float = 5e-4
    iterations: int = 20000
    step_size: int = 5000
    gamma: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seed: int = 0
    scheduler_before_optimizer: bool = True  # the original code's order
    log_every: int = 100
    early_stop_tol: float | None = None  # stop when every MSE <= optimum * (1 + tol); off = paper
    # float32 | tfloat32 | bfloat16 | float16: how the two products read W (tfloat32: fp32 W, TF32 tensor cores)
    weight_dtype: str = "float32"
    chunk_mb: float | None = None  # largest batch of W solved at once (memory, cache); None = whole shape

    def lr_at(self, iteration: int) -> float:
        """Learning rate used by 0-based ``iteration`` (StepLR semantics)."""
        stepped = iteration + 1 if self.scheduler_before_optimizer else iteration
        return self.lr * self.gamma ** (stepped // self.step_size)


@dataclass
class Checkpoint:
    """Factors of a batch of matrices after ``iteration`` Adam steps."""

    iteration: int
    A: torch.Tensor  # n x r x in
    B: torch.Tensor  # n x out x r
    mse: torch.Tensor  # n, exact element-mean MSE of B A - W
    curve: list[tuple[int, list[float]]] = field(default_factory=list)
    stopped_at: int | None = None  # iteration of an early stop, if one happened


def module_seed(seed: int, name: str) -> int:
    """A per-matrix seed that does not depend on the order matrices are solved in."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def global_sigma(weights: list[torch.Tensor]) -> float:
    """Mean over layers of each weight's std, rounded to 3 decimals (the paper's Eq. 2)."""
    return round(sum(float(w.float().std()) for w in weights) / len(weights), 3)


def init_factors(
    names: list[str], out_features: int, in_features: int, rank: int, sigmas: list[float], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw B (n x out x r) then A (n x r x in) from N(0, sigma_i^2), one generator per matrix.

    The original draws U (out x r) first, then P (in x r) with A = P^T; we keep that order.
    """
    As, Bs = [], []
    for name, sigma in zip(names, sigmas, strict=True):
        g = torch.Generator().manual_seed(module_seed(seed, name))
        Bs.append(torch.randn(out_features, rank, generator=g) * sigma)
        As.append((torch.randn(in_features, rank, generator=g) * sigma).T.contiguous())
    return torch.stack(As), torch.stack(Bs)


def exact_mse(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Element-mean squared error of B A - W per matrix, forming one matrix's residual at a time
    (a whole batch's would double the memory the weights take)."""
    return torch.stack([(torch.mm(B[k], A[k]) - W[k]).pow_(2).mean() for k in range(W.shape[0])])


def eckart_young_mse(W: torch.Tensor, rank: int) -> torch.Tensor:
    """The smallest element-mean MSE any rank-r product can reach (sum of the tail s_i^2 / N).

    One matrix at a time in float64, so a batch never needs a second, double-size copy."""
    flat = W.reshape(-1, *W.shape[-2:])
    s = torch.stack([torch.linalg.svdvals(w.double()) for w in flat]).reshape(*W.shape[:-2], -1)
    return (s[..., rank:] ** 2).sum(-1) / (W.shape[-2] * W.shape[-1])


def read_dtype(weight_dtype: str) -> torch.dtype:
    """The dtype W is read in by the two products (``SolverSettings.weight_dtype``; tfloat32 reads fp32)."""
    return torch.float32 if weight_dtype == "tfloat32" else getattr(torch, weight_dtype)


@contextlib.contextmanager
def tf32_matmul(enabled: bool):
    """CUDA float32 matmuls on TF32 tensor cores inside the block (no effect on a CPU)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def products_reading_w(device_type: str):
    """The two products that read W, (W A^T, B^T W), in the form fastest on the device.

    Measured (docs/speed.md): on CPU BLAS the r-row-by-matrix forms (A W^T)^T and B^T W run
    about 1.5x faster; on an H100 (cuBLAS, fp32) the matrix-by-r-column forms W A^T and
    (W^T B)^T take 1.88 + 1.71 ms against 2.91 + 2.18 ms at 64 x 4096 x 4096, r 8.
    """
    if device_type == "cpu":
        return lambda W, A, B: (torch.bmm(A, W.transpose(1, 2)).float().transpose(1, 2),
                                torch.bmm(B.transpose(1, 2), W).float())
    return lambda W, A, B: (torch.bmm(W, A.transpose(1, 2)).float(),
                            torch.bmm(W.transpose(1, 2), B).float().transpose(1, 2))


def solve(
    W: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    settings: SolverSettings,
    checkpoints: list[int],
    progress: str | None = None,
    optimum: torch.Tensor | None = None,
) -> Iterator[Checkpoint]:
    """Run Adam on mean((B A - W)^2) for every matrix of the batch at once.

    W: n x out x in (fp32), A: n x r x in, B: n x out x r (starting factors, not modified).
    Yields a Checkpoint at every count in ``checkpoints`` (0 allowed: the start itself).
    With ``settings.early_stop_tol`` and ``optimum`` (the Eckart-Young MSE per matrix), the run
    stops once every matrix is within that relative tolerance; later checkpoints then carry
    the stopped factors and ``stopped_at``.
    """
    W = W.float()
    A, B = A.float().clone(), B.float().clone()
    n, out_f, in_f = W.shape
    N = out_f * in_f
    b1, b2 = settings.betas
    mA, vA = torch.zeros_like(A), torch.zeros_like(A)
    mB, vB = torch.zeros_like(B), torch.zeros_like(B)
    w_sq = torch.stack([torch.dot(w.reshape(-1), w.reshape(-1)) for w in W])  # no n x out x in temporary
    # the two products that read W may use a narrower copy (GPU bandwidth); the rest stays fp32
    Wr = W.to(read_dtype(settings.weight_dtype))  # no copy when that is fp32
    reads_w = products_reading_w(W.device.type)
    wanted = sorted(set(checkpoints))
    if wanted and wanted[-1] > settings.iterations:
        raise ValueError(f"checkpoint {wanted[-1]} is beyond iterations={settings.iterations}")
    curve: list[tuple[int, list[float]]] = []
    stopped_at: int | None = None

    def checkpoint(it: int) -> Checkpoint:
        return Checkpoint(it, A.clone(), B.clone(), exact_mse(W, A, B), list(curve), stopped_at)

    if 0 in wanted:
        yield checkpoint(0)
    bar = tqdm(range(settings.iterations), desc=progress, disable=progress is None, mininterval=2)
    for it in bar:
        if stopped_at is None:
            with tf32_matmul(settings.weight_dtype == "tfloat32"):
                WAt, BtW = reads_w(Wr, A.to(Wr.dtype), B.to(Wr.dtype))  # n x out x r, n x r x in (fp32)
            AAt = torch.bmm(A, A.transpose(1, 2))  # n x r x r
            BtB = torch.bmm(B.transpose(1, 2), B)  # n x r x r
            if it % settings.log_every == 0:
                # ||BA - W||^2 = ||W||^2 - 2 <B, W A^T> + <B^T B, A A^T>, from products we have anyway
                loss = (w_sq - 2 * (B * WAt).sum(dim=(1, 2)) + (BtB * AAt).sum(dim=(1, 2))) / N
                if not bool(torch.isfinite(loss).all()):
                    bad = torch.nonzero(~torch.isfinite(loss)).flatten().tolist()
                    raise FloatingPointError(
                        f"decomposition diverged at iteration {it}: non-finite MSE for batch matrices {bad}; "
                        f"lower decompose.lr (now {settings.lr})"
                    )
                curve.append((it, loss.tolist()))
                bar.set_postfix(mse=f"{loss.mean().item():.3e}", refresh=False)
                if (settings.early_stop_tol is not None and optimum is not None
                        and bool((loss <= optimum.to(loss) * (1 + settings.early_stop_tol)).all())):
                    stopped_at = it
            if stopped_at is None:
                gB = (torch.bmm(B, AAt) - WAt) * (2.0 / N)
                gA = (torch.bmm(BtB, A) - BtW) * (2.0 / N)
                # torch.optim.Adam (single-tensor path), bias-corrected, no weight decay
                t = it + 1
                step = settings.lr_at(it) / (1 - b1**t)
                bc2 = math.sqrt(1 - b2**t)
                for p, g, m, v in ((A, gA, mA, vA), (B, gB, mB, vB)):
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.addcdiv_(m, (v.sqrt() / bc2).add_(settings.eps), value=-step)
        if it + 1 in wanted:
            yield checkpoint(it + 1)
        if stopped_at is not None and (not wanted or it + 1 >= wanted[-1]):
            break


# ----------------------------------------------------------------------------- model level


def module_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def chunks(by_shape: dict[tuple[int, int], list[str]], chunk_mb: float | None) -> Iterator[list[str]]:
    """Batches of same-shape matrices whose fp32 weights stay under ``chunk_mb`` (at least one each)."""
    for (out_f, in_f), names in by_shape.items():
        size = len(names) if chunk_mb is None else max(1, int(chunk_mb // (out_f * in_f * 4 / 2**20)))
        for k in range(0, len(names), size):
            yield names[k : k + size]


def decompose_weights(
    weights: dict[str, torch.Tensor],
    settings: SolverSettings,
    checkpoints: list[int],
    device: str = "cpu",
    consume: bool = False,
) -> dict[int, dict]:
    """Approximate every weight (out x in) at rank ``settings.rank``.

    ``consume``: drop each weight from ``weights`` once it is stacked for solving, so a job holds
    one copy of its target weights, not two (take the fingerprint first).

    Returns, per checkpoint count, ``{"A": {name: r x in}, "B": {name: out x r},
    "mse": {name: float}, "curve": {name: [(it, mse), ...]}}`` and the per-module-type
    sigma and Eckart-Young optimum under the keys ``sigma`` and ``optimum``.
    """
    by_type: dict[str, list[str]] = {}
    for name in weights:
        by_type.setdefault(module_type(name), []).append(name)
    sigma = {t: global_sigma([weights[n] for n in names]) for t, names in by_type.items()}
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name in sorted(weights):
        by_shape.setdefault(tuple(weights[name].shape), []).append(name)

    results: dict[int, dict] = {c: {"A": {}, "B": {}, "mse": {}, "curve": {}} for c in checkpoints}
    optimum: dict[str, float] = {}
    for (out_f, in_f), names in by_shape.items():
        if settings.rank > min(out_f, in_f):
            raise ValueError(f"rank {settings.rank} exceeds min(out, in) = {min(out_f, in_f)} of {names[0]}")
    for names in chunks(by_shape, settings.chunk_mb):
        out_f, in_f = weights[names[0]].shape
        W = torch.empty((len(names), out_f, in_f), dtype=torch.float32, device=device)
        for i, n in enumerate(names):  # one at a time, so a consumed weight is freed before the next is copied
            W[i] = weights[n].detach()
            if consume:
                del weights[n]
        sigmas = [sigma[module_type(n)] for n in names]
        A0, B0 = init_factors(names, out_f, in_f, settings.rank, sigmas, settings.seed)
        opt = eckart_young_mse(W, settings.rank)
        optimum.update(zip(names, opt.tolist()))
        label = f"decompose {len(names)} x {out_f}x{in_f} r{settings.rank}"
        for ck in solve(W, A0.to(device), B0.to(device), settings, checkpoints, progress=label, optimum=opt):
            res = results[ck.iteration]
            for i, n in enumerate(names):
                res["A"][n] = ck.A[i].cpu().contiguous()
                res["B"][n] = ck.B[i].cpu().contiguous()
                res["mse"][n] = float(ck.mse[i])
                res["curve"][n] = [(it, losses[i]) for it, losses in ck.curve]
                res.setdefault("stopped_at", {})[n] = ck.stopped_at
    for res in results.values():
        res["sigma"] = sigma
        res["optimum"] = optimum
    return results


