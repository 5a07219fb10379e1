"""A fine-tune cut off after a checkpoint resumes and ends with the uninterrupted run's adapter."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from inilora.data import Example
from inilora.train.resume import RESUME_MARK, checkpoint_problem, resume_key
from inilora.data.encode import encode
from inilora.train.sft import TrainSettings, finetune

# 10 examples, batch 1 x 2 accumulation: 5 optimizer steps an epoch, so checkpoint-4 sits
# mid-epoch (the Trainer skips seen batches) and step 6 starts a reshuffled second epoch.
# The tiny tokenizer spends ~40 tokens on the prompt template, so max_length 64 keeps the responses.
EXAMPLES = [Example(f"What is {i} + {i + 3}?", f"The answer is: {2 * i + 3}", str(2 * i + 3)) for i in range(10)]
SETTINGS = TrainSettings(learning_rate=1e-2, batch_size=1, grad_accum=2, max_steps=6, max_length=64,
                         warmup_ratio=0.0, seed=5, checkpoint_steps=2)


def lora_run(model_dir):
    """(peft_model, tok): the tiny Llama with a rank-4 LoRA on q/v, the same weights on every call.

    Attention dropout is switched on so that the result depends on the restored RNG state.
    """
    from inilora.inits import apply_init
    from inilora.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(str(model_dir))
    for m in model.modules():
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = 0.1
    torch.manual_seed(0)
    return apply_init(model, "lora", 4, 4, ["q_proj", "v_proj"]), load_tokenizer(str(model_dir))


def lora_weights(peft_model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}


class Crash(Exception):
    pass


def crash_after(step: int):
    from transformers import TrainerCallback

    class CrashAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Crash(f"simulated pre-emption after step {step}")

    return CrashAfter()


@pytest.fixture(scope="module")
def reference(tiny_llama_dir, tmp_path_factory):
    """The uninterrupted run: final LoRA weights and loss curve."""
    model, tok = lora_run(tiny_llama_dir)
    start = lora_weights(model)
    work = tmp_path_factory.mktemp("reference")
    info = finetune(model, tok, EXAMPLES, SETTINGS, work)
    assert info["resumed_from"] is None and info["steps"] == 6
    assert not list(work.glob("checkpoint-*")), "a finished run deletes its checkpoints"
    final = lora_weights(model)
    assert all((final[n] - start[n]).abs().max() > 1e-3 for n in final if "lora_A" in n), "training moved nothing"
    return final, info["curve"]


@pytest.fixture(scope="module")
def interrupted(tiny_llama_dir, tmp_path_factory):
    """A work dir as a run pre-empted during step 5 leaves it: checkpoint-2 and checkpoint-4."""
    model, tok = lora_run(tiny_llama_dir)
    work = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(Crash):
        finetune(model, tok, EXAMPLES, SETTINGS, work, callbacks=[crash_after(5)])
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    return work


def resume(model_dir, work) -> tuple[dict, dict]:
    model, tok = lora_run(model_dir)
    info = finetune(model, tok, EXAMPLES, SETTINGS, work)
    return info, lora_weights(model)


def assert_same_run(weights, curve, reference):
    ref_weights, ref_curve = reference
    assert weights.keys() == ref_weights.keys()
    for n in ref_weights:
        torch.testing.assert_close(weights[n], ref_weights[n], atol=1e-6, rtol=0, msg=n)
    assert [c["step"] for c in curve] == [c["step"] for c in ref_curve] == [1, 2, 3, 4, 5, 6]
    assert [c["loss"] for c in curve] == pytest.approx([c["loss"] for c in ref_curve], abs=1e-6)


def test_an_interrupted_finetune_resumes_from_its_last_checkpoint_to_the_same_adapter(
        tiny_llama_dir, interrupted, reference, tmp_path, caplog):
    work = shutil.copytree(interrupted, tmp_path / "trainer")
    with caplog.at_level("INFO", logger="inilora.train"):
        info, weights = resume(tiny_llama_dir, work)
    assert info["resumed_from"] == "checkpoint-4"
    assert "resuming from" in caplog.text and "checkpoint-4" in caplog.text
    assert info["steps"] == 6
    assert_same_run(weights, info["curve"], reference)
    assert not list(work.glob("checkpoint-*"))


def _drop(path: Path) -> None:
    path.unlink()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, file", [
    (_drop, RESUME_MARK),  # killed after the Trainer's save, before our mark
    (_drop, "trainer_state.json"),
    (_truncate, "adapter_model.safetensors"),
    (_truncate, "optimizer.pt"),
])
def test_an_incomplete_checkpoint_is_skipped_and_the_one_before_it_resumed(
        tiny_llama_dir, interrupted, reference, tmp_path, caplog, damage, file):
    work = shutil.copytree(interrupted, tmp_path / "trainer")
    damage(work / "checkpoint-4" / file)
    with caplog.at_level("WARNING", logger="inilora.train"):
        info, weights = resume(tiny_llama_dir, work)
    assert info["resumed_from"] == "checkpoint-2"
    assert "not resuming from" in caplog.text and "checkpoint-4: incomplete" in caplog.text
    assert_same_run(weights, info["curve"], reference)


def test_a_checkpoint_of_another_run_is_not_resumed(tiny_llama_dir, interrupted):
    model, tok = lora_run(tiny_llama_dir)
    data = [encode(tok, ex, SETTINGS.max_length) for ex in EXAMPLES]
    ckpt = interrupted / "checkpoint-4"
    assert checkpoint_problem(ckpt, resume_key(model, data, SETTINGS)) is None
    # checkpoint frequency is not part of what a run computes
    assert checkpoint_problem(ckpt, resume_key(model, data, replace(SETTINGS, checkpoint_steps=3))) is None
    other_lr = resume_key(model, data, replace(SETTINGS, learning_rate=2e-2))
    assert checkpoint_problem(ckpt, other_lr) == "written with other train settings (learning_rate)"
    assert checkpoint_problem(ckpt, resume_key(model, data[::-1], SETTINGS)) == "written for other training data"
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_A" in n).mul_(1.01)
    assert "other initial weights" in checkpoint_problem(ckpt, resume_key(model, data, SETTINGS))


KILLED_RUN = textwrap.dedent("""
    import sys, time
    import torch
    from transformers import TrainerCallback
    sys.path.insert(0, sys.argv[1])
    from test_resume import EXAMPLES, SETTINGS, lora_run
    from inilora.train.sft import finetune

    torch.set_num_threads(2)  # as conftest.py, so float reductions match the in-process runs

    class Slow(TrainerCallback):  # leaves the parent time to kill mid-run
        def on_step_end(self, args, state, control, **kwargs):
            time.sleep(0.3)

    model, tok = lora_run(sys.argv[2])
    finetune(model, tok, EXAMPLES, SETTINGS, sys.argv[3], callbacks=[Slow()])
    print("finished")
""")


def test_a_sigkilled_finetune_resumes_to_the_same_adapter(tiny_llama_dir, reference, tmp_path):
    work = tmp_path / "trainer"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    proc = subprocess.Popen([sys.executable, str(script), str(Path(__file__).parent), str(tiny_llama_dir), str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.time() + 60
    while not (work / "checkpoint-2" / RESUME_MARK).exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within 60 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    info, weights = resume(tiny_llama_dir, work)
    assert info["resumed_from"] in ("checkpoint-2", "checkpoint-4")
    assert_same_run(weights, info["curve"], reference)


def test_a_sigtermed_finetune_checkpoints_the_step_it_reached_and_resumes_to_the_same_adapter(
        tiny_llama_dir, reference, tmp_path):
    """SIGTERM (a scheduler's pre-emption, SIGKILL following after its grace) stops the run at the
    end of the current step with a marked checkpoint there, off the checkpoint_steps grid."""
    work = tmp_path / "trainer"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN.replace("finetune(model", "try:\n    finetune(model").replace(
        "\nprint(\"finished\")", "\nexcept Preempted as e:\n    print(e); sys.exit(143)\nprint(\"finished\")").replace(
        "from inilora.train.sft import finetune", "from inilora.train.sft import finetune\nfrom inilora.io import Preempted"))
    proc = subprocess.Popen([sys.executable, str(script), str(Path(__file__).parent), str(tiny_llama_dir), str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy(), text=True)
    deadline = time.time() + 60
    while not (work / "checkpoint-2" / RESUME_MARK).exists():
        assert proc.poll() is None, proc.stdout.read()[-2000:]
        assert time.time() < deadline, "no checkpoint within 60 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, out[-2000:]
    (stopped,) = [p.name for p in work.glob("checkpoint-*") if p.name != "checkpoint-2" and (p / RESUME_MARK).exists()]
    assert stopped in ("checkpoint-3", "checkpoint-5"), stopped  # the step it was in, not the next on the grid
    assert f"stopped by SIGTERM at step {stopped.split('-')[1]} of 6" in out
    info, weights = resume(tiny_llama_dir, work)
    assert info["resumed_from"] == stopped
    assert_same_run(weights, info["curve"], reference)
