"""Speed comparisons, side by side in one process, on the same matrices and seeds: first the decomposition.

(a) reference: written like the paper's code (one matrix at a time, autograd,
    ``torch.optim.Adam``, StepLR, the residual formed every step, ``loss.item()`` every step);
(b) ours: the batched closed-form solver (inilora.decompose.solve);
(c) the closed-form truncated SVD, the exact optimum.

Prints time, the ratio (a)/(b), each final MSE as a ratio to the Eckart-Young optimum,
and peak memory. Run: ``python -m inilora.speed decompose --shapes roberta-base --steps 2000``.
Also ``finetune``, ``generate`` and ``sandbox`` (HumanEval checks per containment mode).
"""

from __future__ import annotations

import argparse
import functools
import gc
import time

import torch

from inilora.data import load_examples, prompt
from inilora.data.encode import Collator, encode
from inilora.data.humaneval import load_problems
from inilora.decompose import (SolverSettings, decompose_weights, eckart_young_mse, global_sigma, init_factors,
                               read_dtype, save_artifact, solve)
from inilora.decompose.job import decompose_model
from inilora.devices import peak_rss_mb
from inilora.evaluate import humaneval
from inilora.evaluate.generate import COUNTS, generate
from inilora.evaluate.kinds import generation_prompts
from inilora.inits import REGISTRY, apply_init
from inilora.models import default_targets, load_causal_lm, load_tokenizer, target_linears
from inilora.train.common import PROBE_EXAMPLES, cast_frozen_base, init_batches, step0_probe

# (count, out, in) of the q/v matrices of named models; no download needed.
SHAPES = {
    "roberta-base": [(24, 768, 768)],  # 12 layers x query, value
    "roberta-large": [(48, 1024, 1024)],
    "smollm2-135m": [(30, 576, 576), (30, 192, 576)],  # q_proj, v_proj (GQA)
    "llama2-7b": [(64, 4096, 4096)],
    "llama3-8b": [(32, 4096, 4096), (32, 1024, 4096)],
    "gemma-7b": [(56, 4096, 3072)],  # 28 layers x q, v (16 heads of 256 on a 3072 hidden size)
    "llama2-13b": [(80, 5120, 5120)],
}


def random_weights(shapes, seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, (count, o, i) in enumerate(shapes):
        for n in range(count):
            out[f"layers.{n}.proj{k}"] = torch.randn(o, i, generator=g) * std
    return out


def reference(W: torch.Tensor, A0: torch.Tensor, B0: torch.Tensor, settings: SolverSettings) -> float:
    """The original code's loop for one matrix; returns the final MSE."""
    import warnings

    U = B0.clone().requires_grad_()
    P = A0.clone().requires_grad_()
    opt = torch.optim.Adam([U, P], lr=settings.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings.step_size, gamma=settings.gamma)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the original's scheduler-first order
        for _ in range(settings.iterations):
            opt.zero_grad()
            loss = torch.mean((U @ P - W) ** 2)
            loss.backward()
            sched.step()
            opt.step()
            loss.item()
    with torch.no_grad():
        return float(torch.mean((U @ P - W) ** 2))


def copy_bandwidth(W: torch.Tensor, sync, repeats: int = 10) -> float:
    """GB/s of a plain copy of W on its device (bytes read plus written), the best of ``repeats``."""
    dst = torch.empty_like(W)
    dst.copy_(W)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        dst.copy_(W)
        sync()
        best = min(best, time.perf_counter() - t)
    del dst
    return 2 * W.numel() * W.element_size() / best / 1e9


def run(weights: dict[str, torch.Tensor], settings: SolverSettings, device: str, reference_count: int | None,
        optimum_count: int | None = None) -> list[dict]:
    """Time (a), (b), (c) on the same matrices; (a) on the first ``reference_count`` of each shape, scaled up.

    The optimum (an SVD per matrix, and (c)) is taken on the first ``optimum_count`` matrices of
    each shape (default: all): at 4096 x 4096 those SVDs take longer than the solver itself.
    """
    rows = []
    by_shape: dict[tuple, list[str]] = {}
    for n in sorted(weights):
        by_shape.setdefault(tuple(weights[n].shape), []).append(n)
    for (o, i), names in by_shape.items():
        W = torch.stack([weights[n] for n in names]).to(device)
        sigma = global_sigma([weights[n] for n in names])
        A0, B0 = init_factors(names, o, i, settings.rank, [sigma] * len(names), settings.seed)
        A0, B0 = A0.to(device), B0.to(device)
        n_opt = len(names) if optimum_count is None else min(optimum_count, len(names))
        opt = eckart_young_mse(W[:n_opt], settings.rank).float()

        def sync():
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync()
        t = time.perf_counter()
        size = len(names) if settings.chunk_mb is None else max(1, int(settings.chunk_mb // (o * i * 4 / 2**20)))
        ours_mse = torch.cat([next(iter(solve(W[k : k + size], A0[k : k + size], B0[k : k + size], settings,
                                              [settings.iterations]))).mse for k in range(0, len(names), size)])
        sync()
        ours_s = time.perf_counter() - t
        ours_mem = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else peak_rss_mb()

        k = len(names) if reference_count is None else min(reference_count, len(names))
        t = time.perf_counter()
        ref_mse = [reference(W[j], A0[j], B0[j], settings) for j in range(k)]
        sync()
        ref_s = (time.perf_counter() - t) * len(names) / k

        # bytes of W the two products read per step, and what a plain copy moves on this device
        read_bytes = 2 * settings.iterations * W.numel() * read_dtype(settings.weight_dtype).itemsize
        copy_gb_s = copy_bandwidth(W, sync)

        t = time.perf_counter()
        U, S, Vh = torch.linalg.svd(W[:n_opt], full_matrices=False)
        svd_mse = ((U[..., : settings.rank] * S[:, None, : settings.rank]) @ Vh[:, : settings.rank] - W[:n_opt]).pow(2).mean((1, 2))
        sync()
        svd_s = (time.perf_counter() - t) * len(names) / n_opt
        del U, S, Vh
        m = min(k, n_opt)  # matrices with both the reference's MSE and the optimum
        rows.append({
            "shape": f"{len(names)} x {o}x{i}",
            "reference_s": ref_s,
            "reference_matrices_timed": k,
            "optimum_matrices": n_opt,
            "ours_s": ours_s,
            "speedup": ref_s / ours_s,
            "svd_s": svd_s,
            # (a) and (b) on the same matrices, each MSE as a ratio to the Eckart-Young optimum
            "reference_mse_ratio": float((torch.tensor(ref_mse[:m]) / opt[:m].cpu()).mean()),
            "ours_mse_ratio": float((ours_mse[:m] / opt[:m]).mean()),
            "ours_vs_reference_mse": float((ours_mse[:k].cpu() / torch.tensor(ref_mse)).max()),
            "ours_mse_ratio_all": float((ours_mse[:n_opt] / opt).mean()),
            "svd_mse_ratio": float((svd_mse / opt).mean()),
            "ours_w_read_gb_s": read_bytes / ours_s / 1e9,
            "copy_gb_s": copy_gb_s,
            "ours_peak_mb": ours_mem,
            "weights_mb": W.numel() * 4 / 2**20,
        })
    return rows


def finetune_step_times(model_path: str, steps: int, batch: int, seq: int, factors: str | None) -> dict:
    """Training-step time of an IniLoRA-initialised model against a LoRA one, interleaved.

    The residual is folded into the frozen base weight, so both run the same graph; the
    one-time costs are the init itself (loading the cached factors and subtracting B A).
    """
    import copy

    base = load_causal_lm(model_path)
    targets = default_targets(base)
    if factors is None:  # no artifact given: a short decomposition, enough for timing
        import tempfile
        from pathlib import Path

        weights = {n: m.weight.detach().clone() for n, m in target_linears(base, targets).items()}
        res = decompose_weights(weights, SolverSettings(rank=8, iterations=10), [10])[10]
        factors = str(Path(tempfile.mkdtemp()) / "it10.safetensors")
        save_artifact(factors, factors.replace(".safetensors", ".json"), res, {})
    models, init_s = {}, {}
    for method in ("lora", "inilora"):
        opts = {"factors_path": factors} if method == "inilora" else {}
        t = time.perf_counter()
        models[method] = apply_init(copy.deepcopy(base), method, 8, 8, targets, **opts)
        init_s[method] = time.perf_counter() - t
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (batch, seq), generator=g)
    opts = {m: torch.optim.AdamW([p for p in models[m].parameters() if p.requires_grad], lr=1e-4) for m in models}
    times = {m: [] for m in models}
    for step in range(steps + 1):
        for m in ("lora", "inilora") if step % 2 else ("inilora", "lora"):  # alternate who goes first
            t = time.perf_counter()
            loss = models[m](input_ids=ids, labels=ids).loss
            loss.backward()
            opts[m].step()
            opts[m].zero_grad()
            if step:  # step 0 is warm-up
                times[m].append(time.perf_counter() - t)
    med = {m: sorted(v)[len(v) // 2] for m, v in times.items()}
    return {"lora_step_s": med["lora"], "inilora_step_s": med["inilora"],
            "ratio": med["inilora"] / med["lora"], "lora_init_s": init_s["lora"],
            "inilora_init_s": init_s["inilora"], "steps": steps, "batch": f"{batch}x{seq}"}


def head_times(model_path: str, config_path: str, task: str, steps: int, repeats: int) -> list[dict]:
    """LoRA fine-tunes of the config's task with the LM head at every position (the model's own loss)
    and at the answer positions only (``finetune(scored_head=True)``, the default), taking turns,
    ``repeats`` each: each way's training time (the Trainer's loop, no load or init), whether the
    adapters are the same bit for bit (else their largest difference), and how far the logged losses
    are apart. The config's training settings with ``max_steps`` = ``steps``, on the jobs' device."""
    import tempfile
    from pathlib import Path

    from inilora import config as cfg
    from inilora import devices
    from inilora.train.sft import finetune, settings_from_spec

    config = cfg.load(config_path)
    device = devices.resolve(config["device"])
    model = next(iter(config["models"]))
    spec = cfg.finetune_spec(config, model, task, "lora", config["ranks"][0], config["train"]["learning_rate"],
                             config["seeds"][0])
    tok = load_tokenizer(model_path)
    examples = [ex for d in spec["train_data"] for ex in load_examples(d)]
    settings = settings_from_spec(spec["train"], max_steps=steps, checkpoint_steps=0)
    runs = {True: [], False: []}
    for k in range(repeats):
        for scored in (True, False) if k % 2 else (False, True):
            torch.manual_seed(settings.seed)
            peft_model = apply_init(load_causal_lm(model_path, torch.float32).to(device), "lora", spec["rank"],
                                    spec["alpha"], spec["target_modules"])
            cast_frozen_base(peft_model, settings.base_dtype)
            info = finetune(peft_model, tok, examples, settings, Path(tempfile.mkdtemp()), device=device,
                            scored_head=scored)
            adapter = {n: p.detach().float().cpu() for n, p in peft_model.named_parameters() if p.requires_grad}
            runs[scored].append((info["train_seconds"], [c["loss"] for c in info["curve"]], adapter))
            del peft_model
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
    (_, full_curve, full), (_, scored_curve, scored) = runs[False][0], runs[True][0]
    t_full = sorted(t for t, _, _ in runs[False])[(repeats - 1) // 2]
    t_scored = sorted(t for t, _, _ in runs[True])[(repeats - 1) // 2]
    return [{"task": task, "steps": steps, "batch": settings.batch_size * settings.grad_accum,
             "every_position_s": t_full, "answer_positions_s": t_scored, "ratio": t_scored / t_full,
             "same_adapter": all(torch.equal(full[n], scored[n]) for n in full),
             "max_adapter_diff": max(float((full[n] - scored[n]).abs().max()) for n in full),
             "max_loss_rel_diff": max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(full_curve, scored_curve))}]


def _fmt(col: str, v) -> str:
    if not isinstance(v, float):
        return str(v)
    return f"{v:.6f}" if "mse" in col or col == "ratio" else f"{v:.4g}"


def print_table(rows: list[dict]) -> None:
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(_fmt(c, r[c]) for c in cols) + " |")


def decode_bound(model, batch: int, context: int, repeats: int = 5) -> dict:
    """What one greedy decode step of ``batch`` sequences at ``context`` cached tokens cannot beat on
    this machine: every ``nn.Linear`` of ``model`` (attention, MLP, the LM head) applied to one token
    per sequence, timed bare (best of ``repeats``) with the faster of torch's product and, on a CPU,
    oneDNN's on packed weights (:func:`inilora.evaluate.generate.packed_weights`), and the bytes the
    step must read (the weights once, the KV cache once) at the measured copy rate. FLOPs: 2 per
    weight per sequence, plus attention's 4 x layers x key-value width x context per sequence."""
    import torch.nn.functional as F

    from inilora.evaluate.generate import packed_linear, packed_weights

    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = [torch.randn(batch, lin.in_features, dtype=lin.weight.dtype, device=device) for lin in linears]
    packed = packed_weights(model)
    ways = {"torch": lambda x, lin: F.linear(x, lin.weight)}
    if len(packed) == len(linears):
        ways["oneDNN, packed"] = lambda x, lin: packed_linear(packed[lin], lin.bias, x)
    times = {}
    with torch.no_grad():
        for name, product in ways.items():
            times[name] = float("inf")
            for _ in range(repeats + 1):  # the first is a warm-up
                sync()
                t = time.perf_counter()
                for x, lin in zip(xs, linears):
                    product(x, lin)
                sync()
                times[name] = min(times[name], time.perf_counter() - t)
    kernel = min(times, key=times.get)
    best = times[kernel]
    cfg = model.config
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_width = getattr(cfg, "num_key_value_heads", heads) * head_dim
    weights = sum(lin.weight.numel() for lin in linears)
    element = linears[0].weight.element_size()
    flops = 2 * weights * batch + 4 * layers * heads * head_dim * context * batch
    cache_bytes = 2 * layers * kv_width * context * batch * element  # keys and values
    weight_bytes = weights * element
    copy_gbs = copy_bandwidth(linears[-1].weight, sync)
    memory_s = (weight_bytes + cache_bytes) / (copy_gbs / 2 * 1e9)  # the copy rate counts read and write
    floor_s = max(best, memory_s)
    return {"batch": batch, "context": context, "gflop_per_step": flops / 1e9,
            "gb_read_per_step": (weight_bytes + cache_bytes) / 1e9, "product": kernel,
            "torch_matmul_ms": times["torch"] * 1e3, "matmul_ms": best * 1e3,
            "matmul_gflops": 2 * weights * batch / best / 1e9, "copy_gbs": copy_gbs, "memory_ms": memory_s * 1e3,
            "floor_tokens_per_s": batch / floor_s}


GENERATE_RUNS = [  # label, batch (None: the benchmark's own), generate options
    ("dataset order, every row to the end (transformers generate)", None, {"by_length": False, "drop_finished": False}),
    ("longest prompts first", None, {"drop_finished": False}),
    ("longest first, shared prefix once, finished rows dropped", None, {"draft_budget": 0, "pack": False}),
    ("and drafted tokens checked", None, {"prefill_overhead": None, "pack": False}),
    ("and the prefill in groups of similar length", None, {"pack": False}),
    ("and the weights packed for oneDNN (the default)", None, {}),
    ("the default at batch 16", 16, {}),
    ("static cache", None, {"kv_cache": "static", "by_length": False}),
]


def generation_times(model_path: str, config_path: str, benches: list[str], compile: bool = False,
                     single: bool = False, overheads: tuple[int, ...] = ()) -> tuple[list[dict], list[dict]]:
    """Greedy generation of each benchmark's prompts with its own settings, side by side in one
    process: as transformers' ``generate`` runs it (dataset order, every row computed until the
    batch's last is done), longest prompts first, with the shared prefix prefilled once and finished
    rows dropped too, with drafted tokens checked too, with the prefill in groups of similar length
    too, with the linear layers' weights packed for oneDNN too (the default), at batch 16, with the
    static cache (and compiled, if asked), one prompt at a time (if asked), and the default with the
    prefill split at each of ``overheads`` (a forward's cost in tokens,
    :func:`inilora.evaluate.generate.prefill_groups`). Each run's time, generated
    tokens/s, decode steps of :func:`decode_rows` with the tokens it drafted and took, share of the
    machine's bound (:func:`decode_bound`) and how many outputs equal the first run's. Returns
    (rows, bounds)."""
    from inilora import config as cfg

    from inilora import devices

    config = cfg.load(config_path)
    device = devices.resolve(config["device"])  # where the evaluation jobs would run, in their dtype
    tok = load_tokenizer(model_path)
    model = load_causal_lm(model_path).to(device=device, dtype=devices.dtype(config["evaluation_dtype"], device))
    runs = list(GENERATE_RUNS)
    if compile:
        runs.append(("static cache, torch.compile", None, {"kv_cache": "static", "by_length": False, "compile": True}))
    if single:
        runs.append(("one at a time", 1, {}))
    runs += [(f"the default, prefill groups at an overhead of {n} tokens", None, {"prefill_overhead": n})
             for n in overheads]
    rows, contexts = [], {}
    for bench in benches:
        b = config["benchmarks"][bench]
        prompts, stops = generation_prompts(b, bench)
        settings = {"stops": stops, "max_new_tokens": b["max_new_tokens"], "batch_size": b["batch_size"]}
        reference = None
        for label, size, kw in runs:
            size = size or settings["batch_size"]
            options = {"stops": settings["stops"], **kw}
            generate(model, tok, prompts[:2], 4, 2, desc="warm-up", **options)  # (and compilation)
            COUNTS.update(dict.fromkeys(COUNTS, 0))
            t0 = time.perf_counter()
            outs = generate(model, tok, prompts, settings["max_new_tokens"], size, desc=f"{bench}: {label}", **options)
            seconds = time.perf_counter() - t0
            reference = reference or outs
            tokens = COUNTS["generated_tokens"]
            rows.append({"benchmark": bench, "run": label, "prompts": len(prompts), "batch": size,
                         "max_new_tokens": settings["max_new_tokens"], "seconds": seconds,
                         "generated_tokens": tokens, "generated_tokens_per_s": tokens / seconds,
                         "decode_steps": COUNTS["decode_steps"], "drafted": COUNTS["drafted_tokens"],
                         "drafted_taken": COUNTS["drafted_taken"],
                         "same_output": sum(a == b for a, b in zip(outs, reference)) / len(prompts)})
        # a decode step's mean context: the prompt plus half the tokens generated per prompt
        mean_prompt = sum(len(tok(x)["input_ids"]) for x in prompts) / len(prompts)
        contexts[bench] = round(mean_prompt + rows[-1]["generated_tokens"] / len(prompts) / 2)
    bounds = {}
    for r in rows:
        key = (r["batch"], contexts[r["benchmark"]])
        if key not in bounds:
            bounds[key] = decode_bound(model, *key)
        r["share_of_floor"] = r["generated_tokens_per_s"] / bounds[key]["floor_tokens_per_s"]
    return rows, list(bounds.values())


def pass_times(model_path: str, config_path: str, benches: list[str], adapter_dir: str | None = None,
               task: str | None = None) -> list[dict]:
    """Each question/answer benchmark as its job scores it, side by side in one process: the answers
    and the held-out loss from one forward pass over each prompt (the default), and from two (the
    generation, then the loss's own pass). Each way's time, how many answers are the same, and the
    largest difference between the two ways' per-item losses (0 where they agree digit for digit),
    in the jobs' device and dtype."""
    from inilora import config as cfg
    from inilora import devices
    from inilora.evaluate.kinds import KINDS, HFGenerate, run_benchmark

    config = cfg.load(config_path)
    device = devices.resolve(config["device"])
    tok = load_tokenizer(model_path)
    model = load_causal_lm(model_path)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model = model.to(device=device, dtype=devices.dtype(config["evaluation_dtype"], device))
    rows = []
    for bench in benches:
        spec = cfg.evaluate_spec(config, bench, task)
        if not KINDS[spec.get("kind", "numeric")].heldout_loss:
            raise ValueError(f"benchmark '{bench}' scores no held-out loss: nothing to share a pass with")
        seen = {ex.question for d in spec.get("exclude", []) for ex in load_examples(d)}
        two = HFGenerate(model, tok)
        two.one_pass = lambda batch_size: False  # the generation, then heldout_losses
        results = {}
        for label, gen in (("one pass", None), ("two passes", two)):
            t0 = time.perf_counter()
            results[label] = run_benchmark(model, tok, spec, seen, gen=gen), time.perf_counter() - t0
        (one, t_one), (apart, t_two) = results["one pass"], results["two passes"]
        rows.append({"benchmark": bench, "items": one["n"], "batch": spec["batch_size"],
                     "one_pass_s": t_one, "two_passes_s": t_two, "ratio": t_one / t_two,
                     "same_answers": sum(a["output"] == b["output"] for a, b in zip(one["records"], apart["records"])),
                     "max_loss_diff": max(abs(a["heldout_loss"] - b["heldout_loss"])
                                          for a, b in zip(one["records"], apart["records"]))})
    return rows


def evaluation_profile(config_path: str, bench: str, model_dir: str, adapter_dir: str | None = None,
                       task: str | None = None) -> list[dict]:
    """One evaluation job end to end, as the workflow's evaluate stage runs it (inilora.evaluate.job),
    split by phase: the interpreter's start-up with the job's imports (timed in a fresh process),
    loading, merging the adapter, and inside the benchmark prefill, decode, the stop-string checks,
    the rest of ``generate``, the held-out loss and the scoring. Forward passes are timed by
    wrapping the model's ``forward``; a forward of one token per row is a decode step. Where the
    answers and the held-out loss share one pass (``answers_and_losses``), that pass is the prefill
    and no separate held-out loss phase appears."""
    import subprocess
    import sys
    from contextlib import contextmanager

    from transformers.generation import stopping_criteria

    from inilora import config as cfg
    from inilora.data import load_examples
    from inilora.evaluate import generate as gen_module
    from inilora.evaluate.kinds import run_benchmark

    times: dict[str, float] = {}
    counts = {"decode_steps": 0, "decode_rows": 0}

    def add(phase, seconds):
        times[phase] = times.get(phase, 0.0) + seconds

    @contextmanager
    def timed(phase):
        t = time.perf_counter()
        try:
            yield
        finally:
            add(phase, time.perf_counter() - t)

    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers, peft, inilora.evaluate.job, inilora.cli"],
                   check=True)
    add("start-up: interpreter and imports", time.perf_counter() - t)
    config = cfg.load(config_path)
    spec = cfg.evaluate_spec(config, bench, task)
    with timed("load tokenizer and model"):
        tok, model = load_tokenizer(model_dir), load_causal_lm(model_dir)
    if adapter_dir:
        with timed("merge the adapter"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    with timed("load tokenizer and model"):  # to the job's device and dtype, as the job does
        from inilora import devices

        device = devices.resolve(spec.get("device", "auto"))
        model = model.to(device=device, dtype=devices.dtype(spec.get("dtype", "auto"), device))
    state = {"phase": None, "decoding": False}
    forward = model.forward

    @functools.wraps(forward)  # its signature, so the job still sees that it takes logits_to_keep
    def timed_forward(*args, **kwargs):
        if state["phase"]:  # inside a phase timed as a whole (the held-out loss)
            return forward(*args, **kwargs)
        ids = kwargs.get("input_ids", args[0] if args else None)
        # a decode step: any forward of decode_rows (a drafted one runs several tokens per row), or one token per row
        phase = "decode" if state["decoding"] or (ids is not None and ids.shape[1] == 1) else "prefill"
        if phase == "decode":
            counts["decode_steps"] += 1
            counts["decode_rows"] += ids.numel()  # each row's token and its drafted ones
        with timed(phase):
            return forward(*args, **kwargs)

    model.forward = timed_forward
    patches = []

    def wrap(owner, name, phase, during=None):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            before = state["phase"]
            state["phase"] = during if during is not None else before
            try:
                with timed(phase):
                    return original(*args, **kwargs)
            finally:
                state["phase"] = before

        setattr(owner, name, wrapper)
        patches.append((owner, name, original))

    wrap(stopping_criteria.StopStringCriteria, "__init__", "stop strings: set-up")
    wrap(stopping_criteria.StopStringCriteria, "__call__", "stop strings: checks")
    wrap(gen_module, "stop_reached", "stop strings: checks")  # decode_rows' own check
    wrap(gen_module, "generate", "generate, in all")
    # answers and held-out loss in one pass: its forwards over whole prompts count as the prefill
    wrap(gen_module, "answers_and_losses", "generate, in all")
    wrap(gen_module, "heldout_losses", "held-out loss", during="held-out loss")
    decode_rows = gen_module.decode_rows

    def decoding(*args, **kwargs):
        state["decoding"] = True
        try:
            return decode_rows(*args, **kwargs)
        finally:
            state["decoding"] = False

    gen_module.decode_rows = decoding  # greedy_rows and answers_and_losses look it up when they run
    patches.append((gen_module, "decode_rows", decode_rows))
    seen = {ex.question for d in spec.get("exclude", []) for ex in load_examples(d)}
    COUNTS["generated_tokens"] = 0
    try:
        with timed("benchmark, in all"):
            result = run_benchmark(model, tok, spec, seen, workers=2)
    finally:
        for owner, name, original in patches:
            setattr(owner, name, original)
        model.forward = forward
    inside = sum(times.get(k, 0.0) for k in ("prefill", "decode", "stop strings: set-up", "stop strings: checks"))
    times["generate: the rest (logits processing, cache, padding, decoding text)"] = times["generate, in all"] - inside
    times["scoring and the rest"] = times["benchmark, in all"] - times["generate, in all"] - times.get("held-out loss", 0)
    total = sum(v for k, v in times.items() if "in all" not in k)
    order = ["start-up: interpreter and imports", "load tokenizer and model", "merge the adapter", "prefill", "decode",
             "stop strings: set-up", "stop strings: checks",
             "generate: the rest (logits processing, cache, padding, decoding text)", "held-out loss",
             "scoring and the rest"]
    rows = [{"phase": k, "seconds": times[k], "share": times[k] / total} for k in order if k in times]
    rows.append({"phase": "total", "seconds": total, "share": 1.0})
    kept = COUNTS["generated_tokens"]
    rows.append({"phase": f"decode: {counts['decode_steps']} steps over {counts['decode_rows']} positions (a row's "
                          f"token and its drafted ones), {kept} tokens kept ({kept / max(counts['decode_rows'], 1):.0%} "
                          f"of the positions computed); n = {result['n']}",
                 "seconds": times.get("decode", 0.0), "share": times.get("decode", 0.0) / total})
    return rows


def sandbox_times(modes: list[str], workers: int, repeats: int) -> list[dict]:
    """The 164 canonical HumanEval solutions through ``humaneval.score`` under each containment mode,
    the modes interleaved ``repeats`` times so that they share the machine's state."""
    problems = load_problems()
    completions = {t: [p["canonical_solution"]] for t, p in problems.items()}
    rows = {m: {"mode": m, "checks": len(problems), "passed": None, "wall_s": [], "ms_per_check": None}
            for m in modes}
    for _ in range(repeats):
        for mode in modes:
            start = time.perf_counter()
            scored = humaneval.score(problems, completions, workers=workers, progress=False, containment=mode)
            rows[mode]["wall_s"].append(time.perf_counter() - start)
            rows[mode]["passed"] = sum(t["correct"] for t in scored["per_task"].values())
    for row in rows.values():
        row["wall_s"] = min(row["wall_s"])
        row["ms_per_check"] = 1000 * row["wall_s"] * workers / row["checks"]
    return list(rows.values())


def init_costs(model_path: str, rank: int, methods: list[str], train_examples: int, iterations: int) -> list[dict]:
    """Each method's init wall time on ``model_path`` (fresh fp32 load per method, not timed) and the loss
    and gradient norm at step 0, the finetune job's own probe, on the first reasoning-gym chain_sum examples.
    IniLoRA's decomposition (``iterations`` Adam steps) is made once and its time reported apart."""
    import copy

    tok = load_tokenizer(model_path)
    base = load_causal_lm(model_path)
    targets = default_targets(base)
    examples = load_examples({"loader": "reasoning_gym", "dataset": "chain_sum", "n": train_examples, "seed": 1})
    encoded = [encode(tok, ex, 128) for ex in examples]
    collate = Collator(tok.pad_token_id)
    start = time.perf_counter()
    factors = decompose_model(base, rank=rank, iterations=iterations, target_modules=targets)
    decompose_seconds = time.perf_counter() - start
    rows = []
    for method in methods:
        model = copy.deepcopy(base)
        record = REGISTRY[method]
        opts = {"factors": factors} if "factors" in record.needs else {}
        if "data" in record.needs:
            opts["data"] = init_batches(encoded, collate, 2)
        torch.manual_seed(0)
        start = time.perf_counter()
        peft_model = apply_init(model, method, rank, rank, targets, **opts)
        seconds = time.perf_counter() - start
        probe = step0_probe(peft_model, collate(encoded[:PROBE_EXAMPLES]))
        rows.append({"method": method, "init_s": seconds, "step0_loss": probe["loss"], "step0_grad_norm": probe["grad_norm"],
                     "base_changed": record.is_residual(), "output_changed": not record.keeps_output(),
                     "note": f"+ {decompose_seconds:.1f} s decomposition ({iterations} it)" if "factors" in record.needs else ""})
        del model, peft_model
        gc.collect()
    return rows


def base_dtype_change(model_path: str, rank: int, methods: list[str], prompts: int, iterations: int) -> list[dict]:
    """What ``train.base_dtype: bfloat16`` does to the step-0 output: each method's logits with the frozen
    base rounded to bf16 after the init (the residual W - s B A formed in fp32 first) against the same
    model in fp32, on chain_sum prompts; "base model only" rounds the plain model, the floor."""
    import copy

    tok = load_tokenizer(model_path)
    tok.padding_side = "left"
    base = load_causal_lm(model_path).eval()
    targets = default_targets(base)
    texts = [prompt(ex.question) for ex in load_examples({"loader": "reasoning_gym", "dataset": "chain_sum",
                                                          "n": prompts, "seed": 3})]
    batch = tok(texts, return_tensors="pt", padding=True)
    keep = batch["attention_mask"].bool()

    def logits(model):
        with torch.no_grad():
            return model(**batch).logits.float()[keep]

    def compare(name, fp32, rounded):
        diff = (rounded - fp32).abs()
        agree = (rounded.argmax(-1) == fp32.argmax(-1)).float().mean()
        return {"method": name, "max_abs_logit_change": float(diff.max()), "mean_abs_logit_change": float(diff.mean()),
                "logit_scale_mean_abs": float(fp32.abs().mean()), "argmax_agreement": float(agree)}

    reference = logits(base)
    plain = copy.deepcopy(base).to(torch.bfloat16)
    rows = [compare("base model only", reference, logits(plain))]
    del plain
    factors = decompose_model(base, rank=rank, iterations=iterations, target_modules=targets) \
        if any("factors" in REGISTRY[m].needs for m in methods) else None
    for method in methods:
        opts = {"factors": factors} if "factors" in REGISTRY[method].needs else {}
        torch.manual_seed(0)
        model = apply_init(copy.deepcopy(base), method, rank, rank, targets, **opts).eval()
        fp32 = logits(model)
        cast_frozen_base(model, "bfloat16")
        rows.append(compare(method, fp32, logits(model)))
        del model
        gc.collect()
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m inilora.speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int)
    sub = p.add_subparsers(dest="what", required=True)
    d = sub.add_parser("decompose", help="(a) paper-style reference vs (b) our solver vs (c) SVD")
    d.add_argument("--shapes", choices=sorted(SHAPES), default="roberta-base",
                   help="random matrices of a named model's q/v shapes (std 0.02)")
    d.add_argument("--model", help="use a model folder's real q/v weights instead of --shapes")
    d.add_argument("--steps", type=int, default=2000)
    d.add_argument("--rank", type=int, default=8)
    d.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    d.add_argument("--reference-matrices", type=int, default=None,
                   help="time the reference on this many matrices per shape and scale (default: all)")
    d.add_argument("--optimum-matrices", type=int, default=None,
                   help="take the SVD optimum and time (c) on this many matrices per shape and scale (default: all)")
    d.add_argument("--chunk-mb", type=float, default=None, help="solver batch limit (see SolverSettings)")
    d.add_argument("--weight-dtype", default="float32", choices=["float32", "tfloat32", "bfloat16", "float16"])
    f = sub.add_parser("finetune", help="training-step time, IniLoRA vs LoRA")
    f.add_argument("--model", required=True, help="model folder")
    f.add_argument("--factors", help="decomposition artifact (default: a short one made here)")
    f.add_argument("--steps", type=int, default=8)
    f.add_argument("--batch", type=int, default=8)
    f.add_argument("--seq", type=int, default=128)
    h = sub.add_parser("head", help="fine-tuning with the LM head at the answer positions against every position")
    h.add_argument("--model", required=True, help="model folder (the prepared base)")
    h.add_argument("--config", default="config.yaml", help="the workflow config: its task, training settings, device")
    h.add_argument("--task", default=None, help="a task of the config (default: its first)")
    h.add_argument("--steps", type=int, default=8)
    h.add_argument("--repeats", type=int, default=2, help="runs of each way, taking turns")
    g = sub.add_parser("generate", help="greedy generation of benchmarks' prompts: the ways of batching side by side, "
                       "against the machine's bound")
    g.add_argument("--model", required=True, help="model folder")
    g.add_argument("--config", default="config.yaml", help="the workflow config that names the benchmarks")
    g.add_argument("--benchmarks", nargs="+", default=["chain_sum", "gsm_symbolic", "champ", "humaneval"])
    g.add_argument("--compile", action="store_true", help="also time the static cache under torch.compile")
    g.add_argument("--single", action="store_true", help="also generate one prompt at a time")
    g.add_argument("--prefill-overheads", type=int, nargs="*", default=[],
                   help="also the default with the prefill grouped at each of these overheads (tokens a forward costs)")
    e = sub.add_parser("evaluate", help="one evaluation job end to end, split by phase")
    e.add_argument("--config", default="config.yaml", help="the workflow config that names the benchmark")
    e.add_argument("--bench", required=True, help="a benchmark of the config")
    e.add_argument("--model", required=True, help="model folder (the prepared base)")
    e.add_argument("--adapter", help="a fine-tuned adapter folder (omit for the base model)")
    e.add_argument("--task", help="the adapter's task (its training items are dropped from the benchmark)")
    o = sub.add_parser("passes", help="answers and held-out loss from one forward pass against two, side by side")
    o.add_argument("--config", default="config.yaml", help="the workflow config that names the benchmarks")
    o.add_argument("--benchmarks", nargs="+", default=["chain_sum", "gsm_symbolic", "champ"])
    o.add_argument("--model", required=True, help="model folder (the prepared base)")
    o.add_argument("--adapter", help="a fine-tuned adapter folder (omit for the base model)")
    o.add_argument("--task", help="the adapter's task (its training items are dropped from the benchmarks)")
    s = sub.add_parser("sandbox", help="HumanEval checks per containment mode (the 164 canonical solutions)")
    s.add_argument("--modes", nargs="+", default=["none", "bwrap", "unshare"])
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--repeats", type=int, default=2)
    i = sub.add_parser("inits", help="every method's init time and step-0 loss / gradient norm on a model")
    i.add_argument("--model", required=True, help="model folder")
    i.add_argument("--rank", type=int, default=8)
    i.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    i.add_argument("--train-examples", type=int, default=128, help="chain_sum examples the data inits read (in batches of 2)")
    i.add_argument("--iterations", type=int, default=20000, help="IniLoRA's decomposition iterations")
    b = sub.add_parser("base-dtype", help="step-0 logit change from a bf16 frozen base, per method")
    b.add_argument("--model", required=True, help="model folder")
    b.add_argument("--rank", type=int, default=8)
    b.add_argument("--methods", nargs="+", default=["lora", "pissa", "milora", "inilora", "inilora_alpha"])
    b.add_argument("--prompts", type=int, default=16)
    b.add_argument("--iterations", type=int, default=20000)
    a = p.parse_args(argv)
    if a.what == "base-dtype":
        print(f"# base dtype benchmark: {a.model}; rank {a.rank}; {a.prompts} chain_sum prompts; torch threads "
              f"{torch.get_num_threads()}")
        print_table(base_dtype_change(a.model, a.rank, a.methods, a.prompts, a.iterations))
        return
    if a.what == "inits":
        print(f"# init benchmark: {a.model}; rank {a.rank}, alpha = rank; q/v; torch threads {torch.get_num_threads()}")
        print_table(init_costs(a.model, a.rank, a.methods or list(REGISTRY), a.train_examples, a.iterations))
        return
    if a.what == "sandbox":
        print(f"# sandbox benchmark: 164 canonical HumanEval checks, {a.workers} worker(s), best of {a.repeats}")
        print_table(sandbox_times(a.modes, a.workers, a.repeats))
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.what == "evaluate":
        print(f"# evaluation job profile: {a.bench} on {a.model}" + (f" + {a.adapter}" if a.adapter else "")
              + f"; torch threads {torch.get_num_threads()}")
        print_table(evaluation_profile(a.config, a.bench, a.model, a.adapter, a.task))
        return
    if a.what == "passes":
        print(f"# one pass against two: {a.benchmarks} on {a.model}" + (f" + {a.adapter}" if a.adapter else "")
              + f"; torch threads {torch.get_num_threads()}")
        print_table(pass_times(a.model, a.config, a.benchmarks, a.adapter, a.task))
        return
    if a.what == "generate":
        print(f"# generation benchmark: {a.model}; {a.config}: {a.benchmarks}; greedy; torch threads "
              f"{torch.get_num_threads()}")
        rows, bounds = generation_times(a.model, a.config, a.benchmarks, compile=a.compile, single=a.single,
                                        overheads=tuple(a.prefill_overheads))
        print_table(rows)
        print("\n# the bound of one decode step on this machine (inilora.speed.decode_bound)")
        print_table(bounds)
        return
    if a.what == "head":
        from inilora import config as cfg

        task = a.task or next(iter(cfg.load(a.config)["tasks"]))
        print(f"# the LM head at the answer positions against every position: {task} on {a.model}; torch threads "
              f"{torch.get_num_threads()}")
        print_table(head_times(a.model, a.config, task, a.steps, a.repeats))
        return
    if a.what == "finetune":
        print(f"# fine-tuning step benchmark: {a.model}; LoRA r8 on q/v; torch threads {torch.get_num_threads()}")
        print_table([finetune_step_times(a.model, a.steps, a.batch, a.seq, a.factors)])
        return
    if a.model:
        m = load_causal_lm(a.model)
        weights = {n: lin.weight.detach().clone() for n, lin in target_linears(m, default_targets(m)).items()}
        source = a.model
    else:
        weights = random_weights(SHAPES[a.shapes])
        source = f"random N(0, 0.02^2) at {a.shapes} q/v shapes"
    settings = SolverSettings(rank=a.rank, iterations=a.steps, step_size=max(1, a.steps // 4),
                              chunk_mb=a.chunk_mb, weight_dtype=a.weight_dtype)
    device = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else a.device
    print(f"# decomposition benchmark: {source}; rank {a.rank}; {a.steps} steps; device {device}; "
          f"torch threads {torch.get_num_threads()}; chunk_mb {a.chunk_mb}; weight_dtype {a.weight_dtype}")
    print_table(run(weights, settings, a.device, a.reference_matrices, a.optimum_matrices))


if __name__ == "__main__":
    main()
