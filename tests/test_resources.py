"""Cluster resources follow the job: its model's size (from the meta skeleton) and its work."""

import pytest
import yaml

from inilora import config as cfg
from inilora.config import resources

BASE = {"methods": ["lora"], "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 10000}],
                                             "benchmarks": ["g"]}},
        "benchmarks": {"g": {"data": {"loader": "reasoning_gym", "dataset": "gsm_symbolic", "n": 1319},
                             "max_new_tokens": 1024, "batch_size": 64}},
        "decompose": {"iterations": 20000}, "train": {"epochs": 3, "max_steps": -1, "max_length": 512}}


def config(**models):
    return cfg.validate_schema(yaml.safe_load(yaml.safe_dump({**BASE, "models": {k: {"path": v} for k, v in models.items()}})))


def test_sizes_come_from_the_skeleton():
    c = config(l7="rehearsal:llama2-7b", l13="rehearsal:llama2-13b")
    params, targets = resources.sizes(c, "l7")
    assert params == pytest.approx(6.74e9, rel=0.01) and targets == 64 * 4096 * 4096
    assert resources.sizes(c, "l13")[0] == pytest.approx(13.0e9, rel=0.01)


def test_memory_and_time_scale_with_the_model_and_the_work_and_memory_with_the_attempt():
    c = config(l7="rehearsal:llama2-7b", l13="rehearsal:llama2-13b")
    # the decomposition holds only the q/v weights: 4.3 GB in fp32 for 7B, not the model's 27 GB
    assert 9000 < resources.mem_mb(c, "decompose", "l7") < 12000
    assert 30000 < resources.mem_mb(c, "finetune", "l7") < 40000 < resources.mem_mb(c, "finetune", "l13")
    assert abs(resources.mem_mb(c, "finetune", "l7", attempt=2) - 2 * resources.mem_mb(c, "finetune", "l7")) <= 1
    ft7 = resources.runtime_min(c, "finetune", "l7", task="t")
    assert 60 < ft7 < 90 and resources.runtime_min(c, "finetune", "l13", task="t") > 1.8 * (ft7 - 15)
    assert resources.runtime_min(c, "finetune", "l7", task="t-n100000") > resources.runtime_min(c, "finetune", "l7", task="t")
    assert 15 < resources.runtime_min(c, "decompose", "l7") < 25  # 84 s measured on an H100, x 2, + 15
    assert resources.runtime_min(c, "evaluate", "l7", bench="g") > 15


def test_a_model_not_readable_offline_counts_as_7b():
    c = config(hub="some-org/not-in-any-cache")
    assert resources.sizes(c, "hub")[0] == resources.FALLBACK_PARAMS


def test_a_local_folders_sizes_come_from_its_safetensors_headers_and_equal_the_skeletons(tiny_llama_dir):
    """No torch or transformers for a folder with safetensors: Snakemake evaluates the resources
    again in every cluster job. The headers give what the skeleton gives."""
    from inilora.config.precheck import model_config
    from inilora.models import skeleton
    from inilora.models import target_linears

    c = config(tiny=str(tiny_llama_dir))
    model = skeleton(model_config("resources", str(tiny_llama_dir), "models"))
    linears = target_linears(model, ["q_proj", "v_proj"]).values()
    assert resources._header_sizes(tiny_llama_dir, ("q_proj", "v_proj")) == (
        sum(p.numel() for p in model.parameters()), sum(m.weight.numel() for m in linears))
    assert resources.sizes(c, "tiny")[1] > 0


def test_a_test_only_first_attempt_memory_replaces_attempt_one_of_the_rules_it_names():
    c = config(l7="rehearsal:llama2-7b")
    small = {**c, "test_first_attempt_mem_mb": {"finetune": 300}}
    assert resources.mem_mb(small, "finetune", "l7") == 300
    assert resources.mem_mb(small, "finetune", "l7", attempt=2) == resources.mem_mb(c, "finetune", "l7", attempt=2)
    assert resources.mem_mb(small, "evaluate", "l7") == resources.mem_mb(c, "evaluate", "l7")
    with pytest.raises(cfg.ConfigError, match="test_first_attempt_mem_mb"):
        cfg.validate_schema({**BASE, "models": {"l7": {"path": "x"}}, "test_first_attempt_mem_mb": {"tables": 1}})


def test_the_local_gpu_cap_is_lifted_only_where_no_job_can_have_a_gpu(monkeypatch):
    """profiles/default's one-GPU cap stays where a job may take this machine's GPU; elsewhere it
    would queue CPU jobs one behind the other, and the cores decide."""
    assert resources.local_gpu_cap({"device": "auto"}, 2, gpu_here=True) is None
    assert resources.local_gpu_cap({"device": "cuda"}, 2, gpu_here=True) is None
    assert resources.local_gpu_cap({"device": "cpu"}, 8, gpu_here=True) == 8
    assert resources.local_gpu_cap({"device": "auto"}, 2, gpu_here=False) == 2
    assert resources.local_gpu_cap({"device": "cuda"}, 2, gpu_here=False) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not resources.gpu_visible()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert not resources.gpu_visible()
