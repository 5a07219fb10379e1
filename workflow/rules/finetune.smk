rule finetune:
    """Initialise LoRA by method name (inilora.apply_init) and fine-tune with the Trainer."""
    input:
        unpack(factors_input),
        manifest=manifest,
    output:
        adapter=paths.ADAPTER,
        log_json=paths.TRAIN_LOG,
        initial=paths.INITIAL_ADAPTER,
    params:
        spec=lambda w: spec_json(cfg.finetune_spec(config, w.model, w.task, w.method, w.rank, w.lr, w.seed)),
        factors=factors_flag,
        adapter_dir=lambda w, output: str(Path(output.adapter).parent),
        launch=launcher(config["train"]["gpus"]),
        rank_threads=THREADS,
    # `threads` CPUs for each rank: under torchrun the job asks for one set per GPU
    threads: THREADS * config["train"]["gpus"]
    priority: PRIORITY["finetune"]
    resources:
        **computed_resources("finetune", task="task"),
        gpu=config["train"]["gpus"],
    log:
        paths.LOG["finetune"],
    conda:
        ENV
    shell:
        "{params.launch} finetune --spec {params.spec:q} --manifest {input.manifest:q} {params.factors}"
        " --adapter-dir {params.adapter_dir:q} --log-json {output.log_json:q} --threads {params.rank_threads} > {log:q} 2>&1"


rule merge:
    """Optional export: the portable adapter merged into the original base, a model folder that needs no PEFT."""
    input:
        adapter=paths.ADAPTER,
        manifest=manifest,
    output:
        directory(paths.MERGED),
    params:
        adapter_dir=lambda w, input: str(Path(input.adapter).parent),
        device=config["device"],
    threads: THREADS
    resources:
        **computed_resources("merge"),
    log:
        paths.LOG["merge"],
    conda:
        ENV
    shell:
        f"{INILORA} merge --manifest {{input.manifest:q}} --adapter-dir {{params.adapter_dir:q}}"
        " --out-dir {output:q} --device {params.device} --threads {threads} > {log:q} 2>&1"
