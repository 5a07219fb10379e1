"""The workflow config, by concern: ``schema`` (types and defaults), ``checks`` (cross-key rules, one
function per section), ``methods`` (method names and the variant grammar), ``specs`` (each rule's job
spec), ``targets`` (the files each target needs), ``notes`` (what tables and figures say about
themselves) and ``precheck`` (ranks and target modules against each model's shapes).

The Snakefile imports this package as ``cfg``; every name below is part of that interface.
"""

from inilora.config.schema import ConfigError, SCHEMA, validate_schema  # noqa: F401
from inilora.config.methods import VARIANT_FORMS, factors_wildcards, figure2_iterations, fmt_lr, init_options, iteration_counts, method_lists, method_lr, method_options, method_train, parse_variant, resolve, run_options, variant, workflow_options  # noqa: F401
from inilora.config.specs import alpha, decompose_spec, decomposed_models, evaluate_spec, finetune_spec, glue_models, glue_spec, model_entry, task_entry  # noqa: F401
from inilora.config.targets import all_factors, figure_inputs, figure2_inputs, figure3_inputs, figure4_inputs, figure5_inputs, glue_inputs, glue_methods, glue_tuning_inputs, glue_tuning_on, lr_sweep_inputs, require, study_benchmark, study_evals, study_models, study_rank, study_runs, study_task, sweep_benchmarks, sweep_task, selected_rates, table2_inputs, table2_methods, table2_tasks, table4_tasks, table5_inputs, table_inputs, tuning_inputs, tuning_on, tuning_seeds  # noqa: F401
from inilora.config.table_specs import figure_spec, glue_selection_spec, lr_sweep_spec, paper_names, selection_spec, study_notes, study_spec, table1_spec, table2_spec  # noqa: F401
from inilora.config.checks import check, check_benchmarks, check_data, check_decompose, check_figures, check_glue, check_lr_sweep, check_methods, check_seeds, check_study, check_table2, check_tuning, data_specs, load  # noqa: F401
from inilora.config.resources import gpu_visible, local_gpu_cap, mem_mb, runtime_min  # noqa: F401
