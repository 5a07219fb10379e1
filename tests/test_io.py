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
