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

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from inilora import devices, models
from inilora.data import Example, load_examples
from inilora.data.encode import IGNORE, Collator, encode, scored_mask
from inilora.inits import apply_init, is_residual, keeps_output, save_initial_adapter
from inilora.io import Preempted, atomic_write_dir, atomic_write_json, file_sha256, writer_lock
from inilora.train.common import (PROBE_EXAMPLES, RanksAgree, StopOnNonFinite, cast_frozen_base, init_digest,
                                  step0_probe, training_arguments, with_init_data)
from inilora.train.resume import KEEP_CHECKPOINTS, checkpoint_marker, checkpoint_on_term, last_checkpoint, resume_key

log = logging.getLogger(__name__)


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
    base_dtype: str = "float32"  # the frozen base during training; bfloat16 halves it (the init stays fp32)
    gradient_checkpointing: bool = False
    report_to: list = field(default_factory=list)  # experiment trackers (the Trainer's report_to)
    seed: int = 11
    logging_steps: int = 1
    checkpoint_steps: int = 200  # optimizer steps between resumable checkpoints; 0 = none
    extra: dict = field(default_factory=dict)  # passed to TrainingArguments as is


def settings_from_spec(train: dict, **overrides) -> TrainSettings:
    """TrainSettings from a job spec's ``train`` block: the job's own keys (threads, GPUs) left out,
    a DeepSpeed config passed to the Trainer; ``overrides`` replace keys."""
    own = {k: v for k, v in train.items() if k not in ("threads", "gpus", "deepspeed")}
    extra = {"deepspeed": train["deepspeed"]} if train.get("deepspeed") else {}
    return TrainSettings(**{**own, **overrides}, extra=extra)


def finetune(peft_model, tok, examples: list[Example], settings: TrainSettings, work_dir: Path,
             callbacks: list | None = None, device: str | None = None, scored_head: bool = True) -> dict:
    """Train ``peft_model`` in place, resuming from a usable checkpoint in ``work_dir``.

    Returns the loss curve (the whole run's, also when resumed), timing (``train_seconds``
    counts this process only) and ``resumed_from``: the checkpoint folder name, or None.
    ``callbacks``: extra TrainerCallbacks. ``scored_head``: the LM head only where an answer token is
    predicted (:func:`scored_logits_loss`), where the model allows it; False: the model's own loss.
    """
    from transformers import Trainer

    work_dir = Path(work_dir)
    data = [encode(tok, ex, settings.max_length) for ex in examples]
    key = resume_key(peft_model, data, settings)
    checkpoints = settings.checkpoint_steps > 0
    if "tensorboard" in settings.report_to:  # the event files beside the run's train.json
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(work_dir.parent / "tensorboard")
    args = training_arguments(
        str(work_dir), batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        scheduler=settings.scheduler, warmup=settings.warmup_ratio, weight_decay=settings.weight_decay,
        epochs=settings.epochs, seed=settings.seed, device=device,
        gradient_accumulation_steps=settings.grad_accum,
        gradient_checkpointing=settings.gradient_checkpointing,
        # non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen)
        gradient_checkpointing_kwargs={"use_reentrant": False} if settings.gradient_checkpointing else None,
        include_num_input_tokens_seen="non_padding",
        max_steps=settings.max_steps,
        bf16=settings.bf16,
        logging_steps=settings.logging_steps,
        # transformers 5 always writes weights as safetensors (save_safetensors is gone). The
        # optimizer, scheduler and RNG states are torch.save pickles, which the Trainer reads back
        # itself with torch.load(weights_only=True) (after check_torch_load_is_safe); our code
        # only inspects checkpoints without unpickling (resume.checkpoint_problem). The Trainer
        # restores the python/numpy/torch RNG states saved in each checkpoint (rng_state.pth).
        save_strategy="steps" if checkpoints else "no",
        save_steps=max(settings.checkpoint_steps, 1),
        save_total_limit=KEEP_CHECKPOINTS,
        remove_unused_columns=False,
        report_to=list(settings.report_to),
        **settings.extra,
    )
    resume = last_checkpoint(work_dir, key, delete_unusable=args.should_save) if work_dir.is_dir() else None
    if resume is not None:
        log.info("resuming from %s", resume)
    on_term = checkpoint_on_term(work_dir)
    # checkpoint_marker before on_term: its "no save at the last step" must not undo on_term's save
    loss = scored_logits_loss(peft_model) if scored_head else None
    trainer = Trainer(model=peft_model, args=args, train_dataset=data,
                      data_collator=Collator(tok.pad_token_id, logits_to_keep=loss is not None), compute_loss_func=loss,
                      callbacks=[StopOnNonFinite(), checkpoint_marker(key), *(callbacks or []),
                                 *([on_term] if checkpoints else [])])
    start = time.time()
    # The Trainer loads the adapter (safetensors) into the existing "default" adapter, so the
    # base weights a residual init changed are the fresh init's, which the key checked.
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if on_term.stopped is not None:
        raise Preempted(f"stopped by SIGTERM at step {on_term.stopped} of {trainer.state.max_steps}; "
                        f"checkpoint-{on_term.stopped} in {work_dir} resumes it")
    if args.should_save:
        for path in work_dir.glob("checkpoint-*"):
            shutil.rmtree(path, ignore_errors=True)
    curve = [
        {"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate"), "grad_norm": h.get("grad_norm")}
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
        "train_tokens": int(trainer.state.num_input_tokens_seen or 0),
    }


def scored_logits_loss(peft_model):
    """The Trainer's loss for a causal LM whose LM head runs only at the positions that predict a
    scored (answer) token, or None where the model cannot (no ``logits_to_keep``, or a loss other
    than transformers' ``ForCausalLMLoss``) and the model's own loss over every position is used.

    The model's own loss applies SmolLM2's 49k-word head, and a log-softmax, to every prompt
    position, whose tokens are masked out of the loss. Here each batch says which positions predict
    an answer token (:class:`Collator` with ``logits_to_keep``, :func:`scored_mask`), the model
    applies its head at those only, and the same ``ForCausalLMLoss`` sums the same tokens' losses
    over the Trainer's ``num_items_in_batch``. The gradients are the same, and on SmolLM2 so is the
    adapter, bit for bit (docs/speed.md); a logged loss can differ in its last bit, summed in
    another grouping."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    if not models.takes_logits_to_keep(base) or base.loss_function is not ForCausalLMLoss:
        return None
    vocab_size = base.config.get_text_config(decoder=True).vocab_size

    def loss(outputs, labels, num_items_in_batch=None):
        keep = scored_mask(labels)
        logits = outputs.logits
        if logits.dim() != 2 or logits.shape[0] != int(keep.sum()):
            raise RuntimeError(f"{type(base).__name__} returned logits of shape {tuple(logits.shape)} for "
                               f"logits_to_keep marking {int(keep.sum())} positions; this model does not take a "
                               "boolean logits_to_keep (transformers' slice_logits_to_keep)")
        shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]
        return ForCausalLMLoss(logits, None, vocab_size, num_items_in_batch=num_items_in_batch,
                               shift_labels=shifted[keep])

    return loss


def write_curve(path: Path, info: dict) -> None:
    atomic_write_json(path, info)


def run(spec: dict, manifest: Path, adapter_dir: Path, log_json: Path, factors: str | None = None) -> None:
    """The workflow's finetune stage (``run_unlocked``) under the run folder's writer lock, which rank 0 takes
    before anything is read: a second writer of the same run (an orphan of a killed job still
    training, a rerun beside it) stops at once, naming the holder's pid and host."""
    device = devices.resolve(spec.get("device", "auto"))  # a missing GPU stops the job before the lock
    if int(os.environ.get("RANK", "0")) != 0:
        return run_unlocked(spec, manifest, adapter_dir, log_json, factors, device)
    with writer_lock(Path(adapter_dir).parent, "finetune"):
        run_unlocked(spec, manifest, adapter_dir, log_json, factors, device)


def run_unlocked(spec: dict, manifest: Path, adapter_dir: Path, log_json: Path, factors: str | None = None,
                 device: str = "cpu") -> None:
    """The finetune stage's work on ``device`` (resolved by ``run``): 1) load the fp32 base onto it,
    2) initialise by method name there (SVDs, gradients and preheating run on the GPU when there is
    one), 3) round the frozen base to ``train.base_dtype``, 4) train, 5) on rank 0 only, write the step-0 adapter, the
    portable adapter and ``train.json`` with the run's device, dtype, memory and throughput.

    Under torchrun (``train.gpus`` > 1) every rank runs the init itself, on its own GPU, from the same
    seed, data and weights, so all ranks start from the same factors; before the first step the ranks
    compare digests of their factors and stop if any differ (``RanksAgree``); only rank 0 writes.
    """
    here = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if device == "cuda" else "cpu"
    torch.manual_seed(spec["train"]["seed"])
    info = models.read_manifest(manifest)
    tok = models.load_tokenizer(info["path"])
    # fp32 weights always, as the paper's train.py loads them: `train.bf16` is the Trainer's mixed
    # precision (bf16 autocast over fp32 weights). A bf16 load would round W before the residual
    # W - scaling*BA is formed, and factors decomposed from the fp32 weights would no longer match;
    # `train.base_dtype: bfloat16` rounds the frozen base only after the init.
    model = models.load_causal_lm(info["path"], torch.float32).to(here)
    opts = dict(spec["method_options"])
    if factors:
        opts["factors_path"] = factors
    examples = [ex for d in spec["train_data"] for ex in load_examples(d)]
    max_length = spec["train"]["max_length"]
    opts = with_init_data(spec["method"], opts, lambda: [encode(tok, ex, max_length) for ex in examples],
                          Collator(tok.pad_token_id))
    with devices.JobStats(device, torch.float32) as init_stats:
        peft_model = apply_init(model, spec["method"], spec["rank"], spec["alpha"], spec["target_modules"], **opts)
    init_seconds = init_stats.seconds
    agree = RanksAgree(init_digest(peft_model))
    run_dir = adapter_dir.parent
    initial = run_dir / "initial_adapter"
    residual = is_residual(spec["method"], spec["method_options"])
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        save_initial_adapter(peft_model, initial)  # the step-0 factors: Figure 4, and the residual conversion
    settings = settings_from_spec(spec["train"])
    cast_frozen_base(peft_model, settings.base_dtype)
    collate = Collator(tok.pad_token_id)
    step0 = step0_probe(peft_model, collate([encode(tok, ex, max_length) for ex in examples[:PROBE_EXAMPLES]]))
    log.info("%s at step 0: loss %.4f, gradient norm %.4g (first %d examples); init %.1f s", spec["method"],
             step0["loss"], step0["grad_norm"], step0["examples"], init_seconds)
    with devices.JobStats(device, settings.base_dtype) as stats:
        result = finetune(peft_model, tok, examples, settings, run_dir / "trainer", callbacks=[agree], device=device)
    _leave_process_group()
    if not main:
        return
    result["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    result["runtime"] = {**stats.record(train_tokens=result["train_tokens"], steps=result["steps"]),
                         "init": init_stats.record(), "base_dtype": settings.base_dtype,
                         "gradient_checkpointing": settings.gradient_checkpointing,
                         "init_on_each_rank": result["world_size"] > 1}
    result["init_sha256_per_rank"] = agree.digests  # one per rank under torchrun, checked equal before step 1
    # Residual inits changed the base weights; PEFT's rank-2r conversion gives an adapter that
    # loads on the original, unmodified base model (docs/init-methods.md sec. 2.3).
    kwargs = {"path_initial_model_for_weight_conversion": str(initial)} if residual else {}
    atomic_write_dir(adapter_dir, lambda tmp: peft_model.save_pretrained(str(tmp), **kwargs))
    adapter_hash = file_sha256(adapter_dir / models.ADAPTER_FILE)  # evaluate and merge check it before use
    write_curve(log_json, {**spec, "init_seconds": init_seconds, "step0": step0, "base_changed": residual,
                           "output_changed_at_step0": not keeps_output(spec["method"], spec["method_options"]),
                           **result, "converted_from_residual": residual, "adapter_sha256": adapter_hash})


def _leave_process_group() -> None:
    """Under torchrun, let every rank finish training, then close the process group on each, so no
    rank exits with collectives (gloo threads) still alive, which aborts it at exit."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
