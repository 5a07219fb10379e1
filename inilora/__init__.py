"""inilora: LoRA initialisations compared, IniLoRA first.

``from inilora import apply_init, decompose_model`` is the library's entry point (see
:mod:`inilora.inits` and :mod:`inilora.decompose.job`). The
package mirrors the workflow's stages: ``config``, ``decompose``, ``inits``, ``train``,
``evaluate``, ``data`` and ``report``; ``paths`` names every artifact.
"""

__all__ = ["apply_init", "decompose_model"]


def __getattr__(name):
    # Lazy, so that importing any inilora module (the config layer while Snakemake parses, the sandbox's
    # child) loads neither the init records nor torch.
    if name == "apply_init":
        from inilora.inits import apply_init

        return apply_init
    if name == "decompose_model":
        from inilora.decompose.job import decompose_model

        return decompose_model
    raise AttributeError(f"module 'inilora' has no attribute {name!r}")
