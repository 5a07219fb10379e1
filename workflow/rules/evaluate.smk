rule evaluate:
    """Greedy generation accuracy and held-out loss of one fine-tuned adapter on one benchmark."""
    input:
        adapter=paths.ADAPTER,
        manifest=manifest,
    output:
        paths.EVAL,
    params:
        spec=lambda w: spec_json(cfg.evaluate_spec(config, w.bench, w.task)),
        adapter_dir=lambda w, input: str(Path(input.adapter).parent),
    threads: THREADS
    resources:
        **computed_resources("evaluate", bench="bench"),
    log:
        paths.LOG["evaluate"],
    conda:
        ENV
    shell:
        f"{INILORA} evaluate --spec {{params.spec:q}} --manifest {{input.manifest:q}}"
        " --adapter-dir {params.adapter_dir:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


rule evaluate_base:
    """The same benchmark on the base model without fine-tuning, as a reference row."""
    input:
        manifest=manifest,
    output:
        paths.BASE_EVAL,
    params:
        spec=lambda w: spec_json(cfg.evaluate_spec(config, w.bench)),
    threads: THREADS
    resources:
        **computed_resources("evaluate_base", bench="bench"),
    log:
        paths.LOG["evaluate_base"],
    conda:
        ENV
    shell:
        f"{INILORA} evaluate --spec {{params.spec:q}} --manifest {{input.manifest:q}}"
        " --out {output:q} --threads {threads} > {log:q} 2>&1"
