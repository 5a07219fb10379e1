rule prepare_model:
    """Resolve a model name; the builtin SmolLM2 GGUF is converted once to a plain HF folder."""
    output:
        manifest=paths.MODEL_MANIFEST,
    params:
        path=lambda w: cfg.model_entry(config, w.model)["path"],
        out_dir=lambda w: paths.MODEL_DIR.format(model=w.model),
    resources:
        **computed_resources("prepare_model"),
    log:
        paths.LOG["prepare_model"],
    conda:
        ENV
    shell:
        f"{INILORA} prepare-model --name {{wildcards.model}} --path {{params.path:q}}"
        " --out-dir {params.out_dir:q} --manifest {output.manifest:q} > {log:q} 2>&1"
