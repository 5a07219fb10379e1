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
