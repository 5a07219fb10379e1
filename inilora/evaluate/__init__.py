"""Evaluation by the paper's protocols, one ``kind`` per benchmark family (docs/init-methods.md sec. 1e).

``kinds`` dispatches a benchmark spec; ``generate`` holds batched generation and the held-out
loss; ``extract`` and ``mathequiv`` read answers (GSM8K numbers, Hendrycks MATH equivalence);
``humaneval`` and ``mmlu`` are those benchmarks; ``sandbox`` runs untrusted code; ``job`` is the
workflow's evaluate stage.
"""
