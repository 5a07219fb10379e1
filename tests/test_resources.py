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
