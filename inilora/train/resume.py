"""Resuming a pre-empted fine-tune from its newest complete checkpoint of the same run.

The Trainer writes ``checkpoint-N`` folders every ``checkpoint_steps`` optimizer steps; we mark
each one complete once written, with a key of the run (settings, data and initial weights).
A rerun continues only from a marked checkpoint with the same key and ends with the same adapter
as an uninterrupted run. Nothing here unpickles: checkpoints are inspected by JSON, safetensors
headers and zip directories only.

A scheduler pre-empts or cancels a job with SIGTERM, then SIGKILL after a grace period (SLURM's
KillWait or GraceTime). A single-process fine-tune answers SIGTERM by finishing the step it is in,
writing a marked checkpoint there and exiting with ``Preempted``, so the rerun loses no step.
"""

from __future__ import annotations

import array
import hashlib
import json
import logging
import math
import re
import shutil
import signal
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from inilora.io import atomic_write_json

log = logging.getLogger(__name__)

# Written by us into a checkpoint folder after the Trainer has finished writing it: a folder
# without it was cut off mid-save; its key says which run wrote it.
RESUME_MARK = "inilora_resume.json"
# Two, so that the previous checkpoint survives until the new one carries its mark.
KEEP_CHECKPOINTS = 2


def resume_key(model: torch.nn.Module, data: list[dict], settings) -> dict:
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


def checkpoint_marker(key: dict):
    from transformers import TrainerCallback

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


def checkpoint_on_term(work_dir: Path):
    """A TrainerCallback that, once SIGTERM arrives, saves a checkpoint at the end of the current step
    and stops training; ``stopped`` then names that step. Installed only in a single-process run:
    under torchrun the ranks would see the signal at different steps and wait on each other's
    collectives, so they keep Python's default (die at once) and resume from the last periodic
    checkpoint."""
    from transformers import TrainerCallback

    class CheckpointOnTerm(TrainerCallback):
        def __init__(self):
            self.signalled, self.stopped, self._previous = False, None, None

        def _on_term(self, signum, frame):
            self.signalled = True
            log.warning("SIGTERM: checkpointing the current step in %s, then stopping", work_dir)

        def on_train_begin(self, args, state, control, **kwargs):
            if args.world_size == 1:
                self._previous = signal.signal(signal.SIGTERM, self._on_term)

        def on_step_end(self, args, state, control, **kwargs):
            if self.signalled and state.global_step < state.max_steps:  # at the last step, just finish
                control.should_save = control.should_training_stop = True
                self.stopped = state.global_step

        def on_train_end(self, args, state, control, **kwargs):
            if self._previous is not None:
                signal.signal(signal.SIGTERM, self._previous)
                self._previous = None

    return CheckpointOnTerm()
