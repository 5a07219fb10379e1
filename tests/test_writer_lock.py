"""One writer per run folder: a second writer stops at once, naming the holder's pid and host."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from inilora.io import WRITER_LOCK, LockHeld, writer_lock

HOLD = "import sys, time\nfrom inilora.io import writer_lock\nwith writer_lock(sys.argv[1], 'finetune'):\n print('held', flush=True)\n time.sleep(600)"


def hold(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_stops_naming_the_holder_and_a_killed_holder_frees_the_folder(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(LockHeld, match=f"pid {holder.pid} on host {socket.gethostname()}"):
            with writer_lock(tmp_path, "finetune"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel releases the lock
        holder.wait()
    with writer_lock(tmp_path, "finetune"):
        assert json.loads((tmp_path / WRITER_LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / WRITER_LOCK).exists()  # a finished writer leaves only its artifacts


@pytest.mark.workflow  # two fine-tune processes: `make test`, not `make test-fast`
def test_an_orphaned_fine_tune_keeps_its_run_folder_and_the_rerun_stops_naming_it(tmp_path, tiny_llama_dir):
    """The case the lock is for: a job's shell killed with kill -9 leaves its Python child training
    into the run folder; the rerun of the job stops instead of training there too."""
    from inilora import config as cfg

    config = cfg.validate_schema(yaml.safe_load(yaml.safe_dump({
        "models": {"tiny": {"path": str(tiny_llama_dir)}}, "methods": ["lora"],
        "train": {"learning_rate": 1e-3, "batch_size": 2, "grad_accum": 1, "max_steps": 2000, "max_length": 64},
        "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 8, "seed": 1}],
                        "benchmarks": ["b"]}},
        "benchmarks": {"b": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 2}}}})))
    spec = cfg.finetune_spec(config, "tiny", "t", "lora", "4", "0.001", "1")
    manifest = tmp_path / "model.json"
    manifest.write_text(json.dumps({"name": "tiny", "path": str(tiny_llama_dir), "source": str(tiny_llama_dir)}))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "inilora", "finetune", "--spec", json.dumps(spec), "--manifest", str(manifest),
           "--adapter-dir", str(run / "adapter"), "--log-json", str(run / "train.json"), "--threads", "1"]
    # `; true`: the shell stays the parent (it would exec a lone command), as a job's shell does
    shell = subprocess.Popen(["sh", "-c", shlex.join(cmd) + " > /dev/null 2>&1; true"])
    lock = run / WRITER_LOCK
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.read_text()):
        time.sleep(0.2)
    orphan = json.loads(lock.read_text())["pid"]
    shell.send_signal(signal.SIGKILL)
    shell.wait()
    try:
        os.kill(orphan, 0)  # the child outlived its shell
        rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 2, rerun.stderr[-2000:]
        assert f"pid {orphan} on host {socket.gethostname()}" in rerun.stderr
        assert not (run / "train.json").exists()
    finally:
        os.kill(orphan, signal.SIGKILL)
