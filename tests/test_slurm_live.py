"""The SLURM profile against a live scheduler: the one-machine cluster of ``make slurm-up``
(slurmctld, slurmd, slurmdbd on MariaDB, 2 placeholder GPUs, cgroup memory enforcement).

One fixture submits every workflow at once, as a cluster would run them side by side, and the tests
read what SLURM's accounting and the artifacts say:

- ``table``: a small table2 from a prepared model (decompose, finetune, evaluate, evaluate_base), every
  computing job a SLURM job and the table itself a local rule, the decomposition written to the
  between-workflow cache; beside it the same config run locally, whose table must be the same digit
  for digit;
- ``oom``: prepare_model, then a two-GPU (torchrun, gloo) fine-tune whose first attempt asks for 300 MB
  (``test_first_attempt_mem_mb``): SLURM kills it, the retry asks for the doubled computed memory;
- ``preempt``: a fine-tune stopped (SIGSTOP) and cancelled with ``scancel`` once it has written a
  checkpoint; the retry resumes from it, and its adapter equals an uninterrupted local run's;
- ``second``: another working directory, started once the table's decomposition is cached, that takes the
  decomposition from the cache, and whose fine-tune stops because another process holds its run folder's
  writer lock.

The whole set takes about as long as the table's chain of four jobs (each job's two Snakemake start-ups
and its torch imports, then seconds of work), the other scenarios filling the node's second slot.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.workflow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 900  # seconds for the whole set of workflows


def cluster_problem() -> str | None:
    """Why no live SLURM cluster answers here, or None."""
    if not shutil.which("sbatch") or not shutil.which("sacct"):
        return "SLURM's client commands are not installed"
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
        acct = subprocess.run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], capture_output=True,
                              text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo or sacctmgr did not answer within 20 s"
    if state.returncode != 0 or not state.stdout.strip():
        return f"sinfo: {state.stderr.strip() or 'no node'}"
    if not any(s in state.stdout for s in ("idle", "mixed", "alloc")):
        return f"no node is up (sinfo: {state.stdout.split()})"
    if acct.returncode != 0 or not acct.stdout.strip():
        return f"no accounting (sacctmgr: {acct.stderr.strip()})"
    return None


@pytest.fixture(scope="module")
def live_cluster():
    problem = cluster_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the live SLURM cluster, and {problem}; .ci/run starts it with `make slurm-up`")
        pytest.skip(f"no live SLURM cluster ({problem}); start one with `make slurm-up` (root)")


def tiny_config(model_dir: Path, **over) -> dict:
    config = {"models": {"tiny": {"path": str(model_dir)}}, "methods": ["lora", "inilora"], "ranks": [4], "seeds": [1],
              "threads": 1,
              "decompose": {"iterations": 30, "lr": [1e-2]},
              "train": {"learning_rate": 1e-3, "batch_size": 2, "grad_accum": 1, "max_steps": 2, "max_length": 64},
              "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 8, "seed": 1}],
                              "benchmarks": ["b"]}},
              "benchmarks": {"b": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 4, "seed": 9},
                                   "max_new_tokens": 4}}}
    for key, value in over.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    return config


def write_workdir(root: Path, name: str, config: dict, prepared: Path | None = None) -> tuple[Path, Path]:
    """A working directory with its config; ``prepared``: the model manifest written as prepare_model
    writes it for a local folder, so the scenario starts at the job it is about."""
    work = root / name
    work.mkdir()
    configfile = work / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    if prepared:
        manifest = work / "results/models/tiny/model.json"
        manifest.parent.mkdir(parents=True)
        manifest.write_text(json.dumps({"name": "tiny", "path": str(prepared), "source": str(prepared), "note": ""}))
    return work, configfile


def snakemake_cmd(work: Path, configfile: Path, *targets: str, slurm: bool = True, extra=()) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work)]
    if slurm:
        cmd += ["--workflow-profile", "none", "--profile", str(REPO / "workflow/profiles/slurm"),
                "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs"]
    else:
        cmd += ["--cores", "2"]
    return [*cmd, *targets, *extra, "--configfile", str(configfile)]  # --cache takes every word up to the next flag


def start(cmd, log: Path, env=None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


RUN = "results/finetune/tiny/t/lora/r4/lr0.001/seed1"


def sacct(workdirs: dict[str, Path]) -> dict[str, list[dict]]:
    """Every allocation (not its steps) that ran in each of ``workdirs``, oldest first, by scenario."""
    fields = ["JobID", "JobName", "State", "ReqMem", "Timelimit", "AllocTRES", "Elapsed", "WorkDir", "Comment"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-2hours", "--format", ",".join(fields)],
                         capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
    steps = subprocess.run(["sacct", "-n", "-P", "-S", "now-2hours", "--format", "JobID,State"],
                           capture_output=True, text=True, check=True).stdout
    for r in rows:  # the states of its steps: batch, and the srun step that ran the rule
        r["steps"] = [line.split("|")[1] for line in steps.splitlines() if line.startswith(r["JobID"] + ".")]
    return {name: [r for r in rows if Path(r["WorkDir"]).resolve() == work.resolve()] for name, work in workdirs.items()}


def queue(work: Path) -> list[dict]:
    """The jobs slurmctld knows (running, or finished within MinJobAge) that run in ``work``, oldest first:
    its own view, without accounting's delay."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%Z|%k"], capture_output=True, text=True,
                         check=True).stdout
    rows = [dict(zip(["JobID", "State", "WorkDir", "Comment"], line.split("|"))) for line in out.splitlines()]
    return sorted((r for r in rows if Path(r["WorkDir"]).resolve() == work.resolve()), key=lambda r: int(r["JobID"]))


def rule_of(row: dict) -> str:
    """The rule a job ran, from the comment the plugin submits: ``rule_<name>_wildcards_<...>``."""
    return row["Comment"].removeprefix("rule_").split("_wildcards_")[0]


@pytest.fixture(scope="module")
def runs(live_cluster, tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("slurm")
    cache = root / "cache"
    cache.mkdir()
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": str(cache)}
    table_cfg = tiny_config(tiny_llama_dir, methods=["inilora"])
    table, table_c = write_workdir(root, "table", table_cfg)
    local, local_c = write_workdir(root, "local", table_cfg)
    # prepare_model meets SLURM here, off the table's chain of jobs
    oom_cfg = tiny_config(tiny_llama_dir, methods=["lora"], train={"gpus": 2}, test_first_attempt_mem_mb={"finetune": 300})
    oom, oom_c = write_workdir(root, "oom", oom_cfg)
    # 6 to 35 ms a step on 2-core machines: the first checkpoint comes at 2% of the run
    preempt_cfg = tiny_config(tiny_llama_dir, methods=["lora"], train={"max_steps": 400, "checkpoint_steps": 25})
    preempt, preempt_c = write_workdir(root, "preempt", preempt_cfg, tiny_llama_dir)
    reference, reference_c = write_workdir(root, "reference", preempt_cfg, tiny_llama_dir)
    second, second_c = write_workdir(root, "second", tiny_config(tiny_llama_dir))  # lora and inilora
    # tune, then compare: the tuning jobs through SLURM, the checkpoint in the submitting process, then
    # the comparison's jobs planned from its choice
    tuned_cfg = tiny_config(tiny_llama_dir, methods=["lora"], table2={"include_base": False},
                            tuning={"rates": [1e-3, 3e-2], "benchmarks": {"t": "tune"}, "resamples": 200},
                            benchmarks={"tune": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 4,
                                                          "seed": 7}, "max_new_tokens": 4}})
    tuned, tuned_c = write_workdir(root, "tuned", tuned_cfg, tiny_llama_dir)
    from inilora.models import prepare

    # the manifest as prepare_model writes it: inside a job the cache key hashes its content
    for work in (table, second):
        prepare("tiny", str(tiny_llama_dir), work / "results/models/tiny", work / "results/models/tiny/model.json")

    began = time.time()
    procs = {
        "table": start(snakemake_cmd(table, table_c, "results/table2.csv", extra=["--cache", "decompose"]),
                       root / "table.log", env),
        "oom": start(snakemake_cmd(oom, oom_c, f"{RUN}/train.json"), root / "oom.log"),
        "local": start(snakemake_cmd(local, local_c, "results/table2.csv", slurm=False), root / "local.log"),
        "preempt": start(snakemake_cmd(preempt, preempt_c, f"{RUN}/train.json"), root / "preempt.log"),
        "reference": start(snakemake_cmd(reference, reference_c, f"{RUN}/train.json", slurm=False),
                           root / "reference.log"),
        "tuned": start(snakemake_cmd(tuned, tuned_c, "results/table2.csv"), root / "tuned.log"),
    }
    # Pre-empt the fine-tune once its first checkpoint is complete (marked), as a scheduler's
    # pre-emption would: scancel of its SLURM job. Meanwhile, start the second workflow once the
    # first has cached the decomposition; a process outside SLURM holds its fine-tune's run folder.
    running = cancelled = holder = None
    marks = preempt / RUN / "trainer"
    while time.time() - began < TIMEOUT:
        to_cancel = cancelled is None and procs["preempt"].poll() is None
        if to_cancel and running is None:  # its job id first, so that the cancel follows the checkpoint at once
            rows = [r for r in queue(preempt) if r["State"] == "RUNNING"]
            running = rows[0]["JobID"] if rows else None
        elif to_cancel and any(marks.glob("checkpoint-*/inilora_resume.json")):
            stop_training(running)
            subprocess.run(["scancel", running], check=True)
            cancelled = running
        to_start = holder is None and procs["table"].poll() is None
        if to_start and any(rule_of(r) == "decompose" and r["State"] == "COMPLETED" for r in queue(table)):
            holder = start_second(second, second_c, env, root)
            procs["second"], to_start = holder.workflow, False
        if not (to_cancel or to_start):
            break
        time.sleep(0.05)
    try:
        codes = {name: p.wait(timeout=max(1, TIMEOUT - (time.time() - began))) for name, p in procs.items()}
    finally:
        if holder is not None:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    seconds = time.time() - began
    logs = {name: (root / f"{name}.log").read_text() for name in procs}
    dirs = {"table": table, "oom": oom, "preempt": preempt, "second": second, "local": local, "tuned": tuned}
    jobs = sacct(dirs)
    print(f"\nall workflows done in {seconds:.0f} s; exit codes {codes}")
    for name, rows in jobs.items():  # what a reader of the run wants to see: sacct's own listing
        for r in rows:
            print(f"{name:8} {r['JobID']:>5} {rule_of(r):14} {r['State']:15} {r['ReqMem']:>7} {r['Timelimit']:>9} "
                  f"{r['AllocTRES']:48} {r['Elapsed']} steps={','.join(r['steps'])}")
    return {"root": root, "codes": codes, "logs": logs, "dirs": dirs, "jobs": jobs, "cancelled": cancelled,
            "holder": holder.pid if holder else None, "configs": {"table": table_cfg, "oom": oom_cfg}, "reference": reference,
            "cache": cache, "seconds": seconds}


def stop_training(job: str) -> list[int]:
    """SIGSTOP the fine-tune process of SLURM job ``job`` (``scontrol listpids``): the moment of the
    pre-emption, pinned whatever the CPU's speed.

    A cancelled job's task (the Snakemake that runs the rule) gets SIGCONT and SIGTERM and waits for
    its rule; slurmd SIGKILLs every process of the job max(KillWait, 5) s later (``_rpc_terminate_job``
    in SLURM 22.05). Left running, the fine-tune trains on through that grace, and on a fast CPU
    (6 ms a step here) it finishes inside it: the cancelled job still counts as failed, and its
    retry has nothing to resume. Stopped, it is SIGKILLed where it stood, as a job pre-empted at that
    step; SLURM's SIGCONT goes to the task alone."""
    out = subprocess.run(["scontrol", "listpids", job], capture_output=True, text=True, check=True).stdout
    stopped = []
    for pid in [int(line.split()[0]) for line in out.splitlines()[1:] if line.split()]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"inilora" in argv and b"finetune" in argv:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
    assert stopped, f"no fine-tune process in job {job}: {out}"
    return stopped


def start_second(second: Path, configfile: Path, env: dict, root: Path) -> subprocess.Popen:
    """The writer-lock holder of the second workflow's fine-tune (returned), and that workflow
    (its ``workflow`` attribute), which takes the decomposition from the cache."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from inilora.io import writer_lock\n"
                               "with writer_lock(sys.argv[1], 'finetune'):\n print('held', flush=True); time.sleep(600)",
                               str(second / RUN)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.workflow = start(snakemake_cmd(second, configfile, "results/decompose/tiny/r4_lr0.01/it30.safetensors",
                                          f"{RUN}/train.json", extra=["--cache", "decompose", "--keep-going",
                                                                      "--retries", "0"]),
                            root / "second.log", env)
    return holder


def ok(runs, name: str) -> None:
    assert runs["codes"][name] == 0, runs["logs"][name][-4000:]


def test_a_table_through_the_scheduler_equals_the_local_one_and_sacct_shows_what_each_rule_computed(runs):
    from inilora import config as cfg

    ok(runs, "table")
    ok(runs, "local")
    work = runs["dirs"]["table"]
    assert (work / "results/table2.csv").read_text() == (runs["dirs"]["local"] / "results/table2.csv").read_text()
    jobs = runs["jobs"]["table"]
    rules = sorted(rule_of(r) for r in jobs)
    # every job of the table (from a prepared model) is a SLURM job, each completed at its first attempt
    assert rules == sorted(["decompose", "finetune", "evaluate", "evaluate_base"]), jobs
    assert "localrule table2:" in runs["logs"]["table"]  # the table reads JSON files in the submitting process
    assert all(r["State"] == "COMPLETED" for r in jobs), jobs
    (prepared,) = [r for r in runs["jobs"]["oom"] if rule_of(r) == "prepare_model"]  # the other scenario's
    assert prepared["State"] == "COMPLETED", prepared
    gpu_rules = {"decompose", "finetune", "evaluate", "evaluate_base"}
    for r, config in [*((r, runs["configs"]["table"]) for r in jobs), (prepared, runs["configs"]["oom"])]:
        full = cfg.validate_schema(config)
        rule = rule_of(r)
        tres = dict(kv.split("=", 1) for kv in r["AllocTRES"].split(","))
        kw = {"task": "t"} if rule == "finetune" else {"bench": "b"} if rule.startswith("evaluate") else {}
        mb, minutes, cpus = cfg.mem_mb(full, rule, "tiny"), cfg.runtime_min(full, rule, "tiny", **kw), 1
        assert r["ReqMem"] == f"{mb}M" and tres["mem"] == f"{mb}M", r
        assert r["Timelimit"] == time.strftime("%H:%M:%S", time.gmtime(minutes * 60)), r
        assert tres["cpu"] == str(cpus), r
        assert tres.get("gres/gpu") == ("1" if rule in gpu_rules else None), r


def test_tune_then_compare_submits_the_tuning_jobs_selects_in_the_submitting_process_then_submits_the_comparison(runs):
    ok(runs, "tuned")
    work = runs["dirs"]["tuned"]
    (s,) = json.loads((work / "results/selection.json").read_text())["selections"]
    chosen = f"{s['chosen_lr']:g}"
    jobs = runs["jobs"]["tuned"]
    assert all(r["State"] == "COMPLETED" for r in jobs), jobs
    # SLURM ran a fine-tune and a tuning evaluation at each rate, then the test evaluation at the chosen one
    assert sorted(rule_of(r) for r in jobs) == ["evaluate"] * 3 + ["finetune"] * 2, jobs
    values = {}  # the wildcard values of each rule's jobs, from the comment the plugin submits
    for r in jobs:
        values.setdefault(rule_of(r), []).append(set(r["Comment"].split("_wildcards_")[1].split("_")))
    assert sorted(sorted(v & {"0.001", "0.03"}) for v in values["finetune"]) == [["0.001"], ["0.03"]], jobs
    (test_eval,) = [v for v in values["evaluate"] if "b" in v]
    assert chosen in test_eval and sum("tune" in v for v in values["evaluate"]) == 2, jobs
    log = runs["logs"]["tuned"]
    assert "localcheckpoint select_rates:" in log or "checkpoint select_rates:" in log, log[-3000:]
    assert "localrule table2:" in log
    table = pd.read_csv(work / "results/table2.csv")
    assert table["lr"].tolist() == [s["chosen_lr"]] and table["tuned:stability"].tolist() == [s["stability"]]


def test_a_gpu_job_gets_the_gres_slurm_gave_it_and_records_that_it_ran_on_the_cpu(runs):
    ok(runs, "table")
    results = runs["dirs"]["table"] / "results"
    records = [json.loads((results / "decompose/tiny/r4_lr0.01/it30.json").read_text())["runtime"],
               json.loads((results / "eval/tiny/base/b.json").read_text())["runtime"],
               json.loads((results / "finetune/tiny/t/inilora/r4/lr0.001/seed1/train.json").read_text())["runtime"]]
    for r in records:
        assert r["device"] == "cpu" and r["gpus_granted"] in ("0", "1"), r  # CUDA_VISIBLE_DEVICES from the gres
    from inilora import paths

    log = Path(runs["dirs"]["table"]) / paths.LOG["evaluate_base"].format(model="tiny", bench="b")
    assert "the scheduler granted GPU(s)" in log.read_text() and "running on the CPU" in log.read_text()


def test_a_job_killed_for_memory_is_retried_with_the_doubled_memory_and_completes_under_torchrun(runs):
    from inilora import config as cfg

    ok(runs, "oom")
    jobs = [r for r in runs["jobs"]["oom"] if rule_of(r) == "finetune"]
    # the kernel's OOM killer ended the step over its cgroup limit; the allocation then reads
    # OUT_OF_MEMORY, or FAILED when the batch step (Snakemake itself) stayed under the limit
    assert "OUT_OF_MEMORY" in [jobs[0]["State"], *jobs[0]["steps"]] and len(jobs) == 2, jobs
    assert jobs[1]["State"] == "COMPLETED", jobs
    full = cfg.validate_schema(yaml.safe_load((runs["dirs"]["oom"] / "config.yaml").read_text()))
    computed = cfg.mem_mb({**full, "test_first_attempt_mem_mb": {}}, "finetune", "tiny")  # attempt 1 without the override
    retry = cfg.mem_mb(full, "finetune", "tiny", attempt=2)
    assert jobs[0]["ReqMem"] == "300M" and jobs[1]["ReqMem"] == f"{retry}M"
    assert abs(retry - 2 * computed) <= 1
    # train.gpus: 2 is one job asking for 2 GPUs, running the torchrun command (gloo on this CPU)
    assert all("gres/gpu=2" in r["AllocTRES"] for r in jobs), jobs
    log = json.loads((runs["dirs"]["oom"] / RUN / "train.json").read_text())
    assert log["world_size"] == 2 and log["steps"] == 2
    assert "torch.distributed.run --standalone --nproc_per_node 2" in runs["logs"]["oom"]


def test_a_preempted_fine_tune_resumes_from_its_checkpoint_and_ends_with_the_uninterrupted_adapter(runs):
    from safetensors.torch import load_file

    ok(runs, "preempt")
    assert runs["cancelled"], "the fine-tune finished before a checkpoint could be pre-empted"
    jobs = [r for r in runs["jobs"]["preempt"] if rule_of(r) == "finetune"]
    # sacct says "CANCELLED by <uid>"; the profile reads states from squeue, which says CANCELLED
    assert len(jobs) == 2 and jobs[0]["State"].startswith("CANCELLED") and jobs[1]["State"] == "COMPLETED", jobs
    assert jobs[0]["JobID"] == runs["cancelled"]
    log = json.loads((runs["dirs"]["preempt"] / RUN / "train.json").read_text())
    steps = yaml.safe_load((runs["dirs"]["preempt"] / "config.yaml").read_text())["train"]["max_steps"]
    assert log["resumed_from"] and log["resumed_from"].startswith("checkpoint-") and log["steps"] == steps, log
    assert 0 < int(log["resumed_from"].split("-")[1]) < steps
    resumed = load_file(runs["dirs"]["preempt"] / RUN / "adapter/adapter_model.safetensors")
    straight = load_file(runs["reference"] / RUN / "adapter/adapter_model.safetensors")
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert (resumed[name] == straight[name]).all(), name


def test_a_second_workflow_takes_the_decomposition_from_the_cache_through_slurm(runs):
    """Under a cluster executor Snakemake consults the cache inside the job: the second workflow's
    decompose job is submitted, links the cached factors and solves nothing."""
    def job_log(name):
        (row,) = [r for r in runs["jobs"][name] if rule_of(r) == "decompose"]
        assert row["State"] == "COMPLETED", row
        return next((runs["dirs"][name] / ".snakemake/slurm_logs/rule_decompose").rglob(f"{row['JobID']}.log")).read_text()

    assert "Moving output file results/decompose/tiny/r4_lr0.01/it30.safetensors to cache" in job_log("table")
    assert "Symlinking output file results/decompose/tiny/r4_lr0.01/it30.safetensors from cache" in job_log("second")
    from inilora import paths

    solver_log = runs["dirs"]["second"] / paths.LOG["decompose"].format(model="tiny", rank=4, dlr="0.01")
    assert not solver_log.exists() or "target weights" not in solver_log.read_text()  # no weights read
    factors = runs["dirs"]["second"] / "results/decompose/tiny/r4_lr0.01/it30.safetensors"
    first = runs["dirs"]["table"] / "results/decompose/tiny/r4_lr0.01/it30.safetensors"
    assert factors.read_bytes() == first.read_bytes()


def test_a_second_writer_of_a_run_folder_stops_under_slurm_naming_the_holder(runs):
    jobs = [r for r in runs["jobs"]["second"] if rule_of(r) == "finetune"]
    assert [r["State"] for r in jobs] == ["FAILED"], jobs
    assert runs["codes"]["second"] != 0
    log = (runs["dirs"]["second"] / "results/logs/finetune").glob("*.log")
    text = "\n".join(p.read_text() for p in log)
    assert f"pid {runs['holder']} on host {os.uname().nodename}" in text, text[-2000:]
    assert not (runs["dirs"]["second"] / RUN / "train.json").exists()
