def factors_input(w):
    """Only methods that read a decomposition depend on one (so LoRA never waits for it)."""
    wc = cfg.factors_wildcards(config, w.model, w.method, w.rank)
    return {"factors": paths.FACTORS.format(**wc)} if wc else {}


def launcher(gpus: int) -> str:
    """One process, or one per GPU under torchrun: the Trainer then runs DDP inside the one job."""
    if gpus == 1:
        return INILORA
    return f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node {gpus} -m inilora"


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
        factors=lambda w, input: f"--factors {input.factors}" if "factors" in input.keys() else "",
        adapter_dir=lambda w, output: str(Path(output.adapter).parent),
        launch=launcher(config["train"]["gpus"]),
    threads: threads_per_job()
    resources:
        gpu=config["train"]["gpus"],
    log:
        paths.LOGS + "/finetune/{model}_{task}_{method}_r{rank}_lr{lr}_seed{seed}.log",
    shell:
        "{params.launch} finetune --spec {params.spec:q} --manifest {input.manifest:q} {params.factors}"
        " --adapter-dir {params.adapter_dir:q} --log-json {output.log_json:q} --threads {threads} > {log:q} 2>&1"


rule merge:
    """Optional export: the portable adapter merged into the original base, a model folder that needs no PEFT."""
    input:
        adapter=paths.ADAPTER,
        manifest=manifest,
    output:
        directory(paths.MERGED),
    params:
        adapter_dir=lambda w, input: str(Path(input.adapter).parent),
    threads: threads_per_job()
    log:
        paths.LOGS + "/merge/{model}_{task}_{method}_r{rank}_lr{lr}_seed{seed}.log",
    shell:
        INILORA + " merge --manifest {input.manifest:q} --adapter-dir {params.adapter_dir:q}"
        " --out-dir {output:q} --threads {threads} > {log:q} 2>&1"


rule glue:
    """Sequence-classification fine-tune of an encoder, validated after every epoch (the paper's Table 1)."""
    input:
        unpack(factors_input),
        manifest=manifest,
    output:
        paths.GLUE_RUN,
    params:
        spec=lambda w: spec_json(cfg.glue_spec(config, w.model, w.task, w.method, w.rank, w.seed)),
        factors=lambda w, input: f"--factors {input.factors}" if "factors" in input.keys() else "",
    threads: threads_per_job()
    log:
        paths.LOGS + "/glue/{model}_{task}_{method}_r{rank}_seed{seed}.log",
    shell:
        INILORA + " glue --spec {params.spec:q} --manifest {input.manifest:q} {params.factors}"
        " --out {output:q} --threads {threads} > {log:q} 2>&1"
