"""One device and dtype policy: every job resolves `device` first, refuses a GPU it lacks before any
work, and records where it ran; the frozen base can be bf16 with the residual formed in fp32."""

import copy
import json
import subprocess
import sys

import pytest
import torch

from inilora import devices
from inilora.inits import apply_init, lora_layers
from inilora.train.common import cast_frozen_base

TARGETS = ["q_proj", "v_proj"]
NO_GPU = not torch.cuda.is_available()


def test_auto_is_the_cpu_here_and_evaluation_is_fp32_there():
    assert devices.resolve("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert devices.dtype("auto", "cpu") == torch.float32 and devices.dtype("auto", "cuda") == torch.bfloat16
    assert devices.dtype("float16", "cpu") == torch.float16


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_naming_the_key():
    with pytest.raises(devices.DeviceError, match=r"config key 'device': 'cuda' asked for, but this machine has no CUDA GPU"):
        devices.resolve("cuda")
    with pytest.raises(devices.DeviceError, match=r"config key 'device': 'tpu' is not one of \['auto', 'cpu', 'cuda'\]"):
        devices.resolve("tpu")


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["evaluate", "finetune", "decompose", "glue"])
def test_every_job_stops_on_cuda_before_reading_anything(tmp_path, command):
    """The manifest does not exist: the job must stop on the device, not on the missing file."""
    extra = {"evaluate": ["--out", str(tmp_path / "o.json")], "glue": ["--out", str(tmp_path / "o.json")],
             "decompose": ["--out-dir", str(tmp_path / "d")],
             "finetune": ["--adapter-dir", str(tmp_path / "a"), "--log-json", str(tmp_path / "t.json")]}[command]
    spec = {"device": "cuda", "train": {"seed": 1}}
    out = subprocess.run([sys.executable, "-m", "inilora", command, "--spec", json.dumps(spec),
                          "--manifest", str(tmp_path / "missing.json"), *extra], capture_output=True, text=True)
    assert out.returncode == 2
    assert "config key 'device': 'cuda' asked for" in out.stderr
    assert "missing.json" not in out.stderr and not list(tmp_path.iterdir())


def test_job_stats_record_device_memory_and_throughput():
    with devices.JobStats("cpu", torch.float32) as stats:
        torch.ones(1000, 1000).sum()
    rec = stats.record(generated_tokens=100, items=4)
    assert rec["device"] == "cpu" and rec["dtype"] == "float32" and rec["peak_gpu_mb"] is None
    assert rec["peak_rss_mb"] > 50 and rec["wall_seconds"] >= 0
    assert rec["generated_tokens"] == 100 and rec["generated_tokens_per_second"] > 0


@pytest.mark.parametrize("method", ["pissa", "inilora_alpha"])
def test_a_bf16_base_keeps_the_residual_formed_in_fp32_and_step0_logits_close(tiny_llama, input_ids, method):
    """The residual W - s B A is formed in fp32 and rounded once; the logit change that rounding causes
    at step 0 is bf16's (about 2^-8 relative), not the init's."""
    base = tiny_llama(input_ids).logits
    model = apply_init(copy.deepcopy(tiny_llama), method, 4, 4, TARGETS)
    fp32 = model(input_ids).logits
    cast_frozen_base(model, "bfloat16")
    layer = next(iter(lora_layers(model).values()))
    assert layer.get_base_layer().weight.dtype == torch.bfloat16
    assert layer.lora_A["default"].weight.dtype == torch.float32  # the adapter stays fp32
    bf16 = model(input_ids).logits.float()
    assert torch.allclose(fp32, base, atol=1e-4)
    change = (bf16 - base).abs().max() / base.abs().max()
    assert 0 < change < 0.03, float(change)


def test_the_decomposition_reads_only_the_target_tensors_and_sees_the_same_weights(tiny_llama_dir, tmp_path):
    """From one file or from shards (an index), the same names and values as the loaded model's."""
    from transformers import AutoModelForCausalLM

    from inilora import models
    from inilora.decompose import fingerprint

    loaded = models.target_linears(models.load_for_targets(str(tiny_llama_dir)), TARGETS)
    read = models.read_target_weights(str(tiny_llama_dir), TARGETS)
    assert fingerprint(read) == fingerprint({n: m.weight for n, m in loaded.items()})
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    sharded = models.read_target_weights(str(tmp_path), TARGETS)
    assert fingerprint(sharded) == fingerprint(read)
    assert models.read_target_weights(str(tmp_path / "nowhere"), TARGETS) is None


@pytest.mark.parametrize("base_dtype", ["float32", "bfloat16"])
def test_gradient_checkpointing_trains_the_same_adapter_and_a_bf16_base_trains(tiny_llama_dir, tmp_path, base_dtype):
    """Checkpointing recomputes activations, so the loss curve equals the plain run's; a bf16 base
    trains (its adapter stays fp32) with losses close to the fp32 run's."""
    from transformers import AutoModelForCausalLM

    from inilora.data import Example
    from inilora.models import load_tokenizer
    from inilora.train.sft import TrainSettings, finetune

    tok = load_tokenizer(str(tiny_llama_dir))
    examples = [Example(f"What is {i} + 1?", f"The answer is: {i + 1}", str(i + 1)) for i in range(4)]
    curves = {}
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = apply_init(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), "pissa", 4, 4, TARGETS)
        cast_frozen_base(model, base_dtype if checkpointing else "float32")
        settings = TrainSettings(batch_size=2, grad_accum=1, max_steps=3, max_length=64, checkpoint_steps=0,
                                 learning_rate=1e-3, gradient_checkpointing=checkpointing, base_dtype=base_dtype)
        info = finetune(model, tok, examples, settings, tmp_path / str(checkpointing), device="cpu")
        curves[checkpointing] = [p["loss"] for p in info["curve"]]
        assert info["train_tokens"] > 0
    tol = 1e-5 if base_dtype == "float32" else 0.05
    assert curves[True] == pytest.approx(curves[False], rel=tol), curves
