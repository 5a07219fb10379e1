"""What every Trainer run here shares: its base arguments, the non-finite stop, the init's batches."""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from transformers import TrainerCallback, TrainingArguments

from inilora import inits


class StopOnNonFinite(TrainerCallback):
    """Fail the job at the first NaN/inf loss instead of writing NaN tables."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {state.global_step}; "
                                     "lower train.learning_rate or check the init's options")


def training_arguments(output_dir: str, *, batch_size: int, learning_rate: float, scheduler: str, warmup: float,
                       weight_decay: float, epochs: float, seed: int, device: str | None = None,
                       **overrides) -> TrainingArguments:
    """TrainingArguments with the settings every run here shares; ``overrides`` add or replace keys.

    No experiment tracker, the data order fixed by ``seed`` (accelerate's seedable sampler, so a
    resumed run skips exactly the batches it saw), no loader workers, the job's ``device`` (resolved
    by inilora.devices; None: the GPU when one is seen).
    """
    base = dict(
        output_dir=output_dir,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type=scheduler,
        warmup_steps=warmup,  # a float below 1 is a ratio of the total steps
        weight_decay=weight_decay,
        num_train_epochs=epochs,
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        use_cpu=device == "cpu" if device else not torch.cuda.is_available(),
    )
    return TrainingArguments(**{**base, **overrides})


def init_batches(encoded: list[dict], collate: Callable[[list[dict]], dict], size: int) -> Iterator[dict]:
    """The training set in order, ``size`` examples a batch: what a data-driven init reads."""
    return (collate(encoded[i : i + size]) for i in range(0, len(encoded), size))


def with_init_data(method: str, options: dict, encoded: Callable[[], list[dict]], collate) -> dict:
    """``options`` plus ``data`` (training batches of ``batch_size``, default 2) for a method whose
    record needs data, unless the caller gave its own; ``encoded()`` gives the tokenised training set."""
    options = dict(options)
    if "data" in inits.get(method).needs and "data" not in options:
        options["data"] = init_batches(encoded(), collate, int(options.pop("batch_size", 2)))
    return options


def cast_frozen_base(peft_model, base_dtype: str) -> None:
    """Round every frozen weight to ``base_dtype`` (bfloat16 halves them); trainable ones (the adapter,
    a classifier head) stay float32. Called after the init, so a residual W - s B A is formed in fp32."""
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[base_dtype]
    if dt == torch.float32:
        return
    for p in peft_model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(dt)


PROBE_EXAMPLES = 2  # the first training examples the step-0 probe reads (as a data init's default batch)


def step0_probe(peft_model, batch: dict) -> dict:
    """Loss and gradient L2 norm over the trainable parameters for ``batch``, at the init, before any
    step: a very high start (PiSSA#38 on some models) shows here for every method alike."""
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    device = trainable[0].device
    was_training = peft_model.training
    peft_model.train()
    try:
        loss = peft_model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        norm = math.sqrt(sum(float(p.grad.float().pow(2).sum()) for p in trainable if p.grad is not None))
    finally:
        for p in trainable:
            p.grad = None
        peft_model.train(was_training)
    return {"loss": float(loss), "grad_norm": norm, "examples": int(batch["input_ids"].shape[0])}


def init_digest(peft_model) -> str:
    """sha256 of every LoRA factor at the init (shapes, dtypes and bytes, in name order)."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(peft_model.named_parameters()):
        if "lora_" in name:
            t = p.detach().float().cpu().contiguous()
            h.update(f"{name}:{tuple(t.shape)};".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


class RanksAgree(TrainerCallback):
    """Under torchrun every rank runs the init itself; before the first step, compare the ranks' digests
    of their step-0 factors (taken before DDP's broadcast could hide a difference) and stop if any differ."""

    def __init__(self, digest: str):
        self.digest, self.digests = digest, [digest]

    def on_train_begin(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.digest)
        self.digests = gathered
        if len(set(gathered)) > 1:
            raise RuntimeError(f"the ranks' init factors differ (sha256 per rank: {gathered}); every rank must "
                               "start from the same seed, data and weights")
