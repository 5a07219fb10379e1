"""Every job's JSON says where it came from, and the tables say what differs between the runs they combine."""

import json
import subprocess

import pandas as pd

from inilora import devices, provenance
from inilora.report import tables


def test_a_jobs_runtime_record_carries_versions_commit_and_machine():
    with devices.JobStats("cpu", "float32") as stats:
        pass
    record = stats.record()["provenance"]
    assert set(record) == {"versions", "git", "machine"}
    assert {"torch", "transformers", "peft", "snakemake", "python"} <= set(record["versions"])
    head = subprocess.run(["git", "-C", str(provenance.REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clean clone is one)
        assert record["git"]["commit"] == head.stdout.strip() and isinstance(record["git"]["dirty"], bool)
    machine = record["machine"]
    assert machine["cpu"] and machine["cores"] >= machine["cores_usable"] >= 1 and "gpu" not in machine
    json.dumps(record)  # plain data


def test_outside_a_git_checkout_the_commit_is_none_with_the_reason(tmp_path):
    assert provenance.git_state(tmp_path) == {"commit": None, "why": "not run from a git checkout"}


def _record(cpu="AMD EPYC", torch="2.13.0", commit="abc", dirty=False):
    return {"versions": {"torch": torch, "python": "3.11.7"}, "git": {"commit": commit, "dirty": dirty},
            "machine": {"cpu": cpu, "cores": 2, "cores_usable": 2}}


def test_differences_name_each_field_that_differs_with_its_counts():
    assert provenance.differences([_record(), _record()]) == []
    gpu = {**_record(), "machine": {**_record()["machine"], "gpu": "H100"}}
    assert provenance.differences([_record(), gpu]) == ["the runs differ in gpu (H100: 1 run(s); absent: 1 run(s))"]
    notes = provenance.differences([_record(), _record(cpu="Intel Xeon"), _record(torch="2.12.0"), None])
    assert notes == ["1 of 4 runs record no provenance",
                     "the runs differ in version of torch (2.12.0: 1 run(s); 2.13.0: 2 run(s))",
                     "the runs differ in cpu (AMD EPYC: 2 run(s); Intel Xeon: 1 run(s))"]


def test_table2s_notes_say_on_what_its_evaluations_differ(tmp_path):
    paths = []
    for method, cpu in (("lora", "AMD EPYC"), ("inilora", "Intel Xeon")):
        p = tmp_path / f"results/eval/m/t/{method}/r8/lr0.001/seed0/b.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"benchmark": "b", "n": 2, "kind": "numeric", "metrics": {"accuracy": 0.5},
                                 "records": [{"correct": True}, {"correct": False}],
                                 "runtime": {"provenance": _record(cpu=cpu)}}))
        paths.append(str(p))
    df = tables.read_evals(paths)
    assert list(df["provenance"].map(lambda r: r["machine"]["cpu"])) == ["AMD EPYC", "Intel Xeon"]
    md = tmp_path / "t.md"
    tables.table2({"methods": ["lora", "inilora"], "benchmarks": ["b"], "notes": []}, paths, tmp_path / "t.csv", md)
    assert "the runs differ in cpu (AMD EPYC: 1 run(s); Intel Xeon: 1 run(s))" in md.read_text()
    assert pd.read_csv(tmp_path / "t.csv").shape[0] == 2
