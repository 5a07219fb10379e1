rule table1:
    """GLUE-style tasks x methods (the paper's Table 1): best validation score over epochs, and the last."""
    input:
        runs=lambda w: cfg.glue_inputs(config) or cfg.require("glue.tasks", "list GLUE tasks or stand-ins, e.g. [champ_topic]"),
        paper=f"{workflow.basedir}/{paths.PAPER_TABLE.format(table='table1')}",  # shipped with the workflow
    output:
        csv=report(paths.TABLE1, caption="../report/table.rst", category="Tables"),
        md=paths.TABLE1_MD,
    params:
        spec=spec_json(cfg.table1_spec(config) if config["glue"]["tasks"] else {}),
    log:
        paths.LOGS + "/table1.log",
    shell:
        INILORA + " table1 --spec {params.spec:q} --paper {input.paper:q} --csv {output.csv:q} --markdown {output.md:q}"
        " {input.runs:q} > {log:q} 2>&1"


rule table5:
    """Decomposition time and peak memory per model, measured by the workflow, beside the paper's Table 5."""
    input:
        meta=cfg.table5_inputs(config)["meta"],
        bench=cfg.table5_inputs(config)["bench"],
        paper=f"{workflow.basedir}/{paths.PAPER_TABLE5}",  # shipped with the workflow, not in the run dir
    output:
        csv=report(paths.TABLE5, caption="../report/table.rst", category="Tables"),
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
    """Methods x benchmarks (the paper's Table 2), mean and std over seeds, beside the paper's where it is the paper's setting."""
    input:
        evals=cfg.table2_inputs(config),
        paper=f"{workflow.basedir}/{paths.PAPER_TABLE.format(table='table2')}",
    output:
        csv=report(paths.TABLE2, caption="../report/table.rst", category="Tables"),
        md=paths.TABLE2_MD,
    params:
        spec=spec_json(cfg.table2_spec(config)),
    log:
        paths.LOGS + "/table2.log",
    shell:
        INILORA + " table2 --spec {params.spec:q} --paper {input.paper:q} --csv {output.csv:q} --markdown {output.md:q}"
        " {input.evals:q} > {log:q} 2>&1"


rule lr_sweep:
    """Methods x fine-tuning learning rates (the paper's Figure 6 data): the best rate depends on the init."""
    input:
        lambda w: cfg.lr_sweep_inputs(config),  # an empty sweep fails here, naming the key
    output:
        csv=report(paths.LR_SWEEP, caption="../report/table.rst", category="Tables"),
        md=paths.LR_SWEEP_MD,
    params:
        spec=spec_json(cfg.lr_sweep_spec(config)),
    log:
        paths.LOGS + "/lr_sweep.log",
    shell:
        INILORA + " lr-sweep --spec {params.spec:q} --csv {output.csv:q} --markdown {output.md:q} {input:q} > {log:q} 2>&1"


# ----------------------------------------------------------------------------- the paper's analyses


rule study_table:
    """Accuracy by rank on the study benchmark: Tables 3 (IniLoRA-alpha/beta), 4 (data size), 6 (methods), 7 (zero iterations)."""
    input:
        evals=lambda w: cfg.table_inputs(config, w.table),
        paper=f"{workflow.basedir}/{paths.PAPER_TABLE}",
    output:
        csv=report(paths.STUDY_TABLE, caption="../report/table.rst", category="Tables"),
        md=paths.STUDY_TABLE_MD,
    wildcard_constraints:
        table="table[3467]",
    params:
        spec=lambda w: spec_json(cfg.study_spec(config, w.table)),
    log:
        paths.LOGS + "/{table}.log",
    shell:
        INILORA + " study-table --spec {params.spec:q} --paper {input.paper:q} --csv {output.csv:q}"
        " --markdown {output.md:q} {input.evals:q} > {log:q} 2>&1"


rule figure2:
    """Accuracy versus decomposition loss: a fine-tune from every checkpoint of one decomposition run."""
    input:
        unpack(lambda w: cfg.figure2_inputs(config)),
    output:
        report(paths.FIGURE.format(figure="figure2"), caption="../report/figure.rst", category="Figures"),
    params:
        spec=spec_json(cfg.figure_spec(config, "figure2")),
    log:
        paths.LOGS + "/figure2.log",
    shell:
        INILORA + " figure --spec {params.spec:q} --out {output:q} --evals {input.evals:q} --meta {input.meta:q} > {log:q} 2>&1"


rule figure3:
    """Accuracy versus the std of Gaussian factors (IniLoRA-alpha's family)."""
    input:
        evals=lambda w: cfg.figure3_inputs(config),
    output:
        report(paths.FIGURE.format(figure="figure3"), caption="../report/figure.rst", category="Figures"),
    params:
        spec=spec_json(cfg.figure_spec(config, "figure3")),
    log:
        paths.LOGS + "/figure3.log",
    shell:
        INILORA + " figure --spec {params.spec:q} --out {output:q} --evals {input.evals:q} > {log:q} 2>&1"


rule figure4:
    """Accuracy per initial distribution of the factors, and the distributions as drawn."""
    input:
        unpack(lambda w: cfg.figure4_inputs(config)),
    output:
        report(paths.FIGURE.format(figure="figure4"), caption="../report/figure.rst", category="Figures"),
    params:
        spec=spec_json(cfg.figure_spec(config, "figure4")),
    log:
        paths.LOGS + "/figure4.log",
    shell:
        INILORA + " figure --spec {params.spec:q} --out {output:q} --evals {input.evals:q}"
        " --initial {input.initial:q} > {log:q} 2>&1"


rule figure5:
    """Training-loss curves per rank."""
    input:
        logs=lambda w: cfg.figure5_inputs(config),
    output:
        report(paths.FIGURE.format(figure="figure5"), caption="../report/figure.rst", category="Figures"),
    params:
        spec=spec_json(cfg.figure_spec(config, "figure5")),
    log:
        paths.LOGS + "/figure5.log",
    shell:
        INILORA + " figure --spec {params.spec:q} --out {output:q} --logs {input.logs:q} > {log:q} 2>&1"


rule figure6:
    """Accuracy versus fine-tuning learning rate, from results/lr_sweep.csv."""
    input:
        sweep=paths.LR_SWEEP,
    output:
        report(paths.FIGURE.format(figure="figure6"), caption="../report/figure.rst", category="Figures"),
    params:
        spec=spec_json(cfg.figure_spec(config, "figure6")),
    log:
        paths.LOGS + "/figure6.log",
    shell:
        INILORA + " figure --spec {params.spec:q} --out {output:q} --sweep {input.sweep:q} > {log:q} 2>&1"
