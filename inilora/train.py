"""Supervised fine-tuning of a LoRA-initialised causal LM with the transformers Trainer.

The Trainer (not a hand-written loop) so that accelerate / torchrun multi-GPU and
DeepSpeed work unchanged on a cluster. Prompt tokens are masked out of the loss
(label -100), as in the IniLoRA / MetaMath train.py.

Pre-empted jobs resume: the Trainer writes ``checkpoint-N`` folders into the work dir
every ``checkpoint_steps`` optimizer steps, and a rerun continues from the newest one
that is complete and was written by the same run (same settings, data and initial
weights), ending with the same adapter as an uninterrupted run. Checkpoints are
deleted once training finishes.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import math
import re
import shutil
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from inilora.data import Example, prompt

log = logging.getLogger(__name__)

IGNORE = -100
# Written by us into a checkpoint folder after the Trainer has finished writing it: a folder
# without it was cut off mid-save; its key says which run wrote it.
RESUME_MARK = "inilora_resume.json"
# Two, so that the previous checkpoint survives until the new one carries its mark.
KEEP_CHECKPOINTS = 2


@dataclass
class TrainSettings:
    learning_rate: float = 2e-5
    batch_size: int = 16
    grad_accum: int = 4
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    max_length: int = 512
    scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    bf16: bool = False
    seed: int = 11
    logging_steps: int = 1
    checkpoint_steps: int = 200  # optimizer steps between resumable checkpoints; 0 = none
    extra: dict = field(default_factory=dict)  # passed to TrainingArguments as is


def encode(tok, ex: Example, max_length: int, suffix: str = "") -> dict:
    """input_ids = prompt + ' ' + response + eos; labels mask the prompt."""
    p = tok(prompt(ex.question, suffix))["input_ids"]
    r = tok(" " + ex.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p + r)[:max_length]
    labels = ([IGNORE] * len(p) + r)[:max_length]
    return {"input_ids": ids, "labels": labels}


class Collator:
    """Right-pads a batch; pad positions get attention 0 and label -100."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _stop_on_non_finite():
    from transformers import TrainerCallback

    class StopOnNonFinite(TrainerCallback):
        """Fail the job at the first NaN/inf loss instead of writing NaN tables."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss} at step {state.global_step}; "
                                         "lower train.learning_rate or check the init's options")

    return StopOnNonFinite


def resume_key(model: torch.nn.Module, data: list[dict], settings: TrainSettings) -> dict:
    """What identifies a run for resuming: settings (but checkpoint_steps), the encoded data in
    order, and name, shape and norm of every trainable and LoRA-wrapped base weight at the start.

    Norms rather than a hash of the bytes, so that a rerun on another GPU, whose SVD-based init
    differs in the last bits, still resumes; a different init, base model or data does not.
    """
    settings = {k: v for k, v in asdict(settings).items() if k != "checkpoint_steps"}
    digest = hashlib.sha256()
    for d in data:
        digest.update(array.array("q", [*d["input_ids"], -1, *d["labels"], -2]).tobytes())
    with torch.no_grad():
        weights = {n: [list(p.shape), p.double().norm().item()] for n, p in model.named_parameters()
                   if p.requires_grad or ".base_layer." in n}
    return {"settings": json.loads(json.dumps(settings, default=str)), "data_sha256": digest.hexdigest(),
            "weights": weights}


def _key_mismatch(saved: dict, key: dict) -> str | None:
    if saved.get("settings") != key["settings"]:
        diff = sorted(k for k in key["settings"] if saved.get("settings", {}).get(k) != key["settings"][k])
        return f"written with other train settings ({', '.join(diff)})"
    if saved.get("data_sha256") != key["data_sha256"]:
        return "written for other training data"
    old, new = saved.get("weights", {}), key["weights"]
    if {n: s for n, (s, _) in old.items()} != {n: s for n, (s, _) in new.items()}:
        return "written for other adapter layers"
    if not all(math.isclose(old[n][1], new[n][1], rel_tol=1e-4, abs_tol=1e-6) for n in new):
        return "written from other initial weights (init or base model differ)"
    return None


def checkpoint_problem(path: Path, key: dict) -> str | None:
    """Why the Trainer checkpoint folder ``path`` (``checkpoint-N``) must not be resumed, or None.

    Reads JSON, safetensors headers and zip directories only; nothing is unpickled here.
    """
    step = int(path.name.rsplit("-", 1)[1])
    try:
        mark = json.loads((path / RESUME_MARK).read_text())
    except (OSError, ValueError):
        return f"incomplete: no readable {RESUME_MARK} (cut off while saving)"
    mismatch = _key_mismatch(mark.get("key", {}), key)
    if mismatch:
        return mismatch
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "incomplete: no readable trainer_state.json"
    if state.get("global_step") != step:
        return f"trainer_state.json is at step {state.get('global_step')}, the folder name says {step}"
    weights = [path / n for n in ("adapter_model.safetensors", "model.safetensors") if (path / n).is_file()]
    if not weights:
        return "incomplete: no adapter_model.safetensors"
    from safetensors import safe_open

    try:
        with safe_open(weights[0], "pt") as f:
            f.keys()
    except Exception as e:  # safetensors raises its own error type for a truncated file
        return f"incomplete: unreadable {weights[0].name}: {e}"
    # torch.save files are zip archives; a truncated one has no central directory.
    rng = sorted(path.glob("rng_state*.pth")) or [path / "rng_state.pth"]
    for f in [path / "optimizer.pt", path / "scheduler.pt", *rng]:
        if not f.is_file() or not zipfile.is_zipfile(f):
            return f"incomplete: {f.name} missing or truncated"
    return None


def last_checkpoint(work_dir: Path, key: dict, delete_unusable: bool = True) -> Path | None:
    """The newest ``checkpoint-N`` in ``work_dir`` this run can resume from, or None.

    Unusable ones (cut off mid-save, or from a run with other settings) are logged and
    deleted, so that the Trainer never writes into a half-old folder of the same name.
    """
    found = [p for p in Path(work_dir).glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    chosen = None
    for path in sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True):
        problem = checkpoint_problem(path, key)
        if problem is None:
            chosen = chosen or path
            continue
        log.warning("not resuming from %s: %s%s", path, problem, "; deleting it" if delete_unusable else "")
        if delete_unusable:
            shutil.rmtree(path, ignore_errors=True)
    return chosen


def _checkpoint_marker(key: dict):
    from transformers import TrainerCallback

    from inilora.io import atomic_write_json

    class MarkCheckpoint(TrainerCallback):
        """Marks a checkpoint complete (after the Trainer wrote it) and skips the final save,
        since finished runs delete their checkpoints."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_save = False

        def on_save(self, args, state, control, **kwargs):
            if args.should_save:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                atomic_write_json(folder / RESUME_MARK, {"step": state.global_step, "key": key})

    return MarkCheckpoint()


def finetune(peft_model, tok, examples: list[Example], settings: TrainSettings, work_dir: Path,
             callbacks: list | None = None) -> dict:
    """Train ``peft_model`` in place, resuming from a usable checkpoint in ``work_dir``.

    Returns the loss curve (the whole run's, also when resumed), timing (``train_seconds``
    counts this process only) and ``resumed_from``: the checkpoint folder name, or None.
    ``callbacks``: extra TrainerCallbacks.
    """
    from transformers import Trainer, TrainingArguments

    StopOnNonFinite = _stop_on_non_finite()
    work_dir = Path(work_dir)
    data = [encode(tok, ex, settings.max_length) for ex in examples]
    key = resume_key(peft_model, data, settings)
    checkpoints = settings.checkpoint_steps > 0
    args = TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.scheduler,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=settings.weight_decay,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        bf16=settings.bf16,
        logging_steps=settings.logging_steps,
        # transformers 5 always writes weights as safetensors (save_safetensors is gone). The
        # optimizer, scheduler and RNG states are torch.save pickles, which the Trainer reads back
        # itself with torch.load(weights_only=True) (after check_torch_load_is_safe); our code
        # only inspects checkpoints without unpickling (checkpoint_problem).
        save_strategy="steps" if checkpoints else "no",
        save_steps=max(settings.checkpoint_steps, 1),
        save_total_limit=KEEP_CHECKPOINTS,
        report_to=[],
        # The shuffled order is a function of (data_seed, epoch) (accelerate's seedable sampler),
        # so a resumed run skips exactly the batches it already saw; the Trainer restores the
        # python/numpy/torch RNG states saved in each checkpoint (rng_state.pth).
        seed=settings.seed,
        data_seed=settings.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        **settings.extra,
    )
    resume = last_checkpoint(work_dir, key, delete_unusable=args.should_save) if work_dir.is_dir() else None
    if resume is not None:
        log.info("resuming from %s", resume)
    trainer = Trainer(model=peft_model, args=args, train_dataset=data, data_collator=Collator(tok.pad_token_id),
                      callbacks=[StopOnNonFinite(), _checkpoint_marker(key), *(callbacks or [])])
    start = time.time()
    # The Trainer loads the adapter (safetensors) into the existing "default" adapter, so the
    # base weights a residual init changed are the fresh init's, which the key checked.
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if args.should_save:
        for path in work_dir.glob("checkpoint-*"):
            shutil.rmtree(path, ignore_errors=True)
    curve = [
        {"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
        for h in trainer.state.log_history
        if "loss" in h
    ]
    return {
        "train_seconds": time.time() - start,
        "steps": trainer.state.global_step,
        "examples": len(data),
        "curve": curve,
        "final_loss": curve[-1]["loss"] if curve else None,
        "resumed_from": resume.name if resume else None,
    }


def write_curve(path: Path, info: dict) -> None:
    from inilora.io import atomic_write_json

    atomic_write_json(path, info)

