"""LoRA initialisations by name: ``apply_init(model, method, rank, alpha, target_modules, **options)``.

One module per family registers its inits (``@register``) in :mod:`inilora.inits.registry`:
``lora`` (LoRA and the random-factor inits), ``svd`` (PiSSA, MiLoRA, OLoRA), ``inilora``
(IniLoRA and its random variants), ``gradient`` (LoRA-GA, High-Rank Preheating, LoRA-One),
``upstream`` (PEFT's orthogonal, MiCA, EVA, CorDA and LoRA-GA port). docs/init-methods.md describes each.
"""

# Each family registers its inits on import; this order is the registry's (and the README's).
from inilora.inits import lora, svd, inilora, gradient, upstream  # noqa: F401, I001
from inilora.inits.inilora import DISTRIBUTIONS, draw
from inilora.inits.registry import (REGISTRY, InitError, Method, apply_init, check_options, get, is_residual,
                                    keeps_output, needing,
                                    option_defaults, option_names, save_initial_adapter)
from inilora.inits.residual import lora_layers, set_residual

__all__ = ["DISTRIBUTIONS", "draw", "REGISTRY", "InitError", "Method", "apply_init", "check_options", "get", "is_residual",
           "keeps_output", "lora_layers", "needing", "option_defaults", "option_names", "save_initial_adapter", "set_residual"]
