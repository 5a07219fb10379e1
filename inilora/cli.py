"""``inilora`` command line: one subcommand per workflow rule, each calling one stage function.

Each subcommand takes its job spec as JSON (``--spec``), which the Snakefile builds from the
config with :mod:`inilora.config`, and the paths it reads and writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from inilora import models
from inilora.io import LockHeld, Preempted

log = logging.getLogger("inilora")


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------- subcommands


def _spec(text: str) -> dict:
    """A job spec given as JSON text (as the Snakefile passes it) or as the path of a JSON file."""
    source = text
    if not text.lstrip().startswith("{") and Path(text).is_file():
        text = Path(text).read_text()
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--spec {source[:80]!r}: neither JSON text nor a JSON file ({err})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"--spec {source[:80]!r}: a job spec is a JSON object, got {type(spec).__name__}")
    return spec


# Each command imports its own stage when it runs: the compute stages import torch and the report
# stages pandas, scipy and matplotlib (2-3 s), so neither pays for the other and `--help` answers at once.


def cmd_prepare_model(a) -> None:
    info = models.prepare(a.name, a.path, Path(a.out_dir), Path(a.manifest))
    log.info("model %s ready at %s", a.name, info["path"])


def cmd_decompose(a) -> None:
    from inilora.decompose import job

    _threads(a.threads)
    timing = Path(a.timing) if a.timing else None
    if a.model:  # outside the workflow: a hub id or a model folder, the paper's settings
        spec = job.spec_for(a.rank, a.iterations, a.lr, a.target_modules, a.device)
        info = {"name": Path(a.model).name, "path": a.model, "source": a.model}
        job.run_on(info, spec, Path(a.out or a.out_dir), timing)
        return
    if not (a.spec and a.manifest and a.out_dir):
        raise ValueError("inilora decompose needs --model (with --rank and --out) or the workflow's --spec, "
                         "--manifest and --out-dir")
    job.run(_spec(a.spec), Path(a.manifest), Path(a.out_dir), timing)


def cmd_finetune(a) -> None:
    from inilora.train import sft

    _threads(a.threads)
    sft.run(_spec(a.spec), Path(a.manifest), Path(a.adapter_dir), Path(a.log_json), a.factors)


def cmd_evaluate(a) -> None:
    from inilora.evaluate import job

    _threads(a.threads)
    job.run(_spec(a.spec), Path(a.manifest), Path(a.out), a.adapter_dir, workers=a.threads or 2)


def cmd_glue(a) -> None:
    from inilora.train import glue

    _threads(a.threads)
    glue.run(_spec(a.spec), Path(a.manifest), Path(a.out), a.factors)


def cmd_merge(a) -> None:
    _threads(a.threads)
    info = models.read_manifest(Path(a.manifest))
    models.merge_adapter(info["path"], a.adapter_dir, Path(a.out_dir), device=a.device)
    log.info("merged %s into %s", a.adapter_dir, a.out_dir)


def cmd_table1(a) -> None:
    from inilora.report.selection import glue_marks, read_selection
    from inilora.report.tables import table1

    tuned = glue_marks(read_selection(a.selection)) if a.selection else None
    table1(_spec(a.spec), a.evals, Path(a.csv), Path(a.markdown), Path(a.paper) if a.paper else None, tuned)


def cmd_table2(a) -> None:
    from inilora.report.selection import read_selection, table_marks
    from inilora.report.tables import table2

    tuned = table_marks(read_selection(a.selection)) if a.selection else None
    table2(_spec(a.spec), a.evals, Path(a.csv), Path(a.markdown), Path(a.paper) if a.paper else None, tuned)


def cmd_select_rates(a) -> None:
    from inilora.report.selection import describe, select

    result = select(_spec(a.spec), a.evals, Path(a.json), Path(a.markdown), Path(a.figure))
    for s in result["selections"]:
        log.info("%s", describe(s))


def cmd_table5(a) -> None:
    from inilora.report.tables import table5

    table5(a.meta, a.timing, Path(a.paper), Path(a.csv), Path(a.markdown), json.loads(a.paper_names))


def cmd_lr_sweep(a) -> None:
    from inilora.report.tables import lr_sweep

    lr_sweep(_spec(a.spec), a.evals, Path(a.csv), Path(a.markdown))


def cmd_study_table(a) -> None:
    from inilora.report.studies import rank_table

    rank_table(_spec(a.spec), a.evals, Path(a.paper), Path(a.csv), Path(a.markdown))


def cmd_figure(a) -> None:
    from inilora.report.studies import draw

    inputs = {k: getattr(a, k) for k in ("evals", "meta", "initial", "logs", "sweep") if getattr(a, k)}
    drawn = draw(_spec(a.spec), inputs, Path(a.out))
    log.info("wrote %s: panels %s", a.out, drawn.panels)


# ----------------------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inilora", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, *required: str, lists: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        for flag in required:
            s.add_argument(flag, required=True)
        for flag in lists:
            s.add_argument(flag, nargs="+", required=True)
        s.set_defaults(func=func)
        return s

    def job(name: str, func, help: str, *required: str) -> argparse.ArgumentParser:
        """A model job: its JSON spec, the model manifest, CPU threads, and the paths it writes."""
        s = command(name, func, help, "--spec", "--manifest", *required)
        s.add_argument("--threads", type=int)
        return s

    command("prepare-model", cmd_prepare_model, "resolve a model; convert the builtin GGUF once",
            "--name", "--path", "--out-dir", "--manifest")
    s = sub.add_parser("decompose", help="IniLoRA weight approximation for one model x rank x lr: the workflow's "
                       "job (--spec, --manifest, --out-dir), or a model on its own (--model, --rank, --out)")
    s.set_defaults(func=cmd_decompose)
    for flag in ("--spec", "--manifest", "--out-dir"):
        s.add_argument(flag)
    s.add_argument("--threads", type=int)
    s.add_argument("--timing", help="write the job's wall time and peak RSS here (Snakemake's benchmark-TSV columns)")
    s.add_argument("--model", help="a hub id or a model folder (outside the workflow)")
    s.add_argument("--rank", type=int, default=8)
    s.add_argument("--iterations", type=int, default=20000)
    s.add_argument("--lr", type=float, default=5e-4)
    s.add_argument("--target-modules", nargs="+", default=None)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--out", help="folder for it<N>.safetensors and it<N>.json (with --model)")
    s = job("finetune", cmd_finetune, "initialise by method name and fine-tune", "--adapter-dir", "--log-json")
    s.add_argument("--factors", help="decomposition artifact (methods that need one)")
    s = job("glue", cmd_glue, "sequence-classification fine-tune of an encoder, validated every epoch", "--out")
    s.add_argument("--factors", help="decomposition artifact (methods that need one)")
    s = job("evaluate", cmd_evaluate, "accuracy and held-out loss of an adapter on one benchmark", "--out")
    s.add_argument("--adapter-dir", help="omit to evaluate the base model")
    s = command("merge", cmd_merge, "a standalone model folder: base + fine-tuned adapter, merged",
                "--manifest", "--adapter-dir", "--out-dir")
    s.add_argument("--threads", type=int)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda (config key 'device')")

    for name, func, what in [("table1", cmd_table1, "results/table1.csv from GLUE run JSONs"),
                             ("table2", cmd_table2, "results/table2.csv from evaluation JSONs"),
                             ("lr-sweep", cmd_lr_sweep, "results/lr_sweep.csv from evaluation JSONs")]:
        s = command(name, func, f"build {what}", "--spec", "--csv", "--markdown")
        s.add_argument("evals", nargs="+")
        if name in ("table1", "table2"):
            s.add_argument("--paper", help=f"the paper's numbers (workflow/reference/paper_{name}.csv)")
        if name in ("table1", "table2"):
            s.add_argument("--selection", help="the rates tuning chose (results/selection.json, or "
                           "selection_table1.json for table1): marks and notes")
    s = command("select-rates", cmd_select_rates, "choose each method's fine-tuning rate from its tuning "
                "evaluations, or Table 1's GLUE runs (results/selection.json or selection_table1.json, .md, .png)",
                "--spec", "--json", "--markdown", "--figure")
    s.add_argument("evals", nargs="+")
    command("table5", cmd_table5, "build results/table5.csv from decomposition metadata and timing files",
            "--paper", "--csv", "--markdown", "--paper-names", lists=("--meta", "--timing"))
    s = command("study-table", cmd_study_table, "build results/table{3,4,6,7}.csv: accuracy by rank, beside the paper's",
                "--spec", "--paper", "--csv", "--markdown")
    s.add_argument("evals", nargs="+")
    s = command("figure", cmd_figure, "draw results/figure{2..6}.png from the workflow's result files", "--spec", "--out")
    for flag in ("--evals", "--meta", "--initial", "--logs", "--sweep"):
        s.add_argument(flag, nargs="+")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    a = parser().parse_args(argv)
    try:
        a.func(a)
    except (ValueError, FileNotFoundError, FloatingPointError, LockHeld) as e:  # DeviceError, ConfigError ... are ValueErrors
        log.error("%s", e)
        return 2
    except Preempted as e:  # the shell's code for a process ended by SIGTERM: a scheduler retries it
        log.warning("%s", e)
        return 128 + signal.SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
