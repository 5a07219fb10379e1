# inilora: LoRA initialisations compared, IniLoRA first.
# prepare model -> decompose (IniLoRA factors, once) -> initialise + fine-tune -> evaluate -> tables
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/decompose.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        paths.TABLE2,
