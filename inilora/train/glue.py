"""GLUE as the IniLoRA paper measures it (its Table 1), plus offline GLUE-style stand-ins.

Protocol of the paper's ``nlu_glue_other_tasks.py`` / ``nlu_glue_mnli.py`` (hihi885/IniLoRA):
RoBERTa-base with a sequence-classification head, LoRA r = alpha = 8 on ``query`` / ``value``
(task type SEQ_CLS, so PEFT also trains the classifier head), torch AdamW at lr 3e-4 (its
default weight decay 0.01), a linear schedule with warmup over 6% of all steps, batch 32,
max length 512, fp32, 100 epochs (scripts/train_glue_tasks.sh), an evaluation on the
validation split after every epoch. The reported number is the *maximum over epochs* of the
main metric (Matthews correlation for CoLA, Pearson for STS-B, accuracy otherwise); MNLI is
evaluated on ``validation_mismatched`` only; STS-B is a 1-output regression (MSE). We report
that best epoch and the last epoch side by side.

Deviations from the original code, on purpose:
- the HF Trainer runs the loop (multi-GPU / accelerate unchanged); the optimizer is still a
  plain ``torch.optim.AdamW`` over every trainable parameter, as in the original, rather than
  the Trainer's default, which exempts biases and LayerNorm weights from weight decay;
- the Trainer rounds the warmup up to whole steps (ceil(0.06 N)); the original passes 0.06 N;
- ``train_loss`` per epoch is the mean over the epoch; the original logs the last batch's loss.

The tasks, their loaders, metrics and offline stand-ins are data (:mod:`inilora.data.glue`).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from inilora import devices, models
from inilora.data.glue import (
    Task,
    check_fields,
    compute_metrics,
    get_task,
    load_glue,
    predicted,
    standin,
    to_columns,
    tuning_split,
)
from inilora.inits import apply_init
from inilora.io import atomic_write_json
from inilora.train.common import StopOnNonFinite, training_arguments, with_init_data

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- fine-tuning


def encode_rows(tok, t: Task, rows, max_length: int) -> list[dict]:
    """Tokenised examples (pairs as the tokenizer's sentence pair), ``labels`` float for regression."""
    check_fields(t, list(rows) if isinstance(rows, dict) else list(rows[0]) if rows else [], "rows")
    cols = to_columns(rows, (*t.text_fields, "label"))
    enc = tok(*[cols[f] for f in t.text_fields], truncation=True, max_length=max_length)
    cast = float if t.regression else int
    return [{**{k: v[i] for k, v in enc.items()}, "labels": cast(y)} for i, y in enumerate(cols["label"])]


def _epoch_records(log_history: list[dict], t: Task) -> list[dict]:
    """One record per epoch: the eval metrics and the epoch's mean training loss."""
    losses = {round(h["epoch"]): h["loss"] for h in log_history if "loss" in h and "epoch" in h}
    out = []
    for h in log_history:
        if f"eval_{t.main_metric}" in h:
            e = round(h["epoch"])
            out.append({"epoch": e, **{m: h[f"eval_{m}"] for m in t.metrics}, "train_loss": losses.get(e)})
    return out


def _logits(predictions):
    return predictions[0] if isinstance(predictions, tuple) else predictions  # extra model outputs ride along


def item_losses(task: str, outputs, labels) -> np.ndarray:
    """Each example's loss, as training scores it: cross-entropy of the label for classification,
    the squared error for regression (the MSE head). From the model's raw outputs, in float64."""
    out, y = np.asarray(_logits(outputs), dtype=np.float64), np.asarray(labels).reshape(-1)
    if get_task(task).regression:
        return (out.reshape(-1) - y) ** 2
    top = out.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(out - top).sum(axis=1))
    return log_z - out[np.arange(len(y)), y.astype(int)]


def tuning_record(task: str, outputs, labels) -> dict:
    """What the rate selection reads of a run (inilora.report.selection): per tuning example its loss
    and, for classification, whether the prediction is right; and the split's metrics. Taken after
    the last epoch."""
    y = np.asarray(labels).reshape(-1)
    p = predicted(task, _logits(outputs))
    losses = item_losses(task, outputs, y)
    return {"examples": int(len(y)), "loss": float(losses.mean()), "metrics": compute_metrics(task, p, y),
            "items": {"heldout_loss": losses.tolist(),
                      **({} if get_task(task).regression else {"correct": (p == y).astype(float).tolist()})}}


def best_index(per_epoch: list[dict], metric: str) -> int:
    """The position of the epoch with the highest ``metric`` (the first on ties; NaN counts as lowest)."""
    def key(i):
        v = per_epoch[i][metric]
        return (-math.inf if v is None or math.isnan(v) else v, -i)

    return max(range(len(per_epoch)), key=key)


def best_epoch(per_epoch: list[dict], metric: str) -> dict:
    """The epoch record with the highest ``metric`` (the first on ties; NaN counts as lowest)."""
    return dict(per_epoch[best_index(per_epoch, metric)])


def task_rows(task: str):
    """(train, validation) rows of a task by default: a stand-in's own splits, else the hub's GLUE
    train split and the task's validation split."""
    t = get_task(task)
    if not t.glue:
        splits = standin(task)
        return splits["train"], splits["validation"]
    return load_glue(task, "train"), load_glue(task, t.validation_split)


def finetune_classifier(
    model_dir,
    task: str,
    method: str = "lora",
    rank: int = 8,
    alpha: float = 8,
    target_modules: Sequence[str] = ("query", "value"),
    epochs: int = 100,
    lr: float = 3e-4,
    batch_size: int = 32,
    max_length: int = 512,
    warmup: float = 0.06,
    weight_decay: float = 0.01,
    seed: int = 0,
    init_options: dict | None = None,
    train_rows=None,
    eval_rows=None,
    tuning_rows=None,
    output_dir=None,
    progress: bool = True,
    device: str | None = None,
) -> dict:
    """Fine-tune ``model_dir`` (an encoder + tokenizer) on ``task`` with LoRA initialised by
    ``method``; evaluate after every epoch. Defaults are the paper's protocol.

    Rows default to the hub's GLUE splits (train / the task's validation split) or, for a
    stand-in, to ``standin(task)``. Returns {"task", "label", "method", "main_metric",
    "per_epoch": [{"epoch", metrics..., "train_loss"}], "best" (epoch record with the highest
    main metric: the paper's number), "last", "predictions" ({"labels", "best", "last"}: one entry
    per validation example), "trainable_parameters", "head_parameters", "train_examples",
    "eval_examples", "seconds"}; with ``tuning_rows`` (held out of training), also "tuning"
    (:func:`tuning_record`, after the last epoch).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, set_seed

    t = get_task(task)
    if train_rows is None or eval_rows is None:
        default_train, default_eval = task_rows(task)
        train_rows = default_train if train_rows is None else train_rows
        eval_rows = default_eval if eval_rows is None else eval_rows

    set_seed(seed)  # the new classifier head is drawn in from_pretrained
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=t.num_labels, dtype=torch.float32,
        problem_type="regression" if t.regression else "single_label_classification")
    if device == "cuda":  # the init (SVDs, gradients) runs where the model is
        model = model.to("cuda")
    train_data = encode_rows(tok, t, train_rows, max_length)
    eval_data = encode_rows(tok, t, eval_rows, max_length)
    collate = DataCollatorWithPadding(tok)

    # as the finetune stage: a data-driven init reads training batches, default size 2
    options = with_init_data(method, init_options or {}, lambda: train_data, collate)
    peft_model = apply_init(model, method, rank, alpha, list(target_modules), task_type="SEQ_CLS", **options)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    head = [n for n in trainable if "lora_" not in n]
    if not head:  # PEFT's SEQ_CLS modules_to_save knows "classifier" and "score" only
        raise ValueError(f"no classifier head is trainable in {model_dir}: PEFT's SEQ_CLS modules_to_save did not "
                         f"match its head; trainable are only {trainable[:4]}...")

    # torch AdamW over every trainable parameter, as the paper (the Trainer's own exempts biases from decay)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(
            str(output_dir or tmp), batch_size=batch_size, learning_rate=lr, scheduler="linear", warmup=warmup,
            weight_decay=weight_decay, epochs=epochs, seed=seed, device=device,
            per_device_eval_batch_size=batch_size,
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",
            disable_tqdm=not progress,
        )
        epochs_seen = []  # each evaluation's predictions, for the per-example record of the reported epochs

        def scored(ev):
            p = predicted(task, _logits(ev.predictions))
            epochs_seen.append((p, np.asarray(ev.label_ids).reshape(-1)))
            return compute_metrics(task, p, ev.label_ids)

        trainer = Trainer(
            model=peft_model, args=args, train_dataset=train_data, eval_dataset=eval_data, data_collator=collate,
            compute_metrics=scored, callbacks=[StopOnNonFinite()], optimizers=(optimizer, None),
        )
        start = time.time()
        trainer.train()
        seconds = time.time() - start
        tuning = None
        if tuning_rows is not None:
            trainer.compute_metrics = None  # the validation record is per epoch; this is apart from it
            tuned = trainer.predict(encode_rows(tok, t, tuning_rows, max_length))
            tuning = tuning_record(task, tuned.predictions, tuned.label_ids)
    per_epoch = _epoch_records(trainer.state.log_history, t)
    best = best_index(per_epoch, t.main_metric)
    if len(epochs_seen) != len(per_epoch):
        raise RuntimeError(f"{len(epochs_seen)} evaluations scored but {len(per_epoch)} epoch records logged")
    labels = epochs_seen[0][1]
    return {
        "task": task,
        "label": t.label,
        "method": method,
        "main_metric": t.main_metric,
        "per_epoch": per_epoch,
        "best": dict(per_epoch[best]),
        "last": dict(per_epoch[-1]),
        # per validation example, in the split's order: the label and each reported epoch's prediction
        # (a class id, or a score for regression), so that tables can give intervals and paired tests
        "predictions": {"labels": labels.tolist(), "best": epochs_seen[best][0].tolist(),
                        "last": epochs_seen[-1][0].tolist()},
        "trainable_parameters": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
        "head_parameters": head,
        "train_examples": len(train_data),
        "eval_examples": len(eval_data),
        "seconds": seconds,
        **({"tuning": tuning} if tuning is not None else {}),
    }


def run(spec: dict, manifest: Path, out: Path, factors: str | None = None) -> None:
    """The workflow's glue stage: one encoder x task x method x rank x seed, validated every epoch."""
    import shutil

    device = devices.resolve(spec.get("device", "auto"))
    info = models.read_manifest(manifest)
    opts = dict(spec["method_options"])
    if factors:
        opts["factors_path"] = factors
    rows = {}
    if spec.get("data"):  # a GLUE task from a mirror or local files instead of the hub default
        t = get_task(spec["task"])
        rows = {"train_rows": load_glue(spec["task"], "train", **spec["data"]),
                "eval_rows": load_glue(spec["task"], t.validation_split, **spec["data"])}
    if spec.get("tuning"):  # the rate is being chosen: a share of the training rows is held out for it
        train_rows = rows.get("train_rows") or task_rows(spec["task"])[0]
        rows["train_rows"], rows["tuning_rows"] = tuning_split(train_rows, spec["task"], spec["tuning"]["fraction"],
                                                               spec["tuning"]["seed"])
    scratch = out.with_suffix(".trainer")  # the Trainer's output_dir; nothing in it is kept
    with devices.JobStats(device, "float32") as stats:
        result = finetune_classifier(
            info["path"], spec["task"], spec["method"], spec["rank"], spec["alpha"], spec["target_modules"],
            epochs=spec["epochs"], lr=spec["learning_rate"], batch_size=spec["batch_size"],
            max_length=spec["max_length"], warmup=spec["warmup_ratio"], weight_decay=spec["weight_decay"],
            seed=spec["seed"], init_options=opts, output_dir=str(scratch), device=device, **rows)
    runtime = stats.record(train_examples=result["train_examples"] * spec["epochs"])
    atomic_write_json(out, {**spec, **result, "runtime": runtime})
    shutil.rmtree(scratch, ignore_errors=True)
    log.info("%s %s: best %s", spec["task"], spec["method"], result["best"])
