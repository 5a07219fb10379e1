"""Data for shape rehearsals: offline files in the layouts of the paper's datasets, filled with stand-in
items, so that every loader and job of the paper preset (``workflow/presets/rehearsal.yaml``) runs
offline at its real batch sizes and lengths. The rehearsal models themselves (``rehearsal:<arch>``)
are model sources of :mod:`inilora.models`.

``python -m inilora.rehearsal [DIR]`` writes them (default ``results/rehearsal-data``).
"""

from __future__ import annotations

from pathlib import Path

from inilora.data import glue, load_examples
from inilora.data.humaneval import load_problems
from inilora.evaluate import mmlu
from inilora.io import atomic_write_text

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
                                           for p in list(load_problems().values())[:n]]),
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
