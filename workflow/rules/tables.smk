rule table1:
    """GLUE-style tasks x methods (the paper's Table 1): best validation score over epochs, and the last."""
    input:
        unpack(table1_input),
        paper=shipped(paths.PAPER_TABLE, table="table1"),
    output:
        csv=report(paths.TABLE1, caption="../report/table.rst", category="Table data (CSV)"),
        md=paths.TABLE1_MD,
        html=report(paths.TABLE1_HTML, caption="../report/table.rst", category="Tables"),
    params:
        spec=spec_json(cfg.table1_spec(config) if config["glue"]["tasks"] else {}),
        selection=lambda w, input: " ".join(f"--selection {shlex.quote(f)}" for f in named(input, "selection")),
        runs=lambda w, input: " ".join(shlex.quote(f) for f in named(input, "runs")),
    log:
        paths.LOG["table1"],
    conda:
        ENV
    shell:
        f"{INILORA} table1 --spec {{params.spec:q}} --paper {{input.paper:q}} --csv {{output.csv:q}}"
        " --markdown {output.md:q} {params.selection} {params.runs} > {log:q} 2>&1"


checkpoint select_glue_rates:
    """Tune, then compare, for Table 1: each method's rate, chosen by `tuning.rule` from its GLUE runs'
    tuning split (held out of the training split), never from the validation split it reports."""
    input:
        lambda w: cfg.glue_tuning_inputs(config),  # tuning off fails here, naming the key
    output:
        json=paths.GLUE_SELECTION,
        md=paths.GLUE_SELECTION_MD,
        figure=report(paths.GLUE_SELECTION_FIGURE, caption="../report/figure.rst", category="Figures"),
    params:
        spec=spec_json(cfg.glue_selection_spec(config) if cfg.glue_tuning_on(config) else {}),
    log:
        paths.LOG["select_glue_rates"],
    conda:
        ENV
    shell:
        f"{INILORA} select-rates --spec {{params.spec:q}} --json {{output.json:q}} --markdown {{output.md:q}}"
        " --figure {output.figure:q} {input:q} > {log:q} 2>&1"


rule table5:
    """Decomposition time and peak memory per model, measured by the workflow, beside the paper's Table 5."""
    input:
        meta=cfg.table5_inputs(config)["meta"],
        timing=cfg.table5_inputs(config)["timing"],
        paper=shipped(paths.PAPER_TABLE5),
    output:
        csv=report(paths.TABLE5, caption="../report/table.rst", category="Tables"),
        md=paths.TABLE5_MD,
    params:
        names=spec_json({m: e["paper_name"] for m, e in {**config["models"], **config["encoders"]}.items()
                         if e.get("paper_name")}),
    log:
        paths.LOG["table5"],
    conda:
        ENV
    shell:
        f"{INILORA} table5 --paper {{input.paper:q}} --csv {{output.csv:q}} --markdown {{output.md:q}}"
        " --paper-names {params.names:q} --meta {input.meta:q} --timing {input.timing:q} > {log:q} 2>&1"


rule table2:
    """Methods x benchmarks (the paper's Table 2), mean and std over seeds, beside the paper's where it is the paper's setting."""
    input:
        unpack(table2_input),
        paper=shipped(paths.PAPER_TABLE, table="table2"),
    output:
        csv=report(paths.TABLE2, caption="../report/table.rst", category="Table data (CSV)"),
        md=paths.TABLE2_MD,
        html=report(paths.TABLE2_HTML, caption="../report/table.rst", category="Tables"),
    params:
        spec=spec_json(cfg.table2_spec(config)),
        # from the input's names, which exist once the checkpoint (if any) is done; a dry run formats
        # this job before that
        selection=lambda w, input: " ".join(f"--selection {shlex.quote(f)}" for f in named(input, "selection")),
        evals=lambda w, input: " ".join(shlex.quote(f) for f in named(input, "evals")),
    log:
        paths.LOG["table2"],
    conda:
        ENV
    shell:
        f"{INILORA} table2 --spec {{params.spec:q}} --paper {{input.paper:q}} --csv {{output.csv:q}}"
        " --markdown {output.md:q} {params.selection} {params.evals} > {log:q} 2>&1"


checkpoint select_rates:
    """Tune, then compare: each Table 2 method's rate, chosen from its tuning runs by `tuning.rule`
    (a checkpoint, so Table 2's runs are planned from its choice)."""
    input:
        lambda w: cfg.tuning_inputs(config),  # tuning off fails here, naming the key
    output:
        json=paths.SELECTION,
        md=paths.SELECTION_MD,
        figure=report(paths.SELECTION_FIGURE, caption="../report/figure.rst", category="Figures"),
    params:
        spec=spec_json(cfg.selection_spec(config) if cfg.tuning_on(config) else {}),
    log:
        paths.LOG["select_rates"],
    conda:
        ENV
    shell:
        f"{INILORA} select-rates --spec {{params.spec:q}} --json {{output.json:q}} --markdown {{output.md:q}}"
        " --figure {output.figure:q} {input:q} > {log:q} 2>&1"


rule lr_sweep:
    """Methods x fine-tuning learning rates (the paper's Figure 6 data): the best rate depends on the init."""
    input:
        lambda w: cfg.lr_sweep_inputs(config),  # an empty sweep fails here, naming the key
    output:
        csv=report(paths.LR_SWEEP, caption="../report/table.rst", category="Table data (CSV)"),
        md=paths.LR_SWEEP_MD,
        html=report(paths.LR_SWEEP_HTML, caption="../report/table.rst", category="Tables"),
    params:
        spec=spec_json(cfg.lr_sweep_spec(config)),
    log:
        paths.LOG["lr_sweep"],
    conda:
        ENV
    shell:
        f"{INILORA} lr-sweep --spec {{params.spec:q}} --csv {{output.csv:q}} --markdown {{output.md:q}}"
        " {input:q} > {log:q} 2>&1"


rule study_table:
    """Accuracy by rank on the study benchmark: Tables 3 (IniLoRA-alpha/beta), 4 (data size), 6 (methods), 7 (zero iterations)."""
    input:
        evals=lambda w: cfg.table_inputs(config, w.table),
        paper=lambda w: shipped(paths.PAPER_TABLE, table=w.table),
    output:
        csv=report(paths.STUDY_TABLE, caption="../report/table.rst", category="Table data (CSV)"),
        md=paths.STUDY_TABLE_MD,
        html=report(paths.STUDY_TABLE_HTML, caption="../report/table.rst", category="Tables"),
    params:
        spec=lambda w: spec_json(cfg.study_spec(config, w.table)),
    log:
        paths.LOG["study_table"],
    conda:
        ENV
    shell:
        f"{INILORA} study-table --spec {{params.spec:q}} --paper {{input.paper:q}} --csv {{output.csv:q}}"
        " --markdown {output.md:q} {input.evals:q} > {log:q} 2>&1"
