# Decompositions are shared between workflows through Snakemake's output cache
# (`--cache decompose` with SNAKEMAKE_OUTPUT_CACHE=<dir>). Its key ignores wildcards and paths:
# it hashes the shell command, the params (the spec: model, rank, lr, iterations, ...), the
# content of the source inputs and, in turn, the key of prepare_model (the model's config path).
from pathlib import Path

from inilora.models import ModelError, builtin_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def model_weights(wildcards):
    """The files the approximated weights are read from: config.json and weight files of a local
    folder, or the file a builtin package ships. As inputs, their content (not their path) enters
    the cache key, so an edited or different model misses it. A hub id has none (its id is the key)."""
    path = cfg.model_entry(config, wildcards.model)["path"]
    if path.startswith("builtin:"):
        try:
            path = str(builtin_file(path.split(":", 1)[1]))
        except (KeyError, ModelError):
            return []  # prepare_model names the missing package
    source = Path(path).expanduser()
    if source.is_file():
        return [str(source)]
    if not source.is_dir():
        return []
    return sorted(str(f) for f in source.iterdir() if f.name == "config.json" or f.name.endswith(WEIGHT_SUFFIXES))


def decompose_outputs():
    """Every file under a name of its own: the cache stores a multi-output rule only that way."""
    out = {}
    for n in cfg.iteration_counts(config):
        (out[f"factors_it{n}"],) = expand(paths.FACTORS, iters=n, allow_missing=True)
        (out[f"meta_it{n}"],) = expand(paths.FACTORS_META, iters=n, allow_missing=True)
    return {**out, "bench": paths.DECOMP_BENCH}


rule decompose:
    """IniLoRA weight approximation: one run per model x rank x lr writes every iteration count asked for.
    The job writes its own benchmark TSV (Snakemake's cache refuses `benchmark:`); cached with the factors,
    it reports the solve's cost on a cache hit too."""
    input:
        manifest=manifest,
        weights=model_weights,
    output:
        **decompose_outputs(),
    params:
        spec=lambda w: spec_json(cfg.decompose_spec(config, w.model, w.rank, w.lr)),
        out_dir=lambda w: paths.DECOMP_DIR.format(model=w.model, rank=w.rank, lr=w.lr),
    threads: threads_per_job()
    log:
        paths.LOGS + "/decompose/{model}_r{rank}_lr{lr}.log",
    cache: "omit-software"
    shell:
        INILORA + " decompose --spec {params.spec:q} --manifest {input.manifest:q}"
        " --out-dir {params.out_dir:q} --benchmark {output.bench:q} --threads {threads} > {log:q} 2>&1"


rule decompositions:
    """Every model x rank x lr of the config, e.g. to precompute them on a GPU node."""
    input:
        cfg.all_factors(config),
