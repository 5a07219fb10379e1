"""The cluster profiles' submit lines, against stub scheduler commands on PATH: PBS's qsub (no PBS
server is packaged here), and SLURM's sbatch beside the live-cluster tests of test_slurm_live.py."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.workflow  # runs Snakemake in a subprocess: `make test`, not `make test-fast`

REPO = Path(__file__).resolve().parent.parent

STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$(basename "$0")" in
  sbatch) echo 4242 ;;
  sacct) echo "4242|RUNNING|0:0" ;;
  squeue) echo "4242 RUNNING" ;;
  sacctmgr|sshare) echo lab ;;
esac
"""


def submissions(cmd, env, log, submit: str) -> list[str]:
    """Run Snakemake against stub scheduler commands until the first submission is logged; the stub
    job never finishes, so the submission is what is checked. Returns every ``submit`` line."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and submit in log.read_text():
            time.sleep(1)  # let a (wrong) second submission show up too
            break
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    return [line for line in log.read_text().splitlines() if line.startswith(submit)]


def test_slurm_profile_requests_gpus_time_and_memory_per_rule(tmp_path, tiny_llama_dir):
    log = tmp_path / "slurm.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "sacct", "squeue", "sinfo", "scontrol", "sacctmgr", "sshare", "scancel"):
        (bin_dir / tool).write_text(STUB.format(log=log))
        (bin_dir / tool).chmod(0o755)
    config = {"models": {"tiny": {"path": str(tiny_llama_dir)}}, "methods": ["inilora"], "ranks": [4],
              "decompose": {"iterations": 10, "lr": [1e-2]},
              "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 4}],
                              "benchmarks": ["b"]}},
              "benchmarks": {"b": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 2}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    manifest = tmp_path / "results/models/tiny/model.json"  # prepared already: the next job is a GPU one
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"name": "tiny", "path": str(tiny_llama_dir), "source": str(tiny_llama_dir)}))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--workflow-profile", "none", "--profile", str(REPO / "workflow/profiles/slurm"),
           "--default-resources", "slurm_partition=gpu", "slurm_account=lab",
           "--slurm-init-seconds-before-status-checks", "1",
           "results/decompose/tiny/r4_lr0.01/it10.safetensors", "--configfile", str(tmp_path / "c.yaml")]
    calls = submissions(cmd, env, log, "sbatch")
    assert len(calls) == 1, log.read_text()
    sbatch = calls[0]
    from inilora import config as cfg

    full = cfg.validate_schema(yaml.safe_load((tmp_path / "c.yaml").read_text()))
    minutes, mb = cfg.runtime_min(full, "decompose", "tiny"), cfg.mem_mb(full, "decompose", "tiny")  # the rule's own
    cpus = full["threads"]  # a job's CPUs are its rule's threads, the config key `threads`
    for expected in ("-p gpu", "-A lab", f"-t {minutes}", f"--mem {mb}", "--gpus=1", f"--cpus-per-task={cpus}"):
        assert expected in sbatch, (expected, sbatch)
    assert "slurm_extra" not in sbatch


def test_pbs_profile_submits_with_the_rules_memory_time_cpus_and_gpus(tmp_path, tiny_llama_dir):
    """The cluster-generic profile (PBS's qsub line), against a stub qsub that logs its arguments."""
    from inilora import config as cfg

    log = tmp_path / "qsub.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qsub").write_text(f'#!/bin/sh\necho "qsub $*" >> "{log}"\necho 4242.pbs\n')
    (bin_dir / "qsub").chmod(0o755)
    config = {"models": {"tiny": {"path": str(tiny_llama_dir)}}, "methods": ["inilora"], "ranks": [4],
              "decompose": {"iterations": 10, "lr": [1e-2]},
              "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 4}], "benchmarks": ["b"]}},
              "benchmarks": {"b": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 2}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    manifest = tmp_path / "results/models/tiny/model.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"name": "tiny", "path": str(tiny_llama_dir), "source": str(tiny_llama_dir)}))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--workflow-profile", "none", "--profile", str(REPO / "workflow/profiles/cluster-generic"),
           "results/decompose/tiny/r4_lr0.01/it10.safetensors", "--configfile", str(tmp_path / "c.yaml")]
    calls = submissions(cmd, env, log, "qsub")
    assert len(calls) == 1, log.read_text()
    full = cfg.validate_schema(yaml.safe_load((tmp_path / "c.yaml").read_text()))
    minutes, mb = cfg.runtime_min(full, "decompose", "tiny"), cfg.mem_mb(full, "decompose", "tiny")
    for expected in ("-N smk-decompose", f"select=1:ncpus={full['threads']}:mem={mb}mb:ngpus=1", f"walltime=00:{minutes}:00"):
        assert expected in calls[0], (expected, calls[0])
