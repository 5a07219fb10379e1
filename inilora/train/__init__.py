"""Fine-tuning with the transformers Trainer: ``sft`` (causal LMs), ``glue`` (encoders, Table 1),
``resume`` (pre-empted runs) and ``common`` (what both share)."""
