"""Evaluation by the paper's protocols, one ``kind`` per benchmark family (docs/init-methods.md sec. 1e).

``kinds`` holds each kind's record (``@register_kind``) and runs a benchmark spec by it;
``generate`` holds batched generation and the held-out loss; ``extract`` and ``mathequiv`` read
answers (GSM8K numbers, Hendrycks MATH equivalence); ``humaneval`` and ``mmlu`` are those
benchmarks (generated code runs in :mod:`inilora.sandbox`); ``job`` is the workflow's evaluate stage.
"""
