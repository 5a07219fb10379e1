rule decompose:
    """IniLoRA weight approximation: one run per model x rank x lr writes every iteration count asked for."""
    input:
        manifest=manifest,
    output:
        factors=expand(paths.FACTORS, iters=cfg.iteration_counts(config), allow_missing=True),
        meta=expand(paths.FACTORS_META, iters=cfg.iteration_counts(config), allow_missing=True),
    params:
        spec=lambda w: spec_json(cfg.decompose_spec(config, w.model, w.rank, w.lr)),
        out_dir=lambda w: paths.DECOMP_DIR.format(model=w.model, rank=w.rank, lr=w.lr),
    threads: threads_per_job()
    log:
        paths.LOGS + "/decompose/{model}_r{rank}_lr{lr}.log",
    benchmark:
        paths.DECOMP_BENCH
    shell:
        INILORA + " decompose --spec {params.spec:q} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} --threads {threads} > {log:q} 2>&1"


rule decompositions:
    """Every model x rank x lr of the config, e.g. to precompute them on a GPU node."""
    input:
        cfg.all_factors(config),
