"""Bad config values stop before any job, with a message naming the key, the value and what is allowed."""

import copy
import json
from pathlib import Path

import pytest
import yaml

from inilora import config as cfg

REPO = Path(__file__).resolve().parent.parent
DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())


def checked(mutate):
    config = copy.deepcopy(DEFAULT)
    mutate(config)
    return cfg.check(cfg.validate_schema(config))


def test_the_default_config_is_valid_and_gets_defaults():
    config = checked(lambda c: None)
    assert config["decompose"]["step_size"] == 5000 and config["lora"]["alpha"] == "rank"


@pytest.mark.parametrize("mutate,message", [
    (lambda c: c.update(methods=["lora", "dora"]), "config key 'methods': unknown method 'dora'; valid: ["),
    (lambda c: c.update(method_options={"pissa": {"niter": 4}}),
     "config key 'method_options.pissa': method 'pissa' got unknown option(s) ['niter']; valid: ['seed', 'svd_niter', "
     "'use_dora', 'use_rslora']"),
    (lambda c: c.update(method_options={"mica": {"use_dora": True}}, methods=["lora", "mica"]),
     "config key 'method_options.mica': method 'mica' option use_dora=True: PEFT has no DoRA form of MiCA"),
    (lambda c: c.update(methods=["lora", "orthogonal"], ranks=[8, 5]),
     "config key 'ranks': method 'orthogonal' needs even ranks; got [5] in [8, 5]"),
    (lambda c: c.update(method_options={"corda": {"corda_method": "xpm"}}),
     "config key 'method_options.corda': method 'corda' option corda_method='xpm': allowed is one of ['ipm', 'kpm']"),
    (lambda c: c.update(method_options={"lora_one": {"gamma": "big"}}),
     "config key 'method_options.lora_one': method 'lora_one' option gamma='big': allowed is a number"),
    (lambda c: c.update(method_options={"inilora": {"factors_path": "x"}}),
     "config key 'method_options.inilora': method 'inilora': the workflow sets ['factors_path'] itself"),
    (lambda c: c.update(seeds=[1, 1]), "config key 'seeds': duplicate seeds in [1, 1]"),
    (lambda c: c.update(ranks=[0]), "config key 'ranks.0': 0 is less than the minimum of 1"),
    (lambda c: c["decompose"].update(iterations=-5), "config key 'decompose.iterations': -5 is less than the minimum of 0"),
    (lambda c: c["decompose"].update(iterations=2.5), "config key 'decompose.iterations': 2.5 is not of type 'integer'"),
    (lambda c: c["decompose"].update(checkpoints=[100, 9000]),
     "an iteration count 9000 is above config key 'decompose.iterations' = 4000"),
    (lambda c: c["decompose"].update(lr=[0]), "config key 'decompose.lr.0': 0 is less than or equal to the minimum of 0"),
    (lambda c: c["train"].update(learning_rate=-1e-3), "config key 'train.learning_rate': -0.001 is less than or equal"),
    (lambda c: c["tasks"]["arithmetic"].update(benchmarks=["gsm8k"]),
     "config key 'tasks.arithmetic.benchmarks': unknown benchmark 'gsm8k'; defined: ['chain_sum', 'champ', 'gsm_symbolic', 'humaneval', 'mmlu_standin']"),
    (lambda c: c["benchmarks"]["chain_sum"].update(data={"loader": "hf", "path": "json", "data_files": "/no/such.jsonl"}),
     "config key 'benchmarks.chain_sum.data.data_files': file '/no/such.jsonl' does not exist"),
    (lambda c: c["benchmarks"]["chain_sum"]["data"].update(loader="csv"),
     "config key 'benchmarks.chain_sum.data.loader': 'csv' is not one of ['reasoning_gym', 'hf', 'math_hub'"),
    (lambda c: c.update(method_options={"inilora": {"decompose_lr": 1e-3}}),
     "config key 'method_options.inilora.decompose_lr': 0.001 is not one of decompose.lr ['0.0005']"),
    (lambda c: c.update(method_train={"dora": {"learning_rate": 1e-3}}),
     "config key 'method_train.dora': 'dora' is not in 'methods' ['lora', 'pissa', 'milora', 'inilora']"),
    (lambda c: c.update(method_train={"lora": {"lr": 1e-3}}), "config key 'method_train.lora': 'lr' is not one of ["),
    (lambda c: c.update(method_train={"lora": {"learning_rate": -1}}),
     "config key 'method_train.lora.learning_rate': -1 is less than or equal to the minimum of 0"),
    (lambda c: c.update(lr_sweep={"values": [1e-3], "methods": ["dora"]}),
     "config key 'lr_sweep.methods': unknown method 'dora'"),
    (lambda c: c.update(lr_sweep={"values": [1e-3], "task": "nope"}), "config key 'lr_sweep.task': unknown task 'nope'"),
    (lambda c: c.update(lr_sweep={"values": [0.0]}), "config key 'lr_sweep.values.0': 0.0 is less than or equal"),
    (lambda c: c["benchmarks"]["chain_sum"].update(kind="humaneval"),
     "config key 'benchmarks.chain_sum.data.loader': 'reasoning_gym' cannot feed a 'humaneval' benchmark; "
     "valid for humaneval: ['humaneval', 'humaneval_hub']"),
    (lambda c: c["benchmarks"]["humaneval"].update(samples=5),
     "config key 'benchmarks.humaneval.temperature': 0 (greedy) with samples = 5 repeats one output"),
    (lambda c: c["benchmarks"]["champ"].update(kind="essay"), "config key 'benchmarks.champ.kind': 'essay' is not one of"),
    (lambda c: c["glue"].update(model="bert-huge"), "config key 'glue.model': 'bert-huge' is not under 'encoders' ['minilm-l6']"),
    (lambda c: c["glue"].update(model=["minilm-l6", "bert-huge"]),
     "config key 'glue.model': 'bert-huge' is not under 'encoders' ['minilm-l6']"),
    (lambda c: c["glue"].update(model=["minilm-l6", "minilm-l6"]), "config key 'glue.model': duplicate encoders in"),
    (lambda c: c["glue"].update(model=None), "config key 'glue.model': null, but 'glue.tasks' lists tasks"),
    (lambda c: c["glue"].update(tasks=["cola", "wnli"]), "config key 'glue.tasks': unknown task 'wnli'; valid: ["),
    (lambda c: c.update(table2={"tasks": ["poetry"]}), "config key 'table2.tasks': unknown task 'poetry'; defined: ['arithmetic']"),
    (lambda c: c.update(typo_key=1), "config key '(top level)': Additional properties are not allowed ('typo_key'"),
    (lambda c: c.update(table3={"methods": ["lora", "inilora-std0.1"]}), "config key 'table3.methods': unknown method 'inilora-std0.1'"),
    (lambda c: c.update(table7={"methods": ["lora", "pissa-it0"]}), "config key 'table7.methods': unknown method 'pissa-it0'"),
    (lambda c: c.update(figure4={"methods": ["inilora_random-gamma"]}), "unknown method 'inilora_random-gamma'"),
    (lambda c: c.update(figure2={"iterations": [0, 5000]}), "config key 'figure2.iterations': 5000 is above config key 'decompose.iterations' = 4000; allowed: 0..4000"),
    (lambda c: c.update(figure2={"method": "pissa"}), "config key 'figure2.method': 'pissa' has no 'iterations' option; valid: ['inilora']"),
    (lambda c: c.update(figure3={"method": "lora"}), "config key 'figure3.method': 'lora' has no 'std' option"),
    (lambda c: c.update(study={"task": "poetry"}), "config key 'study.task': unknown task 'poetry'"),
    (lambda c: c.update(study={"models": ["llama2-7b"]}), "config key 'study.models': 'llama2-7b' is not under 'models' ['smollm2-135m']"),
    (lambda c: c.update(study={"benchmark": "gsm8k"}), "config key 'study.benchmark': unknown benchmark 'gsm8k'"),
    (lambda c: c.update(variants={"lora": {"method": "pissa"}}), "config key 'variants.lora': 'lora' is a registry method"),
    (lambda c: c.update(variants={"wide": {"method": "dora"}}), "config key 'variants.wide.method': unknown method 'dora'"),
    (lambda c: c.update(variants={"wide": {"method": "inilora_alpha", "options": {"sd": 1}}}, table3={"methods": ["wide"]}),
     "config key 'table3.methods': wide: method 'inilora_alpha' got unknown option(s) ['sd']"),
    (lambda c: c.update(tuning={"rates": [1e-3]}), "config key 'tuning.rates': [0.001] leaves nothing to choose"),
    (lambda c: c.update(tuning={"benchmarks": {"arithmetic": "champ"}}),
     "config key 'tuning.rates' is empty, but 'tuning.benchmarks' is set"),
    (lambda c: c.update(tuning={"rates": [1e-3, 1e-2]}),
     "config key 'tuning.benchmarks': no tuning benchmark for Table 2 task(s) ['arithmetic']"),
    (lambda c: c.update(tuning={"rates": [1e-3, 1e-2], "benchmarks": {"arithmetic": "chain_sum"}}),
     "config key 'tuning.benchmarks.arithmetic': 'chain_sum' is one of the task's test benchmarks"),
    (lambda c: c.update(tuning={"rates": [1e-3, 1e-2], "benchmarks": {"poetry": "x"}}),
     "config key 'tuning.benchmarks.poetry': 'poetry' is not a Table 2 task ['arithmetic']"),
    (lambda c: (c["tasks"]["arithmetic"].update(benchmarks=["chain_sum"]),
                c.update(tuning={"rates": [1e-3, 1e-2], "benchmarks": {"arithmetic": "humaneval"}})),
     "config key 'tuning.rule': heldout_loss, but the tuning benchmark 'humaneval' of task 'arithmetic' is of kind "
     "'humaneval', which scores no held-out loss; use rule 'headline'"),
    (lambda c: (c["tasks"]["arithmetic"].update(benchmarks=["chain_sum"]),
                c.update(tuning={"rates": [1e-3, 1e-2], "benchmarks": {"arithmetic": "champ"}, "rule": "loss"})),
     "config key 'tuning.rule': 'loss' is not one of ['heldout_loss', 'headline']"),
    (lambda c: (c["tasks"]["arithmetic"].update(benchmarks=["chain_sum"]),
                c.update(tuning={"rates": [1e-3, 1e-2], "benchmarks": {"arithmetic": "champ"}},
                         method_train={"lora": {"learning_rate": 1e-3}})),
     "config key 'method_train.lora.learning_rate': 0.001 is set by hand, but 'tuning.rates' chooses every method's rate"),
])
def test_bad_values_are_named(mutate, message):
    with pytest.raises(cfg.ConfigError) as err:
        checked(mutate)
    assert message in str(err.value)


def test_per_method_training_settings_override_the_shared_ones():
    config = checked(lambda c: c.update(method_train={"pissa": {"learning_rate": 5e-4}}))
    assert cfg.method_lr(config, "pissa") == "0.0005" and cfg.method_lr(config, "lora") == "0.002"
    assert any("/pissa/r8/lr0.0005/seed11/" in p for p in cfg.table2_inputs(config))
    spec = cfg.finetune_spec(config, "smollm2-135m", "arithmetic", "pissa", 8, "0.0005", 11)
    assert spec["train"]["learning_rate"] == 5e-4
    assert "pissa: trained with learning_rate 0.0005 (per-method setting)" in cfg.table2_spec(config)["notes"]


def test_tuning_plans_every_method_at_every_rate_on_its_tuning_items_and_table2_reads_the_choice(tmp_path):
    def tune(c):
        c["tasks"]["arithmetic"]["benchmarks"] = ["chain_sum"]
        c["tuning"] = {"rates": [1e-3, 1e-2], "benchmarks": {"arithmetic": "champ"}, "seeds": [11, 12]}
    config = checked(tune)
    inputs = cfg.tuning_inputs(config)
    assert len(inputs) == 4 * 2 * 2 and all(p.endswith("/champ.json") for p in inputs)
    assert sum("/pissa/r8/lr0.01/seed12/" in p for p in inputs) == 1
    chosen = {"selections": [{"model": "smollm2-135m", "task": "arithmetic", "method": m, "rank": 8, "chosen_lr": lr}
                             for m, lr in zip(config["methods"], [1e-3, 1e-2, 1e-2, 1e-3])]}
    (tmp_path / "selection.json").write_text(json.dumps(chosen))
    rates = cfg.selected_rates(tmp_path / "selection.json")
    table = [p for p in cfg.table2_inputs(config, rates) if "/base/" not in p]
    assert sorted({p.split("/")[4] + "@" + p.split("/")[6] for p in table}) == [
        "inilora@lr0.001", "lora@lr0.001", "milora@lr0.01", "pissa@lr0.01"]
    notes = cfg.table2_spec(config)["notes"]
    assert any(n.startswith("rates tuned per method (results/selection.json): of [0.001, 0.01], the lowest mean "
                            "held-out loss") for n in notes)
    assert any("fine-tuning: lr tuned per method" in n for n in notes)
    with pytest.raises(cfg.ConfigError, match="config key 'tuning.rates' is empty"):
        cfg.tuning_inputs(checked(lambda c: None))


def test_fast_pissa_takes_the_runs_seed_in_its_spec_and_rslora_dora_reach_every_init():
    config = checked(lambda c: c.update(method_options={"pissa": {"svd_niter": 4}},
                                        variants={"lora_rs": {"method": "lora", "options": {"use_rslora": True}},
                                                  "inilora_dora": {"method": "inilora", "options": {"use_dora": True}}},
                                        methods=["lora", "pissa", "lora_rs", "inilora_dora"]))
    spec = cfg.finetune_spec(config, "smollm2-135m", "arithmetic", "pissa", 8, "0.002", 12)
    assert spec["method_options"] == {"svd_niter": 4, "seed": 12}
    assert cfg.finetune_spec(config, "smollm2-135m", "arithmetic", "lora_rs", 8, "0.002", 12)["method_options"] == \
        {"use_rslora": True}
    assert cfg.finetune_spec(config, "smollm2-135m", "arithmetic", "inilora_dora", 8, "0.002", 12)["method_options"] \
        == {"use_dora": True}
    full = checked(lambda c: None)  # the full SVD draws nothing: no seed, the spec as it was
    assert cfg.finetune_spec(full, "smollm2-135m", "arithmetic", "pissa", 8, "0.002", 12)["method_options"] == {}


def test_an_empty_sweep_names_its_key_and_a_sweep_lists_each_rate():
    with pytest.raises(cfg.ConfigError, match="config key 'lr_sweep.values' is empty"):
        cfg.lr_sweep_inputs(checked(lambda c: c.update(lr_sweep={})))
    config = checked(lambda c: c.update(lr_sweep={"values": [1e-4, 2e-3]}))
    inputs = cfg.lr_sweep_inputs(config)
    assert len(inputs) == len(config["methods"]) * 2 * 5  # methods x rates x benchmarks (one seed)
    assert sum("/lora/r8/lr0.002/seed11/" in p for p in inputs) == 5  # the table's own lora runs, reused
    config = checked(lambda c: c.update(lr_sweep={"values": [1e-4, 2e-3], "benchmarks": ["chain_sum"]}))
    assert len(cfg.lr_sweep_inputs(config)) == len(config["methods"]) * 2
    with pytest.raises(cfg.ConfigError, match="config key 'lr_sweep.benchmarks': unknown benchmark 'gsm8k'"):
        checked(lambda c: c.update(lr_sweep={"values": [1e-4], "benchmarks": ["gsm8k"]}))
    with pytest.raises(cfg.ConfigError, match=r"config key 'lr_sweep.seeds': \[5\] are not all among 'seeds'"):
        checked(lambda c: c.update(lr_sweep={"values": [1e-4], "seeds": [5]}))


def test_two_table2_tasks_sharing_a_benchmark_are_refused_before_their_runs_mix():
    def shared(c):
        c["tasks"]["second"] = {**c["tasks"]["arithmetic"], "benchmarks": ["chain_sum"]}

    with pytest.raises(cfg.ConfigError, match="'chain_sum' is also a benchmark of task 'arithmetic'"):
        checked(shared)
    checked(lambda c: (shared(c), c.update(table2={"tasks": ["arithmetic"]})))  # one of them in the table: fine


def test_a_sweep_can_tune_on_its_own_seeds_and_items_and_still_drops_the_training_items():
    """The powered preset's protocol: tune on one seed and on items apart from the test set."""
    def tuning(c):
        c["seeds"] = [11, 12]
        c["benchmarks"]["tune"] = {**c["benchmarks"]["chain_sum"], "data": {**c["benchmarks"]["chain_sum"]["data"],
                                                                           "seed": 2002}}
        c.update(lr_sweep={"values": [1e-3], "benchmarks": ["tune"], "seeds": [11]})

    config = checked(tuning)
    inputs = cfg.lr_sweep_inputs(config)
    assert len(inputs) == len(config["methods"]) and all(p.endswith("/seed11/tune.json") for p in inputs)
    spec = cfg.evaluate_spec(config, "tune", "arithmetic")  # no task lists "tune": its own task's items go
    assert spec["exclude"] == config["tasks"]["arithmetic"]["train"]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_a_local_data_file_with_the_wrong_fields_is_refused_before_any_job(tmp_path, suffix):
    import pandas as pd

    f = tmp_path / f"MetaMathQA{suffix}"
    rows = pd.DataFrame([{"question": "What is 1 + 1?", "answer": "2"}])
    {".jsonl": lambda: rows.to_json(f, orient="records", lines=True), ".json": lambda: rows.to_json(f, orient="records"),
     ".csv": lambda: rows.to_csv(f, index=False), ".parquet": lambda: rows.to_parquet(f)}[suffix]()
    spec = {"loader": "hf", "preset": "metamathqa", "path": "json", "data_files": str(f)}
    with pytest.raises(cfg.ConfigError, match=r"config key 'tasks.arithmetic.train.0.data_files': '.*' lacks "
                                              r"field\(s\) \['query', 'response'\]; it has \['answer', 'question'\]"):
        checked(lambda c: c["tasks"]["arithmetic"].update(train=[spec]))
    good = {**spec, "question_field": "question", "response_field": "answer", "preset": None}
    good.pop("preset")
    checked(lambda c: c["tasks"]["arithmetic"].update(train=[good]))  # the right fields pass


def test_variant_names_resolve_to_a_method_with_options_and_a_point_equal_to_a_row_is_that_row():
    config = checked(lambda c: c.update(variants={"wide": {"method": "inilora_alpha", "options": {"std": 1.0}}}))
    assert cfg.resolve(config, "inilora-it0") == ("inilora", {"iterations": 0})
    assert cfg.resolve(config, "inilora_alpha-std1e-05") == ("inilora_alpha", {"std": 1e-5})
    assert cfg.resolve(config, "inilora_random-xavier_normal") == ("inilora_random", {"distribution": "xavier_normal"})
    assert cfg.resolve(config, "wide") == ("inilora_alpha", {"std": 1.0})
    assert cfg.variant(config, "inilora_alpha", "std", 0.5) == "inilora_alpha"  # its default std: the same run
    assert cfg.variant(config, "inilora", "iterations", 4000) == "inilora"  # decompose.iterations
    assert cfg.variant(config, "inilora", "iterations", 100) == "inilora-it100"
    assert cfg.factors_wildcards(config, "m", "inilora-it100", 8) == {"model": "m", "rank": "8", "dlr": "0.0005", "iters": "100"}
    assert 0 in cfg.iteration_counts(config)  # Table 7's inilora-it0: one decomposition writes it too
    spec = cfg.finetune_spec(config, "smollm2-135m", "arithmetic-n80", "inilora_alpha-std0.01", 8, "0.002", 11)
    assert spec["method"] == "inilora_alpha" and spec["variant"] == "inilora_alpha-std0.01"
    assert spec["method_options"] == {"std": 0.01} and spec["train_data"][0]["n"] == 80
    assert spec["train"]["max_steps"] == -1 and spec["train"]["epochs"] == 1  # Table 4: one epoch per size


def test_the_powered_preset_tunes_apart_from_its_test_items_and_has_the_pairs_its_size_needs():
    """workflow/presets/powered.yaml: the sweep (one seed, tuning items) and the comparison (4 seeds, at
    the chosen rates) are the plan its header states, and 4 x 396 pairs exceed the formula's 1026."""
    from inilora.report.stats import items_for, min_detectable_difference

    config = cfg.check(cfg.validate_schema(yaml.safe_load((REPO / "workflow/presets/powered.yaml").read_text())))
    sweep = cfg.lr_sweep_inputs(config)
    assert len(sweep) == 2 * 5 and all(p.endswith("/seed11/chain_sum_tune.json") for p in sweep)
    table = [p for p in cfg.table2_inputs(config) if "/base/" not in p]
    assert sorted({p.split("/")[6] for p in table}) == ["lr0.0005", "lr0.001"] and len(table) == 2 * 4
    assert all(p.endswith("/chain_sum.json") for p in table)
    assert cfg.evaluate_spec(config, "chain_sum_tune", "arithmetic")["exclude"] == config["tasks"]["arithmetic"]["train"]
    n = items_for(0.03, 16 / 255)  # lora at its chosen rate on the tuning items
    assert n == 1026 and len(config["seeds"]) * 396 >= n and min_detectable_difference(4 * 396, 16 / 255) < 0.025


def test_the_tuned_preset_tunes_five_methods_over_two_decades_on_items_apart_from_its_test_items():
    """workflow/presets/tuned.yaml: what its header states it runs."""
    from inilora.data import load_examples

    config = cfg.check(cfg.validate_schema(yaml.safe_load((REPO / "workflow/presets/tuned.yaml").read_text())))
    rates = config["tuning"]["rates"]
    assert len(rates) >= 5 and max(rates) / min(rates) >= 100 and config["tuning"]["rule"] == "heldout_loss"
    methods = cfg.table2_methods(config)
    assert {"lora", "pissa", "milora", "inilora"} <= set(methods) and set(methods) & {"loraga", "lora_one", "eva", "corda"}
    tuning = cfg.tuning_inputs(config)
    assert len(tuning) == len(methods) * len(rates) and all(p.endswith("/seed11/chain_sum_tune.json") for p in tuning)
    questions = {b: {ex.question for ex in load_examples(config["benchmarks"][b]["data"])}
                 for b in ("chain_sum", "chain_sum_tune")}
    assert not questions["chain_sum"] & questions["chain_sum_tune"]
