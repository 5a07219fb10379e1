"""``inilora`` command line: one subcommand per workflow rule.

Each subcommand takes its job spec as JSON (``--spec``), which the Snakefile builds from
the config with inilora.config, and the paths it writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger("inilora")


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


# ----------------------------------------------------------------------------- subcommands


def cmd_prepare_model(a) -> None:
    from inilora.models import prepare

    info = prepare(a.name, a.path, Path(a.out_dir), Path(a.manifest))
    log.info("model %s ready at %s", a.name, info["path"])


def _write_benchmark(path: Path, seconds: float) -> None:
    """This process's wall time and peak RSS in the columns of Snakemake's benchmark TSV (s, max_rss
    in MB). The decompose job writes it itself: Snakemake's output cache refuses a rule with
    ``benchmark:``, and as an output the file is cached with the factors it measured."""
    import resource
    from datetime import timedelta

    from inilora.io import atomic_write_text

    ru = resource.getrusage(resource.RUSAGE_SELF)
    max_rss_mb = ru.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux
    cpu = ru.ru_utime + ru.ru_stime
    row = [f"{seconds:.4f}", str(timedelta(seconds=int(seconds))), f"{max_rss_mb:.2f}", f"{cpu:.2f}"]
    atomic_write_text(path, "\t".join(["s", "h:m:s", "max_rss", "cpu_time"]) + "\n" + "\t".join(row) + "\n")


def cmd_decompose(a) -> None:
    job_start = time.time()  # the benchmark counts the model load, as Snakemake's did
    from inilora import models
    from inilora.decompose import SolverSettings, decompose_weights, fingerprint, save_artifact

    spec = json.loads(a.spec)
    _threads(a.threads)
    info = models.read_manifest(Path(a.manifest))
    model = models.load_for_targets(info["path"])
    weights = {n: m.weight.detach().clone() for n, m in models.target_linears(model, spec["target_modules"]).items()}
    del model
    settings = SolverSettings(
        rank=spec["rank"], lr=spec["lr"], iterations=spec["iterations"], step_size=spec["step_size"],
        gamma=spec["gamma"], seed=spec["seed"], early_stop_tol=spec.get("early_stop_tol"),
        weight_dtype=spec.get("weight_dtype", "float32"), chunk_mb=spec.get("chunk_mb"),
    )
    start = time.time()
    results = decompose_weights(weights, settings, spec["checkpoints"], device=_device(spec["device"]))
    seconds = time.time() - start
    source = {"name": info["name"], "path": info["path"], "source": info["source"], "note": info.get("note", ""),
              "fingerprint": fingerprint(weights)}
    for count, res in results.items():
        meta = {"model": source, "rank": spec["rank"], "lr": spec["lr"], "iterations": count,
                "run_iterations": spec["iterations"], "seed": spec["seed"], "step_size": spec["step_size"],
                "gamma": spec["gamma"], "target_modules": spec["target_modules"], "solve_seconds": seconds,
                "early_stop_tol": spec.get("early_stop_tol"), "weight_dtype": spec.get("weight_dtype", "float32"),
                "stopped_at": res.get("stopped_at", {}), "device": _device(spec["device"])}
        save_artifact(Path(a.out_dir) / f"it{count}.safetensors", Path(a.out_dir) / f"it{count}.json", res, meta)
        log.info("it%d: mean MSE / Eckart-Young optimum = %.4f", count,
                 sum(res["mse"][n] / res["optimum"][n] for n in res["mse"]) / len(res["mse"]))
    if a.benchmark:
        _write_benchmark(Path(a.benchmark), time.time() - job_start)


def cmd_finetune(a) -> None:
    import torch

    from inilora import models
    from inilora.data import load_examples
    from inilora.inits import NEEDS_DATA, apply_init, is_residual, save_initial_adapter
    from inilora.io import atomic_write_dir
    from inilora.train import TrainSettings, finetune, write_curve

    spec = json.loads(a.spec)
    _threads(a.threads)
    torch.manual_seed(spec["train"]["seed"])
    info = models.read_manifest(Path(a.manifest))
    tok = models.load_tokenizer(info["path"])
    # fp32 weights always, as the paper's train.py loads them: `train.bf16` is the Trainer's mixed
    # precision (bf16 autocast over fp32 weights). A bf16 load would round W before the residual
    # W - scaling*BA is formed, and factors decomposed from the fp32 weights would no longer match.
    model = models.load_causal_lm(info["path"], torch.float32)
    opts = dict(spec["method_options"])
    if a.factors:
        opts["factors_path"] = a.factors
    examples = [ex for d in spec["train_data"] for ex in load_examples(d)]
    if spec["method"] in NEEDS_DATA:  # gradient-based inits see batches of the training set
        from inilora.train import Collator, encode

        encoded = [encode(tok, ex, spec["train"]["max_length"]) for ex in examples]
        size = int(opts.pop("batch_size", 2))
        opts["data"] = (Collator(tok.pad_token_id)(encoded[i : i + size]) for i in range(0, len(encoded), size))
    t0 = time.time()
    peft_model = apply_init(model, spec["method"], spec["rank"], spec["alpha"], spec["target_modules"], **opts)
    init_seconds = time.time() - t0
    run_dir = Path(a.adapter_dir).parent
    initial = run_dir / "initial_adapter"
    residual = is_residual(spec["method"], spec["method_options"])
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun (train.gpus > 1) only rank 0 writes
    if main:
        save_initial_adapter(peft_model, initial)  # the step-0 factors: Figure 4, and the residual conversion
    train = {k: v for k, v in spec["train"].items() if k not in ("threads", "gpus", "deepspeed")}
    extra = {"deepspeed": spec["train"]["deepspeed"]} if spec["train"].get("deepspeed") else {}
    settings = TrainSettings(**train, extra=extra)
    result = finetune(peft_model, tok, examples, settings, run_dir / "trainer")
    if not main:
        return
    result["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    # Residual inits changed the base weights; PEFT's rank-2r conversion gives an adapter that
    # loads on the original, unmodified base model (init-methods.md sec. 2.3).
    kwargs = {"path_initial_model_for_weight_conversion": str(initial)} if residual else {}
    atomic_write_dir(Path(a.adapter_dir), lambda tmp: peft_model.save_pretrained(str(tmp), **kwargs))
    write_curve(Path(a.log_json), {**spec, "init_seconds": init_seconds, **result,
                                   "converted_from_residual": residual})


def cmd_evaluate(a) -> None:
    from inilora import models
    from inilora.data import load_examples
    from inilora.evaluate import run_benchmark
    from inilora.io import atomic_write_json

    spec = json.loads(a.spec)
    _threads(a.threads)
    info = models.read_manifest(Path(a.manifest))
    tok = models.load_tokenizer(info["path"])
    model = models.load_causal_lm(info["path"])
    if a.adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, a.adapter_dir).merge_and_unload()
    seen = {ex.question for d in spec.get("exclude", []) for ex in load_examples(d)}
    gen = None
    if spec.get("backend") == "vllm" and spec.get("kind") != "mmlu":
        import tempfile

        from inilora.evaluate import vllm_generator

        folder = info["path"]
        if a.adapter_dir:  # vLLM reads a plain folder: the adapter merged into the base
            folder = tempfile.mkdtemp(prefix=".vllm-merged.", dir=Path(a.out).parent)
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
        gen = vllm_generator(folder, spec.get("seed", 0))
    result = run_benchmark(model, tok, spec, seen, workers=a.threads or 2, gen=gen)
    atomic_write_json(Path(a.out), {"benchmark": spec["benchmark"], "label": spec.get("label", spec["benchmark"]),
                                    "kind": spec.get("kind", "numeric"), "adapter": a.adapter_dir, **result})
    log.info("%s: %s", spec["benchmark"], ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()))


def cmd_glue(a) -> None:
    from inilora import models
    from inilora.glue import finetune_classifier, load_glue
    from inilora.io import atomic_write_json

    spec = json.loads(a.spec)
    _threads(a.threads)
    info = models.read_manifest(Path(a.manifest))
    opts = dict(spec["method_options"])
    if a.factors:
        opts["factors_path"] = a.factors
    rows = {}
    if spec.get("data"):  # a GLUE task from a mirror or local files instead of the hub default
        from inilora.glue import get_task

        t = get_task(spec["task"])
        rows = {"train_rows": load_glue(spec["task"], "train", **spec["data"]),
                "eval_rows": load_glue(spec["task"], t.validation_split, **spec["data"])}
    scratch = Path(a.out).with_suffix(".trainer")  # the Trainer's output_dir; nothing in it is kept
    result = finetune_classifier(
        info["path"], spec["task"], spec["method"], spec["rank"], spec["alpha"], spec["target_modules"],
        epochs=spec["epochs"], lr=spec["learning_rate"], batch_size=spec["batch_size"],
        max_length=spec["max_length"], warmup=spec["warmup_ratio"], weight_decay=spec["weight_decay"],
        seed=spec["seed"], init_options=opts, output_dir=str(scratch), **rows)
    atomic_write_json(Path(a.out), {**spec, **result})
    shutil.rmtree(scratch, ignore_errors=True)
    log.info("%s %s: best %s", spec["task"], spec["method"], result["best"])


def cmd_table1(a) -> None:
    from inilora.tables import table1

    table1(json.loads(a.spec), a.evals, Path(a.csv), Path(a.markdown), Path(a.paper) if a.paper else None)


def cmd_table5(a) -> None:
    from inilora.tables import table5

    table5(a.meta, a.bench, Path(a.paper), Path(a.csv), Path(a.markdown), json.loads(a.paper_names))


def cmd_merge(a) -> None:
    from inilora import models

    _threads(a.threads)
    info = models.read_manifest(Path(a.manifest))
    models.merge_adapter(info["path"], a.adapter_dir, Path(a.out_dir))
    log.info("merged %s into %s", a.adapter_dir, a.out_dir)


def cmd_table2(a) -> None:
    from inilora.tables import table2

    table2(json.loads(a.spec), a.evals, Path(a.csv), Path(a.markdown), Path(a.paper) if a.paper else None)


def cmd_lr_sweep(a) -> None:
    from inilora.tables import lr_sweep

    lr_sweep(json.loads(a.spec), a.evals, Path(a.csv), Path(a.markdown))


def cmd_study_table(a) -> None:
    from inilora.studies import rank_table

    rank_table(json.loads(a.spec), a.evals, Path(a.paper), Path(a.csv), Path(a.markdown))


def cmd_figure(a) -> None:
    from inilora.studies import draw

    inputs = {k: getattr(a, k) for k in ("evals", "meta", "initial", "logs", "sweep") if getattr(a, k)}
    drawn = draw(json.loads(a.spec), inputs, Path(a.out))
    log.info("wrote %s: panels %s", a.out, drawn.panels)


# ----------------------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inilora", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def job(name: str, func, help: str, *required: str) -> argparse.ArgumentParser:
        """A model job: its JSON spec, the model manifest, CPU threads, and the paths it writes."""
        s = sub.add_parser(name, help=help)
        s.add_argument("--spec", required=True)
        s.add_argument("--manifest", required=True)
        s.add_argument("--threads", type=int)
        for flag in required:
            s.add_argument(flag, required=True)
        s.set_defaults(func=func)
        return s

    s = sub.add_parser("table5", help="build results/table5.csv from decomposition metadata and benchmarks")
    for flag in ("--paper", "--csv", "--markdown", "--paper-names"):
        s.add_argument(flag, required=True)
    s.add_argument("--meta", nargs="+", required=True)
    s.add_argument("--bench", nargs="+", required=True)
    s.set_defaults(func=cmd_table5)

    s = sub.add_parser("study-table", help="build results/table{3,4,6,7}.csv: accuracy by rank, beside the paper's")
    for flag in ("--spec", "--paper", "--csv", "--markdown"):
        s.add_argument(flag, required=True)
    s.add_argument("evals", nargs="+")
    s.set_defaults(func=cmd_study_table)

    s = sub.add_parser("figure", help="draw results/figure{2..6}.png from the workflow's result files")
    s.add_argument("--spec", required=True)
    s.add_argument("--out", required=True)
    for flag in ("--evals", "--meta", "--initial", "--logs", "--sweep"):
        s.add_argument(flag, nargs="+")
    s.set_defaults(func=cmd_figure)

    s = sub.add_parser("merge", help="a standalone model folder: base + fine-tuned adapter, merged")
    for flag in ("--manifest", "--adapter-dir", "--out-dir"):
        s.add_argument(flag, required=True)
    s.add_argument("--threads", type=int)
    s.set_defaults(func=cmd_merge)

    s = sub.add_parser("prepare-model", help="resolve a model; convert the builtin GGUF once")
    for flag in ("--name", "--path", "--out-dir", "--manifest"):
        s.add_argument(flag, required=True)
    s.set_defaults(func=cmd_prepare_model)

    s = job("decompose", cmd_decompose, "IniLoRA weight approximation for one model x rank x lr", "--out-dir")
    s.add_argument("--benchmark", help="write wall time and peak RSS here (a Snakemake benchmark TSV)")
    s = job("finetune", cmd_finetune, "initialise by method name and fine-tune", "--adapter-dir", "--log-json")
    s.add_argument("--factors", help="decomposition artifact (methods that need one)")
    s = job("glue", cmd_glue, "sequence-classification fine-tune of an encoder, validated every epoch", "--out")
    s.add_argument("--factors", help="decomposition artifact (methods that need one)")
    s = job("evaluate", cmd_evaluate, "accuracy and held-out loss of an adapter on one benchmark", "--out")
    s.add_argument("--adapter-dir", help="omit to evaluate the base model")

    for name, func, help in [("table1", cmd_table1, "build results/table1.csv from GLUE run JSONs"),
                             ("table2", cmd_table2, "build results/table2.csv from evaluation JSONs"),
                             ("lr-sweep", cmd_lr_sweep, "build results/lr_sweep.csv from evaluation JSONs")]:
        s = sub.add_parser(name, help=help)
        for flag in ("--spec", "--csv", "--markdown"):
            s.add_argument(flag, required=True)
        s.add_argument("evals", nargs="+")
        s.set_defaults(func=func)
        if name in ("table1", "table2"):
            s.add_argument("--paper", help=f"the paper's numbers (workflow/reference/paper_{name}.csv)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    a = parser().parse_args(argv)
    try:
        a.func(a)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
