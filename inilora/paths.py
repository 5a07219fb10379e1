"""Every artifact path, spelled once. Snakemake rules use these patterns as they are."""

RESULTS = "results"

MODEL_MANIFEST = RESULTS + "/models/{model}/model.json"
MODEL_DIR = RESULTS + "/models/{model}/hf"

DECOMP_DIR = RESULTS + "/decompose/{model}/r{rank}_lr{lr}"
FACTORS = DECOMP_DIR + "/it{iters}.safetensors"
FACTORS_META = DECOMP_DIR + "/it{iters}.json"
DECOMP_BENCH = "results/benchmarks/decompose/{model}_r{rank}_lr{lr}.tsv"  # written by the decompose job: time, peak RSS

# {lr} is the fine-tuning learning rate (each method has its own, and a sweep has several)
RUN_DIR = RESULTS + "/finetune/{model}/{task}/{method}/r{rank}/lr{lr}/seed{seed}"
ADAPTER = RUN_DIR + "/adapter/adapter_model.safetensors"
TRAIN_LOG = RUN_DIR + "/train.json"
INITIAL_ADAPTER = RUN_DIR + "/initial_adapter/adapter_model.safetensors"  # the factors at step 0 (Figure 4)
MERGED = RUN_DIR + "/merged"  # optional: a standalone model folder, base + adapter merged

EVAL = RESULTS + "/eval/{model}/{task}/{method}/r{rank}/lr{lr}/seed{seed}/{bench}.json"
BASE_EVAL = RESULTS + "/eval/{model}/base/{bench}.json"

GLUE_RUN = RESULTS + "/glue/{model}/{task}/{method}/r{rank}/seed{seed}.json"
TABLE1 = RESULTS + "/table1.csv"
TABLE1_MD = RESULTS + "/table1.md"

TABLE5 = RESULTS + "/table5.csv"
TABLE5_MD = RESULTS + "/table5.md"
PAPER_TABLE5 = "workflow/reference/paper_table5.csv"

TABLE2 = RESULTS + "/table2.csv"
TABLE2_MD = RESULTS + "/table2.md"
LR_SWEEP = RESULTS + "/lr_sweep.csv"
LR_SWEEP_MD = RESULTS + "/lr_sweep.md"

# the paper's analyses: accuracy by rank (Tables 3, 4, 6, 7) and Figures 2-6
STUDY_TABLE = RESULTS + "/{table}.csv"
STUDY_TABLE_MD = RESULTS + "/{table}.md"
PAPER_TABLE = "workflow/reference/paper_{table}.csv"
FIGURE = RESULTS + "/{figure}.png"

LOGS = RESULTS + "/logs"
BENCHMARKS = RESULTS + "/benchmarks"

