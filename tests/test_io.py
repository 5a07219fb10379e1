"""A job killed with SIGKILL mid-write leaves no file under the final name."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from inilora.decompose import ArtifactError, load_artifact
from inilora.io import atomic_write, atomic_write_json

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from inilora.io import atomic_write

    def slow(tmp: Path):
        with open(tmp, "wb") as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            Path(sys.argv[2]).write_text("half written")
            time.sleep(60)  # killed here
            fh.write(b"y" * 1000)

    atomic_write(Path(sys.argv[1]), slow)
""")


def test_sigkill_mid_write_leaves_no_final_file(tmp_path):
    final, flag = tmp_path / "it100.safetensors", tmp_path / "flag"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(final), str(flag)])
    deadline = time.time() + 60
    while not flag.exists():
        assert time.time() < deadline and proc.poll() is None, "writer did not start"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not final.exists()  # only a hidden temp file is left, which nothing reads
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".it100.safetensors.")]
    with pytest.raises(ArtifactError, match="unreadable"):
        load_artifact(final)
    atomic_write_json(final.with_suffix(".json"), {"rerun": True})  # a rerun writes normally
    assert final.with_suffix(".json").read_text().strip().startswith("{")


def test_an_exception_mid_write_removes_the_temporary(tmp_path):
    def broken(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "table2.csv", broken)
    assert list(tmp_path.iterdir()) == []


DECOMPOSE_SPEC = {"model": "tiny", "target_modules": ["q_proj", "v_proj"], "rank": 4, "lr": 1e-2,
                  "iterations": 30000, "checkpoints": [3000 * k for k in range(1, 11)], "seed": 0,
                  "step_size": 5000, "gamma": 0.9, "device": "cpu", "early_stop_tol": None,
                  "weight_dtype": "float32", "chunk_mb": None}


def decompose_cmd(tiny_llama_dir, tmp_path):
    import json

    manifest = tmp_path / "model.json"
    manifest.write_text(json.dumps({"name": "tiny", "path": str(tiny_llama_dir), "source": str(tiny_llama_dir)}))
    return [sys.executable, "-m", "inilora", "decompose", "--spec", json.dumps(DECOMPOSE_SPEC),
            "--manifest", str(manifest), "--out-dir", str(tmp_path / "out"), "--threads", "1"]


def test_a_decomposition_killed_at_any_moment_leaves_nothing_a_rerun_would_accept(tiny_llama_dir, tmp_path):
    """SIGKILL a real decompose job at several moments (solving, writing); every artifact left under
    a final name must load and match the weights, and the rerun completes them all."""
    from inilora.decompose import check_provenance
    from inilora.models import load_causal_lm, target_linears

    weights = {n: m.weight for n, m in target_linears(load_causal_lm(str(tiny_llama_dir)), ["q_proj", "v_proj"]).items()}
    cmd = decompose_cmd(tiny_llama_dir, tmp_path)
    for delay in (1.0, 3.0, 4.5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for st in (tmp_path / "out").glob("it*.safetensors"):
            try:
                load_artifact(st)
                check_provenance(st, weights, 4)  # a file under its final name is whole and ours
            except ArtifactError:
                pass  # refused, with a message: a rerun recomputes it (never silently reused)
    subprocess.run(cmd, check=True, capture_output=True)
    for k in DECOMPOSE_SPEC["checkpoints"]:
        st = tmp_path / "out" / f"it{k}.safetensors"
        assert load_artifact(st) and check_provenance(st, weights, 4)["iterations"] == k
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no temporary left by the finished run
