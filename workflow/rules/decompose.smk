# Decompositions are shared between workflows through Snakemake's output cache
# (`--cache decompose` with SNAKEMAKE_OUTPUT_CACHE=<dir>). Its key ignores wildcards and paths:
# it hashes the shell command, the params (the spec: model, rank, lr, iterations, ...), the
# content of the source inputs and, in turn, the key of prepare_model (the model's config path).


rule decompose:
    """IniLoRA weight approximation: one run per model x rank x decomposition lr writes every iteration
    count asked for. The job writes its own timing file (Snakemake's cache refuses `benchmark:`);
    cached with the factors, it reports the solve's cost on a cache hit too."""
    input:
        manifest=manifest,
        weights=model_weights,
    output:
        **decompose_outputs(),
    params:
        spec=lambda w: spec_json(cfg.decompose_spec(config, w.model, w.rank, w.dlr)),
        out_dir=lambda w: paths.DECOMP_DIR.format(model=w.model, rank=w.rank, dlr=w.dlr),
    threads: THREADS
    priority: PRIORITY["decompose"]
    resources:
        **computed_resources("decompose"),
    log:
        paths.LOG["decompose"],
    cache: "omit-software"
    conda:
        ENV
    shell:
        f"{INILORA} decompose --spec {{params.spec:q}} --manifest {{input.manifest:q}}"
        " --out-dir {params.out_dir:q} --timing {output.timing:q} --threads {threads} > {log:q} 2>&1"


rule decompositions:
    """Every model x rank x lr of the config, e.g. to precompute them on a GPU node."""
    input:
        cfg.all_factors(config),
