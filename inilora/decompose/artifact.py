"""Decomposition artifacts: factors in PEFT naming plus a JSON of where they came from.

``{module}.lora_A.weight`` is A (r x in), ``{module}.lora_B.weight`` is B (out x r). The JSON
beside each file records the source model and a sha256 fingerprint of the weights it
approximated, so factors are never applied to other weights or another rank.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from inilora.io import IntegrityError, atomic_write, atomic_write_json, check_recorded_hash, file_sha256
from inilora.provenance import versions


def fingerprint(weights: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, shapes and fp32 bytes of the approximated weights."""
    h = hashlib.sha256()
    for name in sorted(weights):
        w = weights[name].detach().float().contiguous().cpu()
        h.update(f"{name}:{tuple(w.shape)};".encode())
        h.update(w.numpy().tobytes())
    return h.hexdigest()


def save_artifact(path_st, path_json, res: dict, meta: dict) -> None:
    """Factors in PEFT naming (``{module}.lora_A.weight`` r x in, ``.lora_B.weight`` out x r)."""
    from safetensors.torch import save_file

    tensors = {}
    for name in res["A"]:
        tensors[f"{name}.lora_A.weight"] = res["A"][name]
        tensors[f"{name}.lora_B.weight"] = res["B"][name]
    modules = {
        n: {
            "shape": [int(res["B"][n].shape[0]), int(res["A"][n].shape[1])],
            "mse": res["mse"][n],
            "optimum_mse": res["optimum"][n],
            "ratio_to_optimum": res["mse"][n] / res["optimum"][n] if res["optimum"][n] > 0 else float("inf"),
        }
        for n in sorted(res["A"])
    }
    ratios = [m["ratio_to_optimum"] for m in modules.values()]
    meta = {
        **meta,
        "sigma": res["sigma"],
        "mean_mse": sum(res["mse"].values()) / len(res["mse"]),
        "mean_optimum_mse": sum(res["optimum"].values()) / len(res["optimum"]),
        "mean_ratio_to_optimum": sum(ratios) / len(ratios),
        "max_ratio_to_optimum": max(ratios),
        "versions": versions(),
        "modules": modules,
        "curve": res["curve"],
    }
    atomic_write(path_st, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "inilora-factors"}))
    atomic_write_json(path_json, {**meta, "sha256": file_sha256(path_st)})  # checked on every load


class ArtifactError(ValueError):
    pass


def load_artifact(path_st) -> dict[str, dict[str, torch.Tensor]]:
    """{module: {"A": r x in, "B": out x r}} from a factors file; a damaged or altered file is refused:
    its sha256 must be the one its metadata recorded when it was written (also for a file read back
    from Snakemake's between-workflow cache)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path_st))
    except (SafetensorError, OSError) as e:
        raise ArtifactError(f"decomposition artifact {path_st} is unreadable (truncated or corrupted?): {e}; "
                            "delete it and rerun the decompose rule") from None
    try:
        check_recorded_hash(Path(path_st), Path(path_st).with_suffix(".json"), "sha256", "the decompose rule")
    except IntegrityError as e:
        raise ArtifactError(str(e)) from None
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in flat.items():
        name, which, _ = key.rsplit(".", 2)
        out.setdefault(name, {})["A" if which == "lora_A" else "B"] = t
    return out


def check_provenance(path_st, weights: dict[str, torch.Tensor], rank: int) -> dict:
    """Refuse factors computed for other weights or another rank (the JSON beside the file says).

    ``weights``: the target weights of the model in hand, by module name.
    """
    meta_path = Path(path_st).with_suffix(".json")
    if not meta_path.exists():
        raise ArtifactError(f"{path_st} has no metadata file {meta_path.name}; it cannot be checked, so it is not used")
    meta = json.loads(meta_path.read_text())
    if meta.get("rank") != rank:
        raise ArtifactError(f"{path_st} holds rank-{meta.get('rank')} factors; this run needs rank {rank}")
    stored = meta.get("model", {}).get("fingerprint")
    if stored is None:
        raise ArtifactError(f"{meta_path} records no weight fingerprint; recompute the decomposition")
    here = fingerprint({n: weights[n] for n in meta.get("modules", {}) if n in weights})
    if set(meta.get("modules", {})) != set(weights) or here != stored:
        raise ArtifactError(
            f"{path_st} was computed from other weights (model {meta['model'].get('name')!r} at "
            f"{meta['model'].get('path')!r}) than the model being initialised; refusing to use it"
        )
    return meta
