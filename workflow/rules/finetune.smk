def factors_input(w):
    """Only methods that read a decomposition depend on one (so LoRA never waits for it)."""
    wc = cfg.factors_wildcards(config, w.model, w.method, w.rank)
    return {"factors": paths.FACTORS.format(**wc)} if wc else {}


rule finetune:
    """Initialise LoRA by method name (inilora.apply_init) and fine-tune with the Trainer."""
    input:
        unpack(factors_input),
        manifest=manifest,
    output:
        adapter=paths.ADAPTER,
        log_json=paths.TRAIN_LOG,
    params:
        spec=lambda w: spec_json(cfg.finetune_spec(config, w.model, w.task, w.method, w.rank, w.lr, w.seed)),
        factors=lambda w, input: f"--factors {input.factors}" if "factors" in input.keys() else "",
        adapter_dir=lambda w, output: str(Path(output.adapter).parent),
    threads: threads_per_job()
    log:
        paths.LOGS + "/finetune/{model}_{task}_{method}_r{rank}_lr{lr}_seed{seed}.log",
    shell:
        INILORA + " finetune --spec {params.spec:q} --manifest {input.manifest:q} {params.factors}"
        " --adapter-dir {params.adapter_dir:q} --log-json {output.log_json:q} --threads {threads} > {log:q} 2>&1"
