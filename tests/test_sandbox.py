"""Hostile programs are contained, scored as failures, and the evaluator carries on.

Each hostile case also runs with single layers switched off where that is
meaningful: ``user=None`` leaves the namespaces and the audit hook (plus rlimits), and,
when we are root, ``audit_hook=False`` leaves the namespaces and the privilege drop.
The attack classes, each under the default configuration, are in
tests/test_sandbox_attacks.py.
"""

import os
import time

import pytest

from conftest import sandbox_processes_left

from inilora.sandbox.harness import SAFE_ENV, STATUSES, run_untrusted

GOOD = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('hello')\n"
IS_ROOT = os.geteuid() == 0

LAYERS = {"all": {}, "hook-only": {"user": None}}
if IS_ROOT:  # without root there is no privilege drop to test on its own
    LAYERS["uid-only"] = {"audit_hook": False}


def assert_still_works():
    """The harness keeps scoring correctly after whatever ran before."""
    result = run_untrusted(GOOD)
    assert result.passed and result.status == "passed", result


def test_good_program_passes_with_its_output():
    result = run_untrusted(GOOD)
    assert result.passed and result.status == "passed"
    assert result.stdout == "hello\n" and result.stderr == ""
    assert 0 < result.elapsed < 3


def test_assertion_failure_fails():
    result = run_untrusted("assert 1 + 1 == 3, 'arithmetic'\n")
    assert not result.passed and result.status == "failed"
    assert result.detail.startswith("AssertionError: arithmetic")


def test_syntax_error_fails():
    result = run_untrusted("def f(:\n    pass\n")
    assert result.status == "failed" and "SyntaxError" in result.detail


def test_root_runs_the_program_as_an_unprivileged_uid():
    result = run_untrusted("import os\nprint(os.getuid(), os.geteuid(), os.getgroups())\n")
    assert result.passed
    if IS_ROOT:
        assert result.stdout.split()[:2] == ["65534", "65534"]
        own = " + own user namespace" if result.containment == "bwrap" else ""
        assert result.isolation == f"{result.containment} namespaces{own} + uid 65534 + rlimits + audit hook"
    else:
        assert "not root" in result.isolation and result.stdout.split()[0] == str(os.getuid())


def test_infinite_loop_times_out_and_the_evaluator_returns_promptly():
    start = time.monotonic()
    result = run_untrusted("while True:\n    pass\n", timeout=1.0)
    took = time.monotonic() - start
    assert result.status == "timeout" and not result.passed
    assert 1.0 <= took < 2.0
    assert sandbox_processes_left(result) == []
    assert_still_works()


def test_cpu_limit_kills_a_busy_loop_before_the_wall_clock_deadline():
    result = run_untrusted("while True:\n    pass\n", timeout=10.0, cpu_seconds=1)
    assert result.status == "killed" and "SIGXCPU" in result.detail  # killed, so before the 10 s deadline


def test_fork_bomb_is_refused_and_leaves_no_process():
    result = run_untrusted("import os\nwhile True:\n    os.fork()\n")
    assert result.status == "failed" and "os.fork is not allowed" in result.detail
    assert result.elapsed < 2
    assert sandbox_processes_left(result) == []
    assert_still_works()


FORK_AND_HANG = """
import os, time
n = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as err:
    print(type(err).__name__)
print("forked", n, flush=True)
time.sleep(60)
"""


def test_without_the_hook_rlimit_nproc_caps_forks_and_the_group_is_killed():
    result = run_untrusted(FORK_AND_HANG, timeout=1.5, max_procs=6, audit_hook=False)
    assert result.status == "timeout"
    assert sandbox_processes_left(result) == []  # the sleeping children died with the group
    if result.isolation.startswith("root:"):  # no drop possible here: NPROC never binds root
        assert "RLIMIT_NPROC does not bind root" in result.detail
    else:
        # max_procs counts the program itself, so at most 5 children (a few more only
        # if other processes of this uid exit meanwhile, as the limit is per uid)
        assert "BlockingIOError" in result.stdout
        assert int(result.stdout.split("forked")[1]) <= 5 + 2
    assert_still_works()


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("how", ["os.remove", "shutil.rmtree", "os.rename", "open-write", "os.system"])
def test_files_outside_the_workdir_survive(tmp_path, layer, how):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "leaf.txt").write_text("leaf")
    created = tmp_path / "pwned.txt"
    program = {
        "os.remove": f"import os\nos.remove({str(victim)!r})\n",
        "shutil.rmtree": f"import shutil\nshutil.rmtree({str(tree)!r})\n",
        "os.rename": f"import os\nos.rename({str(victim)!r}, 'stolen.txt')\n",
        "open-write": f"with open({str(created)!r}, 'w') as fh:\n    fh.write('pwned')\n",
        "os.system": f"import os\nassert os.system('touch {created}') == 0\n",
    }[how]
    result = run_untrusted(program, **LAYERS[layer])
    assert result.status == "failed", result
    assert victim.read_text() == "precious"
    assert (tree / "sub" / "leaf.txt").read_text() == "leaf"
    assert not created.exists()
    assert_still_works()


def test_multi_gigabyte_allocation_fails_inside_the_limit():
    result = run_untrusted("buf = bytearray(8 * 2**30)\nprint(len(buf))\n")
    assert result.status == "failed" and "MemoryError" in result.detail
    assert result.elapsed < 2
    smaller = run_untrusted("buf = bytearray(512 * 2**20)\n", memory_mb=256)
    assert smaller.status == "failed" and "MemoryError" in smaller.detail
    assert_still_works()


@pytest.mark.parametrize("leave", ["import sys\nsys.exit(0)", "raise SystemExit", "import os\nos._exit(0)"])
def test_leaving_early_with_status_0_is_a_failure(leave):
    program = f"def check():\n    assert False, 'never reached'\n\n{leave}\ncheck()\n"
    result = run_untrusted(program)
    assert result.status == "failed" and not result.passed


def test_forged_completion_messages_do_not_pass():
    """Guessing the channel is not enough: the nonce is random and was only ever on stdin."""
    program = (
        "import os, sys\n"
        "print(sys.stdin.read() == '')\n"  # the bootstrap consumed the nonce; stdin is at EOF
        "for fd in range(3, 64):\n"
        "    for line in (b'passed\\n', b'ok\\n', b'I uid 0\\n', b'0' * 32 + b'\\n'):\n"
        "        try:\n"
        "            os.write(fd, line)\n"
        "        except OSError:\n"
        "            pass\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    result = run_untrusted(program)
    assert result.stdout.startswith("True")
    assert result.status == "failed" and not result.passed


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_FAKE_sandbox_secret_123")
    program = (
        "import os\n"
        "print(sorted(os.environ.items()))\n"
        "try:\n"
        "    print(open('/proc/%d/environ' % os.getppid(), 'rb').read())\n"
        "except OSError as err:\n"
        "    print('refused', type(err).__name__)\n"
    )
    result = run_untrusted(program)
    assert result.passed, result
    assert "hf_FAKE" not in result.stdout + result.stderr and "HF_TOKEN" not in result.stdout
    assert "refused PermissionError" in result.stdout  # the parent's environment cannot be read either
    seen = dict(eval(result.stdout.splitlines()[0]))
    assert set(seen) <= set(SAFE_ENV) | {"HOME", "TMPDIR", "PWD"}


def test_working_directory_is_fresh_private_and_removed():
    program = (
        "import os\n"
        "assert os.listdir('.') == []\n"
        "with open('scratch.txt', 'w') as fh:\n"
        "    fh.write('mine')\n"
        "os.mkdir('sub')\n"
        "os.chmod('sub', 0)\n"  # make cleanup harder
        "print(os.getcwd())\n"
    )
    first, second = run_untrusted(program), run_untrusted(program)
    assert first.passed and second.passed, (first, second)
    assert first.stdout.strip() == second.stdout.strip() == "/sandbox"  # the host's path is not in its view
    assert first.workdir != second.workdir
    for result in (first, second):
        assert not os.path.exists(result.workdir)


def test_output_is_capped_and_the_child_is_not_blocked():
    result = run_untrusted("import sys\nsys.stdout.write('x' * 5_000_000)\n", output_limit=1000)
    assert result.passed
    assert result.stdout.startswith("x" * 1000) and "[truncated: 4999000 more bytes]" in result.stdout


def test_file_size_limit_stops_large_writes_in_the_workdir():
    result = run_untrusted("with open('big', 'wb') as fh:\n    fh.write(b'0' * 3 * 2**20)\n", max_file_mb=1)
    assert not result.passed and result.status in ("failed", "killed")
    assert "File too large" in result.detail or "SIGXFSZ" in result.detail


@pytest.mark.parametrize("program", [
    "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
    "import ctypes\n",
    "import subprocess\nsubprocess.run(['true'])\n",
    "import os\nos.execv('/bin/true', ['true'])\n",
    "import os\nos.kill(os.getppid(), 9)\n",
])
def test_network_ctypes_exec_and_signals_are_refused(program):
    result = run_untrusted(program)
    assert result.status == "failed" and "sandbox:" in result.detail


@pytest.mark.parametrize("kwargs, name", [({"timeout": 0}, "timeout"), ({"memory_mb": -1}, "memory_mb"),
                                          ({"max_procs": "many"}, "max_procs"), ({"cpu_seconds": 0}, "cpu_seconds")])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"{name}=.*allowed"):
        run_untrusted(GOOD, **kwargs)


def test_every_status_is_documented():
    assert run_untrusted(GOOD).status in STATUSES


def test_a_tree_1500_levels_deep_is_cleaned_up_without_crashing_the_harness():
    """shutil.rmtree recursed on this and raised RecursionError out of run_untrusted; the cleanup is
    iterative now, so the run returns its verdict and the tree is gone."""
    program = (
        "import os\n"
        "top = os.getcwd()\n"
        "for _ in range(1500):\n"
        "    os.mkdir('d')\n"
        "    os.chdir('d')\n"
        "open('leaf.txt', 'w').write('x')\n"
        "print(top)\n"
    )
    result = run_untrusted(program, timeout=10)
    assert result.status == "passed", result
    assert not os.path.exists(result.workdir)
    assert_still_works()


def test_a_harness_error_on_one_sample_is_recorded_and_the_others_are_scored(monkeypatch):
    from inilora.data.humaneval import load_problems
    from inilora.evaluate import humaneval as he

    problems = dict(list(load_problems().items())[:2])
    completions = {t: [p["canonical_solution"]] for t, p in problems.items()}
    first = next(iter(problems))
    real = he.run_check

    def flaky(program, *a, **k):
        if problems[first]["entry_point"] in program and problems[first]["canonical_solution"] in program:
            raise RuntimeError("sandbox host lost")
        return real(program, *a, **k)

    monkeypatch.setattr(he, "run_check", flaky)
    scored = he.score(problems, completions, stops=None, progress=False)
    assert scored["samples"][first][0]["status"] == "error"
    assert "harness error: RuntimeError: sandbox host lost" in scored["samples"][first][0]["detail"]
    second = list(problems)[1]
    assert scored["samples"][second][0]["status"] == "passed" and scored["per_task"][second]["correct"] == 1
