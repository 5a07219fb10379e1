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


def scored_mask(labels: torch.Tensor) -> torch.Tensor:
    """Which positions of a right-padded batch predict a scored token of ``labels`` (unshifted, as
    :class:`Collator` gives them): batch x positions, True where the next token's label is not
    ignored. As ``logits_to_keep``, transformers' causal LMs apply their head at those positions
    only, flattened in row-major order."""
    return torch.nn.functional.pad(labels[:, 1:] != IGNORE, (0, 1), value=False)


class Collator:
    """Right-pads a batch; pad positions get attention 0 and label -100.

    ``logits_to_keep``: the batch also says which positions' logits its loss needs
    (:func:`scored_mask`), for a causal LM that computes its head at those only."""

    def __init__(self, pad_id: int, logits_to_keep: bool = False):
        self.pad_id = pad_id
        self.logits_to_keep = logits_to_keep

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
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if self.logits_to_keep:
            batch["logits_to_keep"] = scored_mask(labels)
        return batch
