"""A prompt and its answer as the causal LM sees them: token ids with the prompt masked out of the
loss (label -100, as in the IniLoRA / MetaMath train.py), and right-padded batches. Training and
evaluation (the held-out loss) encode alike."""

from __future__ import annotations

import torch

from inilora.data.examples import Example, prompt

IGNORE = -100


def encode(tok, ex: Example, max_length: int, suffix: str = "") -> dict:
    """input_ids = prompt + ' ' + response + eos; labels mask the prompt."""
    p = tok(prompt(ex.question, suffix))["input_ids"]
    r = tok(" " + ex.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p + r)[:max_length]
    labels = ([IGNORE] * len(p) + r)[:max_length]
    return {"input_ids": ids, "labels": labels}


class Collator:
    """Right-pads a batch; pad positions get attention 0 and label -100."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
