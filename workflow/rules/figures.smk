rule figure:
    """The paper's Figures 2-6 from the workflow's result files: 2 accuracy versus decomposition loss
    (a fine-tune per checkpoint of one run), 3 versus the std of Gaussian factors, 4 per initial
    distribution, 5 training-loss curves per rank, 6 versus the fine-tuning learning rate."""
    input:
        unpack(lambda w: cfg.figure_inputs(config, w.figure)),
    output:
        report(paths.FIGURE, caption="../report/figure.rst", category="Figures"),
    params:
        spec=lambda w: spec_json(cfg.figure_spec(config, w.figure)),
        inputs=figure_flags,
    log:
        paths.LOG["figure"],
    conda:
        ENV
    shell:
        f"{INILORA} figure --spec {{params.spec:q}} --out {{output:q}} {{params.inputs}} > {{log:q}} 2>&1"
