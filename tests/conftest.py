"""Shared fixtures: a tiny random Llama with a real (tiny) tokenizer, saved to a folder."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:\n### Response: The answer is: 0 1 2 3 4 5 6 7 8 9 + - = Let's think step by step.",
    "State the final answer to the following arithmetic problem: 12 + 7 = 19",
    "How many apples does John have? #### 42",
]


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")


def make_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(cfg)
    # random init is tiny (std 0.02); give the q/v weights some spread so SVD-based inits matter
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "v_proj.weight")):
                p.normal_(0, 0.2)
    return model.eval()


def save_tiny_llama(path):
    """A tiny random Llama and its tokenizer in ``path``, loadable with from_pretrained."""
    tok = make_tokenizer()
    make_llama(len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_llama(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()


@pytest.fixture
def input_ids():
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, 300, (2, 12), generator=g)


def sandbox_processes_left(result) -> list[int]:
    """Live processes a sandboxed run may have left: any of uid ``nobody`` (we are root, so the
    program ran as nobody and nothing else here does), else the members of its session."""
    from inilora.sandbox.harness import _session_members, _stats

    if os.geteuid() != 0:
        return _session_members(result.pid)
    left = []
    for pid, fields in _stats():
        try:
            with open(f"/proc/{pid}/status") as fh:
                uid = next(line.split()[1] for line in fh if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if uid == "65534" and fields[0] != "Z":
            left.append(pid)
    return left


@pytest.fixture
def factors_file(tiny_llama, tmp_path):
    """A rank-4 decomposition of the tiny Llama's q/v weights (300 Adam iterations), as the workflow saves it."""
    from inilora.decompose import SolverSettings, decompose_weights, fingerprint, save_artifact
    from inilora.models import target_linears

    weights = {n: m.weight.detach().clone() for n, m in target_linears(tiny_llama, ["q_proj", "v_proj"]).items()}
    res = decompose_weights(weights, SolverSettings(rank=4, lr=1e-2, iterations=300), [300])[300]
    path = tmp_path / "it300.safetensors"
    save_artifact(path, tmp_path / "it300.json", res,
                  {"rank": 4, "model": {"name": "tiny", "path": "memory", "fingerprint": fingerprint(weights)}})
    return path
