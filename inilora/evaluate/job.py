"""The workflow's evaluate stage: one model (base, or base + a fine-tuned adapter) on one benchmark."""

from __future__ import annotations

import logging
from pathlib import Path

from inilora import devices, models
from inilora.data import load_examples
from inilora.evaluate.generate import COUNTS, vllm_generator
from inilora.evaluate.kinds import KINDS, check_containment, run_benchmark
from inilora.io import atomic_write_json

log = logging.getLogger(__name__)


def generations_path(out: Path) -> Path:
    """Where a HumanEval job saves its completions before scoring them: beside its result JSON."""
    return out.with_name(out.stem + ".generations.jsonl")


def run(spec: dict, manifest: Path, out: Path, adapter_dir: str | None = None, workers: int = 2) -> None:
    """1) load the base (and merge the adapter), 2) drop items seen in training, 3) score by the
    benchmark's ``kind``, 4) write the result JSON with every generation or choice."""
    kind = KINDS[spec.get("kind", "numeric")]
    if kind.sandboxed:  # no model is loaded for checks that could not be contained
        check_containment(spec.get("containment", "auto"), f"benchmarks.{spec['benchmark']}.containment")
    device = devices.resolve(spec.get("device", "auto"))
    dtype = devices.dtype(spec.get("dtype", "auto"), device)
    if adapter_dir:  # an altered adapter is refused before anything is loaded
        models.check_adapter(adapter_dir)
    info = models.read_manifest(manifest)
    tok = models.load_tokenizer(info["path"])
    model = models.load_causal_lm(info["path"])
    if adapter_dir:  # merged in fp32, then rounded with the base
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model = model.to(device=device, dtype=dtype)
    seen = {ex.question for d in spec.get("exclude", []) for ex in load_examples(d)}
    gen = None
    if spec.get("backend") == "vllm" and kind.generates:
        import tempfile

        folder = info["path"]
        if adapter_dir:  # vLLM reads a plain folder: the adapter merged into the base
            folder = tempfile.mkdtemp(prefix=".vllm-merged.", dir=out.parent)
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
        gen = vllm_generator(folder, spec.get("seed", 0))
    with devices.JobStats(device, dtype) as stats:
        result = run_benchmark(model, tok, spec, seen, workers=workers, gen=gen,
                               generations_path=generations_path(out))
    runtime = stats.record(generated_tokens=COUNTS["generated_tokens"] if gen is None else None, items=result.get("n"))
    atomic_write_json(out, {"benchmark": spec["benchmark"], "label": spec.get("label", spec["benchmark"]),
                            "kind": kind.name, "adapter": adapter_dir, **result, "runtime": runtime})
    log.info("%s: %s", spec["benchmark"], ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()))
