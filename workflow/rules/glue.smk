rule glue:
    """Sequence-classification fine-tune of an encoder, validated after every epoch (the paper's Table 1)."""
    input:
        unpack(factors_input),
        manifest=manifest,
    output:
        paths.GLUE_RUN,
    params:
        spec=lambda w: spec_json(cfg.glue_spec(config, w.model, w.task, w.method, w.rank, w.lr, w.seed)),
        factors=factors_flag,
    threads: THREADS
    resources:
        **computed_resources("glue"),
    log:
        paths.LOG["glue"],
    conda:
        ENV
    shell:
        f"{INILORA} glue --spec {{params.spec:q}} --manifest {{input.manifest:q}} {{params.factors}}"
        " --out {output:q} --threads {threads} > {log:q} 2>&1"
