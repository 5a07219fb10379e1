rule table1:
    """GLUE-style tasks x methods (the paper's Table 1): best validation score over epochs, and the last."""
    input:
        lambda w: cfg.glue_inputs(config) or cfg.require("glue.tasks", "list GLUE tasks or stand-ins, e.g. [champ_topic]"),
    output:
        csv=paths.TABLE1,
        md=paths.TABLE1_MD,
    params:
        spec=spec_json(cfg.table1_spec(config) if config["glue"]["tasks"] else {}),
    log:
        paths.LOGS + "/table1.log",
    shell:
        INILORA + " table1 --spec {params.spec:q} --csv {output.csv:q} --markdown {output.md:q} {input:q} > {log:q} 2>&1"


rule table5:
    """Decomposition time and peak memory per model, measured by the workflow, beside the paper's Table 5."""
    input:
        meta=cfg.table5_inputs(config)["meta"],
        bench=cfg.table5_inputs(config)["bench"],
        paper=f"{workflow.basedir}/{paths.PAPER_TABLE5}",  # shipped with the workflow, not in the run dir
    output:
        csv=paths.TABLE5,
        md=paths.TABLE5_MD,
    params:
        names=spec_json({m: e["paper_name"] for m, e in {**config["models"], **config["encoders"]}.items()
                         if e.get("paper_name")}),
    log:
        paths.LOGS + "/table5.log",
    shell:
        INILORA + " table5 --paper {input.paper:q} --csv {output.csv:q} --markdown {output.md:q}"
        " --paper-names {params.names:q}"
        " --meta {input.meta:q} --bench {input.bench:q} > {log:q} 2>&1"


rule table2:
    """Methods x benchmarks (the paper's Table 2), mean and std over seeds."""
    input:
        cfg.table2_inputs(config),
    output:
        csv=paths.TABLE2,
        md=paths.TABLE2_MD,
    params:
        spec=spec_json(cfg.table2_spec(config)),
    log:
        paths.LOGS + "/table2.log",
    shell:
        INILORA + " table2 --spec {params.spec:q} --csv {output.csv:q} --markdown {output.md:q} {input:q} > {log:q} 2>&1"


rule lr_sweep:
    """Methods x fine-tuning learning rates (the paper's Figure 6 data): the best rate depends on the init."""
    input:
        lambda w: cfg.lr_sweep_inputs(config),  # an empty sweep fails here, naming the key
    output:
        csv=paths.LR_SWEEP,
        md=paths.LR_SWEEP_MD,
    params:
        spec=spec_json(cfg.lr_sweep_spec(config)),
    log:
        paths.LOGS + "/lr_sweep.log",
    shell:
        INILORA + " lr-sweep --spec {params.spec:q} --csv {output.csv:q} --markdown {output.md:q} {input:q} > {log:q} 2>&1"
