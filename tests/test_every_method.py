"""Every registered method through the finetune stage's real job function on a tiny Llama: what
`train.json` says about each init's cost and risk. (tests/test_workflow.py plans the embedded
default with every method, and runs each kind of init through Snakemake.)"""

import json

import pytest

from inilora.inits import REGISTRY

OPTIONS = {"hrp": {"steps": 2}, "loraga": {"batches": 2}, "loraga_peft": {"batches": 2}, "lora_one": {"batches": 2},
           "eva": {"batches": 2}, "corda": {"batches": 2}, "pissa": {"svd_niter": 2}}


@pytest.fixture(scope="module")
def manifest(tiny_llama_dir, tmp_path_factory):
    from inilora import models

    path = tmp_path_factory.mktemp("prepared") / "manifest.json"
    models.prepare("tiny", str(tiny_llama_dir), path.parent, path)
    return path


@pytest.mark.parametrize("method", list(REGISTRY))
def test_a_tiny_finetune_of_every_method_records_its_init_cost_and_risk(method, manifest, factors_file, tmp_path):
    from inilora.train import sft

    spec = {"model": "tiny", "target_modules": ["q_proj", "v_proj"], "task": "arith", "method": method, "variant": method,
            "train_data": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 6, "seed": 1}],
            "method_options": OPTIONS.get(method, {}), "rank": 4, "alpha": 8, "device": "auto",
            "train": {"learning_rate": 1e-3, "batch_size": 2, "grad_accum": 1, "max_steps": 2, "max_length": 64,
                      "checkpoint_steps": 0, "seed": 1}}
    run = tmp_path / "run"
    sft.run(spec, manifest, run / "adapter", run / "train.json", str(factors_file) if method == "inilora" else None)
    info = json.loads((run / "train.json").read_text())
    record = REGISTRY[method]
    assert info["steps"] == 2 and info["init_seconds"] > 0
    assert info["step0"]["loss"] > 0 and info["step0"]["grad_norm"] > 0 and info["step0"]["examples"] == 2
    assert info["base_changed"] is record.is_residual(spec["method_options"])
    assert info["output_changed_at_step0"] is not record.keeps_output(spec["method_options"])
    assert info["curve"][0]["grad_norm"] is not None  # the Trainer's own per-step norm, beside ours
    assert (run / "adapter" / "adapter_model.safetensors").exists() and (run / "initial_adapter").is_dir()


def test_a_residual_init_with_rslora_and_dora_trains_saves_on_the_original_base_and_merges(manifest, factors_file,
                                                                                            tmp_path):
    """The finetune job with the adapter options: the saved adapter is the rank-2r conversion with
    DoRA's magnitudes and rsLoRA's alpha, and it loads and merges on the unmodified base."""
    import torch
    from peft import PeftModel

    from inilora import models
    from inilora.train import sft

    spec = {"model": "tiny", "target_modules": ["q_proj", "v_proj"], "task": "arith", "method": "inilora",
            "variant": "inilora_dora", "train_data": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 6, "seed": 1}],
            "method_options": {"use_rslora": True, "use_dora": True}, "rank": 4, "alpha": 8, "device": "auto",
            "train": {"learning_rate": 1e-3, "batch_size": 2, "grad_accum": 1, "max_steps": 2, "max_length": 64,
                      "checkpoint_steps": 0, "seed": 1}}
    run = tmp_path / "run"
    sft.run(spec, manifest, run / "adapter", run / "train.json", str(factors_file))
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] and config["use_rslora"] and config["r"] == 8
    assert config["lora_alpha"] == pytest.approx(8 * 2 ** 0.5)  # alpha / sqrt(r) kept at rank 2r
    info = json.loads(manifest.read_text())
    base = models.load_causal_lm(info["path"], torch.float32)
    merged = PeftModel.from_pretrained(base, str(run / "adapter")).merge_and_unload()
    ids = torch.arange(3, 15)[None]
    with torch.no_grad():
        assert torch.isfinite(merged(ids).logits).all()
