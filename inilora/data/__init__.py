"""Training and benchmark data as :class:`Example` lists, by loader name (``examples``), and the MATH
and CHAMP loaders (``mathsets``)."""

from inilora.data import examples, mathsets
from inilora.data.examples import (ALPACA_PROMPT, ANSWER_LEAD, HF_PRESETS, DataError, Example, data_file_list, gsm8k_gold,
                                   gsm8k_to_response, local_fields, prompt)

__all__ = ["ALPACA_PROMPT", "ANSWER_LEAD", "HF_PRESETS", "LOADERS", "DataError", "Example", "data_file_list",
           "gsm8k_gold", "gsm8k_to_response", "load_examples", "local_fields", "prompt"]

LOADERS = {**examples.LOADERS, **mathsets.LOADERS}


def load_examples(spec: dict) -> list[Example]:
    """Examples for one data spec from the config (``{"loader": ..., ...}``)."""
    spec = dict(spec)
    spec.pop("label", None)
    loader = spec.pop("loader", None)
    if loader not in LOADERS:
        raise DataError(f"data loader '{loader}' unknown; valid: {sorted(LOADERS)}")
    return LOADERS[loader](**spec)
