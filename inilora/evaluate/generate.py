"""Generation for every benchmark kind: batched HF generate with left padding and the KV cache,
the held-out loss of reference answers, and the optional vLLM backend."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from inilora.data import Example
from inilora.train.sft import IGNORE, Collator, encode


STOP_STRINGS = ["Instruction:", "Instruction", "Response:", "Response"]


def cut_at_stop(text: str, stops: list[str] = STOP_STRINGS) -> str:
    idx = [text.find(s) for s in stops if s in text]
    return text[: min(idx)] if idx else text


@torch.no_grad()
def generate(model, tok, prompts: list[str], max_new_tokens: int, batch_size: int = 32, desc: str = "generate",
             stops: list[str] = STOP_STRINGS, samples: int = 1, temperature: float = 0.0, top_p: float = 1.0,
             seed: int = 0) -> list[list[str]]:
    """Batched generation with left padding and the KV cache: ``samples`` outputs per prompt,
    greedy when ``temperature`` is 0, else nucleus sampling (seeded), each cut at ``stops``."""
    tok.padding_side = "left"
    outs: list[list[str]] = []
    model.eval()
    device = next(model.parameters()).device
    sampling = temperature > 0
    if not sampling and samples > 1:
        raise ValueError(f"samples = {samples} with temperature 0 would repeat one greedy output; set a temperature")
    torch.manual_seed(seed)
    for i in tqdm(range(0, len(prompts), batch_size), desc=desc, mininterval=2):
        chunk = prompts[i : i + batch_size]
        enc = tok(chunk, return_tensors="pt", padding=True).to(device)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=None if not sampling else 0,
            num_return_sequences=samples,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            stop_strings=list(stops) or None,
            tokenizer=tok,
        )
        texts = [cut_at_stop(t, stops) for t in tok.batch_decode(gen[:, enc["input_ids"].shape[1] :],
                                                                  skip_special_tokens=True)]
        outs.extend(texts[j : j + samples] for j in range(0, len(texts), samples))
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


def vllm_generator(model_dir: str, seed: int = 0):
    """Generation through vLLM (GPU clusters), with our prompts, stops and extraction unchanged.

    ``model_dir``: a plain model folder (for an adapter, the ``merge`` rule's output). Returns a
    function with :func:`generate`'s signature minus model and tokenizer.
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise ValueError("benchmark backend 'vllm' needs the vllm package (a GPU build: pip install vllm); "
                         "without it use backend: hf") from None
    llm = LLM(model=model_dir, seed=seed)

    def gen(prompts, max_new_tokens, batch_size=None, desc=None, stops=STOP_STRINGS, samples=1, temperature=0.0,
            top_p=1.0, seed=seed):
        params = SamplingParams(n=samples, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                max_tokens=max_new_tokens, stop=list(stops) or None, seed=seed)
        return [[cut_at_stop(c.text, stops) for c in out.outputs] for out in llm.generate(prompts, params)]

    return gen
