# inilora: LoRA initialisations compared, IniLoRA first.
# prepare model -> decompose (IniLoRA factors, once) -> initialise + fine-tune -> evaluate -> tables, figures
import os

from snakemake.utils import min_version

min_version("9.0")


# A preset given with --configfile replaces the embedded default instead of being merged
# into it (Snakemake's merge would keep the default's models, tasks and benchmarks). The
# default is config.yaml at the top; a working directory with config/config.yaml (the
# catalog's layout, as `--directory .test`) uses that instead.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml" if os.path.exists("config/config.yaml") else "config.yaml"


report: "workflow/report/workflow.rst"


# The tables and figures read JSON files and take seconds: under a cluster executor they run in the
# submitting process instead of waiting in the queue for a node of their own.
localrules:
    table1,
    table2,
    table5,
    lr_sweep,
    select_rates,
    select_glue_rates,
    study_table,
    figure,


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/decompose.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/glue.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"


rule all:
    """Every table and figure of the paper (the Quick start builds results/table2.csv alone)."""
    default_target: True
    input:
        paths.TABLE2,
        *([paths.TABLE1] if config["glue"]["tasks"] else []),
        paths.TABLE5,
        *[paths.STUDY_TABLE.format(table=t) for t in ("table3", "table4", "table6", "table7")],
        *[paths.FIGURE.format(figure=f"figure{n}") for n in range(2, 7)],
