"""Evaluation of a fine-tuned adapter on one benchmark: generation accuracy and held-out loss.

Generation follows the IniLoRA GSM8K evaluation (init-methods.md sec. 1e): the Alpaca
prompt (plus a per-benchmark suffix such as " Let's think step by step."), greedy
decoding, the stop strings below, and the answer after the last "The answer is: ".
"""

from __future__ import annotations

import math
import time

import torch
from tqdm.auto import tqdm

from inilora.data import Example, prompt
from inilora.extract import extract_answer, numeric_correct
from inilora.train import IGNORE, Collator, encode

STOP_STRINGS = ["Instruction:", "Instruction", "Response:", "Response"]


def cut_at_stop(text: str, stops: list[str] = STOP_STRINGS) -> str:
    idx = [text.find(s) for s in stops if s in text]
    return text[: min(idx)] if idx else text


@torch.no_grad()
def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 32, desc: str = "generate") -> list[str]:
    """Batched greedy generation with left padding and the KV cache."""
    tok.padding_side = "left"
    outs: list[str] = []
    model.eval()
    device = next(model.parameters()).device
    for i in tqdm(range(0, len(prompts), batch_size), desc=desc, mininterval=2):
        chunk = prompts[i : i + batch_size]
        enc = tok(chunk, return_tensors="pt", padding=True).to(device)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            stop_strings=STOP_STRINGS,
            tokenizer=tok,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        outs.extend(cut_at_stop(t) for t in tok.batch_decode(new, skip_special_tokens=True))
    return outs


@torch.no_grad()
def heldout_loss(model, tok, examples: list[Example], max_length: int, suffix: str = "", batch_size: int = 16) -> float:
    """Token-weighted mean cross-entropy of the reference responses (prompt masked)."""
    model.eval()
    device = next(model.parameters()).device
    collate = Collator(tok.pad_token_id)
    total, count = 0.0, 0
    data = [encode(tok, ex, max_length, suffix) for ex in examples]
    for i in range(0, len(data), batch_size):
        batch = {k: v.to(device) for k, v in collate(data[i : i + batch_size]).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
        )
        total += float(loss)
        count += int((labels != IGNORE).sum())
    return total / max(count, 1)


def evaluate(model, tok, examples: list[Example], suffix: str, max_new_tokens: int, max_length: int,
             batch_size: int = 32, desc: str = "evaluate") -> dict:
    start = time.time()
    outputs = generate(model, tok, [prompt(ex.question, suffix) for ex in examples], max_new_tokens, batch_size, desc)
    records = []
    for ex, out in zip(examples, outputs):
        answer = extract_answer(out)
        records.append({"question": ex.question, "gold": ex.answer, "output": out, "extracted": answer,
                        "correct": numeric_correct(answer, ex.answer)})
    gen_seconds = time.time() - start
    loss = heldout_loss(model, tok, examples, max_length, suffix)
    accuracy = sum(r["correct"] for r in records) / len(records)
    return {
        "n": len(records),
        "accuracy": accuracy,
        # binomial standard error, so a reader can see which differences are noise
        "accuracy_se": math.sqrt(accuracy * (1 - accuracy) / len(records)),
        "heldout_loss": loss,
        "answered": sum(r["extracted"] is not None for r in records) / len(records),
        "generation_seconds": gen_seconds,
        "records": records,
    }
