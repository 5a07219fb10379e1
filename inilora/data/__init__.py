"""Training and benchmark data as :class:`Example` lists, by loader name (``examples``), and the MATH
and CHAMP loaders (``mathsets``)."""

from inilora.data.examples import (ALPACA_PROMPT, ANSWER_LEAD, HF_PRESETS, LOADERS, DataError, Example, data_file_list,
                                   gsm8k_gold, gsm8k_to_response, load_examples, local_fields, prompt)

__all__ = ["ALPACA_PROMPT", "ANSWER_LEAD", "HF_PRESETS", "LOADERS", "DataError", "Example", "data_file_list",
           "gsm8k_gold", "gsm8k_to_response", "load_examples", "local_fields", "prompt"]
