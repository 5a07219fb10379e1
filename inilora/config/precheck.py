"""Checks of the config against the models' layer shapes, run before any job starts.

A LoRA of rank r on an ``out x in`` weight needs r <= min(out, in) (the SVD-based inits take
r singular vectors), and every name in ``target_modules`` has to be an nn.Linear of the model.
Both would otherwise fail only inside a fine-tune job, after the decomposition ran.

The shapes come from a skeleton built on the ``meta`` device from the model's config, so no
weights are read and a 7B model is checked in well under a second.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from inilora.config.schema import ConfigError
from inilora.config.specs import glue_models
from inilora.models import BUILTIN, ModelError, builtin_file, default_targets, looks_local, rehearsal_config, skeleton

# torch is imported inside the functions: the Snakefile imports check_models while it parses the
# workflow (in every cluster job too), which must not import torch.
if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

# Architecture of the GGUF builtins, so they are checked before the GGUF is converted: the values
# of SmolLM2-135M-Instruct's config.json (HuggingFaceTB/SmolLM2-135M-Instruct), which the
# converted folder repeats. Shapes: q/o 576 x 576, k/v 192 x 576, gate/up 1536 x 576, down 576 x 1536.
# Builtins that ship a plain HF folder are read from it instead.
BUILTIN_ARCH = {
    "smollm2-135m": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
                     "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": True},
}


def linear_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(out, in) of every nn.Linear by the last component of its name; the narrowest where names repeat."""
    from torch import nn

    shapes: dict[str, tuple[int, int]] = {}
    for full, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            name, shape = full.rsplit(".", 1)[-1], (mod.out_features, mod.in_features)
            if name not in shapes or min(shape) < min(shapes[name]):
                shapes[name] = shape
    return shapes


def check_model_skeleton(name: str, model: nn.Module, target_modules: list[str],
                         ranks: list[int] | dict[str, list[int]], section: str = "models") -> None:
    """Raise ConfigError unless every target is an nn.Linear of ``model`` and every rank fits it.

    ``ranks``: the ranks by the config key they come from ({"ranks": [8, 16], "lr_sweep.rank": [32]});
    a plain list is read as key 'ranks'. ``model`` may live on the meta device.
    """
    shapes = linear_shapes(model)
    missing = [t for t in target_modules if t not in shapes]
    if missing:
        raise ConfigError(f"config key '{section}.{name}.target_modules': {missing} match no nn.Linear in "
                          f"{type(model).__name__}; linear layer names there: {sorted(shapes)}")
    target = min(target_modules, key=lambda t: min(shapes[t]))
    out_f, in_f = shapes[target]
    limit = min(out_f, in_f)
    for key, values in ({"ranks": ranks} if isinstance(ranks, list) else ranks).items():
        too_big = [r for r in values if r > limit]
        if too_big:
            raise ConfigError(f"config key '{key}': rank {max(too_big)} is above min(out, in) = {limit} of "
                              f"{section}.{name} target '{target}' ({out_f} x {in_f}); allowed: 1..{limit}")


def model_config(name: str, path: str, section: str = "models"):
    """The transformers config of config entry ``name``, or None when it cannot be read offline
    (a hub id not in the local cache, a folder or builtin package that is not there yet: the
    prepare_model job reports those)."""
    from transformers import AutoConfig

    if path.startswith("rehearsal:"):
        try:
            return rehearsal_config(path)
        except ModelError as e:
            raise ConfigError(f"config key '{section}.{name}.path': {e}") from None
    if path.startswith("builtin:"):
        key = path.split(":", 1)[1]
        if key not in BUILTIN:
            raise ConfigError(f"config key '{section}.{name}.path': unknown builtin '{key}'; known: "
                              f"{sorted(f'builtin:{k}' for k in BUILTIN)}")
        if key in BUILTIN_ARCH:
            arch = dict(BUILTIN_ARCH[key])
            return AutoConfig.for_model(arch.pop("model_type"), **arch)
        try:
            path = str(builtin_file(key))  # a builtin that ships a plain HF folder
        except ModelError as e:
            log.debug("models.%s: %s; skipped", name, e)
            return None
    if looks_local(path):
        folder = Path(path).expanduser()
        if not folder.exists():
            raise ConfigError(f"config key '{section}.{name}.path': local folder '{path}' does not exist; "
                              "give a model folder, a hub id or builtin:<name>")
        if not (folder / "config.json").is_file():
            log.debug("models.%s: no config.json in '%s'; skipped", name, path)
            return None
        try:
            return AutoConfig.from_pretrained(folder)
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"config key '{section}.{name}.path': cannot read '{folder / 'config.json'}': {e}") from None
    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:  # not cached, gated, remote code, ...: the job checks it when it downloads
        log.debug("models.%s: hub id '%s' is not inspectable offline (%s); skipped", name, path, e)
        return None


def check_models(config: dict, only: dict[str, list[int]] | None = None) -> None:
    """Check every model of ``config['models']`` against ``ranks`` (and ``lr_sweep.rank``); raises ConfigError.

    ``only``: check just these ranks of the causal LMs, by config key (a table or figure checks its
    own ranks when it is asked for, not on every run)."""
    ranks = {"ranks": list(config.get("ranks", []))}
    sweep_rank = (config.get("lr_sweep") or {}).get("rank")
    if sweep_rank is not None:
        ranks["lr_sweep.rank"] = [sweep_rank]
    if only is not None:
        ranks = only
    for name, spec in config["models"].items():
        cfg = model_config(name, spec["path"])
        if cfg is not None:
            model = skeleton(cfg)
            check_model_skeleton(name, model, spec.get("target_modules") or default_targets(model), ranks)
    glue = config.get("glue") or {}
    for name in glue_models(config) if only is None and glue.get("tasks") else []:
        if name not in (config.get("encoders") or {}):
            continue  # config.check names it
        spec = config["encoders"][name]
        cfg = model_config(name, spec["path"], "encoders")
        if cfg is not None:
            model = skeleton(cfg)
            check_model_skeleton(name, model, spec.get("target_modules") or default_targets(model),
                                 {"glue.ranks" if glue.get("ranks") else "ranks": glue.get("ranks") or ranks["ranks"]},
                                 "encoders")
