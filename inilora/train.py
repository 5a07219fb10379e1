"""Supervised fine-tuning of a LoRA-initialised causal LM with the transformers Trainer.

The Trainer (not a hand-written loop) so that accelerate / torchrun multi-GPU and
DeepSpeed work unchanged on a cluster. Prompt tokens are masked out of the loss
(label -100), as in the IniLoRA / MetaMath train.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from inilora.data import Example, prompt

IGNORE = -100


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


def finetune(peft_model, tok, examples: list[Example], settings: TrainSettings, work_dir: Path) -> dict:
    """Train ``peft_model`` in place; returns the loss curve and timing."""
    from transformers import Trainer, TrainingArguments

    StopOnNonFinite = _stop_on_non_finite()
    data = [encode(tok, ex, settings.max_length) for ex in examples]
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
        save_strategy="no",
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        **settings.extra,
    )
    trainer = Trainer(model=peft_model, args=args, train_dataset=data, data_collator=Collator(tok.pad_token_id),
                      callbacks=[StopOnNonFinite()])
    start = time.time()
    trainer.train()
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
    }


def write_curve(path: Path, info: dict) -> None:
    from inilora.io import atomic_write_json

    atomic_write_json(path, info)

