"""A control group per sandboxed run: its memory (swap included), its processes and its CPU share.

rlimits bound one process at a time, and some memory escapes them altogether: tmpfs pages and
``user.*`` xattrs on the run's own tmpfs, ``memfd_create`` files, a tmpfs mounted inside a nested
user namespace. RLIMIT_NPROC counts every task of the uid on the whole host, so a busy sibling
run can make a correct threaded program fail. A cgroup per run bounds all of it at once: every
page the run's processes cause to be allocated is charged to it, whatever holds the page, and
its process count is its own.

Each run gets ``<own cgroup>/inilora-sandbox-<pid>/run-<token>`` in every hierarchy it needs,
below the cgroup the harness already runs in (so a batch job's own limits still hold):

- cgroup v2 (one hierarchy with the ``memory``, ``pids`` and ``cpu`` controllers delegated):
  ``memory.max``, ``memory.swap.max`` 0, ``pids.max``, ``cpu.weight`` 100;
- cgroup v1 (``memory``, ``pids`` and ``cpu`` mounted under /sys/fs/cgroup): ``memory.limit_in_bytes``
  and ``memory.memsw.limit_in_bytes`` (where swap is accounted), ``pids.max``, ``cpu.shares`` 1024.

Every run has the same CPU weight, so a busy run cannot starve a sibling's deadline. A harness
killed by a signal leaves its groups behind (its exit handler does not run); the next harness to
start removes them, killing whatever still ran in them. Where no
hierarchy is writable (not root, no delegation), :func:`setup` says why, and the harness falls back
to rlimits and the tmpfs sizes, recording in each result which bound applied (``Result.bounds``).
"""

from __future__ import annotations

import atexit
import errno
import functools
import os
import secrets
import signal
import threading
import time

MOUNT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_SHARES = 1024  # v1 default: the same share for every run
CPU_WEIGHT = 100  # v2 default
# Tasks of a run besides the program's own: bubblewrap's monitor and its pid-1 reaper (unshare: its
# parent and the shell that builds the root), so ``max_procs`` stays what the program itself may have.
OVERHEAD_TASKS = 2


class RunGroup:
    """One run's cgroup directories (one per v1 hierarchy, one for v2): created with the run's bounds,
    joined by the run's first process before it executes, emptied and removed with the run."""

    def __init__(self, dirs: list[str], bounds: str):
        self.dirs, self.bounds = dirs, bounds

    def join_prefix(self) -> list[str]:
        """argv prefix: a shell that moves itself into the run's cgroups, then execs the rest (exit 125 if
        it cannot; then nothing of the program runs)."""
        files = [os.path.join(d, "cgroup.procs") for d in self.dirs]  # as arguments: a path may hold any byte
        script = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done; exec "$@"'
        return ["/bin/sh", "-c", script, "inilora-cgroup", str(len(files)), *files]

    def pids(self) -> list[int]:
        found = set()
        for d in self.dirs:
            try:
                with open(os.path.join(d, "cgroup.procs")) as fh:
                    found |= {int(line) for line in fh if line.strip()}
            except OSError:
                continue
        return sorted(found)

    def out_of_memory(self) -> bool:
        """Whether the kernel killed a process of the run for the cgroup's memory limit."""
        for d in self.dirs:
            for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                try:
                    with open(os.path.join(d, name)) as fh:
                        fields = dict(line.split() for line in fh if len(line.split()) == 2)
                except OSError:
                    continue
                if int(fields.get(key, 0)) > 0:
                    return True
        return False

    def kill(self, grace: float = 2.0) -> None:
        """SIGKILL everything in the run's cgroups (``cgroup.kill`` on v2) until they are empty."""
        for d in self.dirs:
            _write(os.path.join(d, "cgroup.kill"), "1", quiet=True)
        give_up = time.monotonic() + grace
        while (alive := self.pids()) and time.monotonic() < give_up:
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.005)

    def remove(self) -> None:
        """Kill what is left and remove the directories; never raises."""
        self.kill()
        for d in self.dirs:
            for _ in range(200):  # a killed task leaves its cgroup a moment after it dies
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)


def _write(path: str, value: str, quiet: bool = False) -> bool:
    try:
        with open(path, "w") as fh:
            fh.write(value)
        return True
    except OSError:
        if quiet:
            return False
        raise


def _own_paths() -> dict[str, str]:
    """controller (or "" for the v2 hierarchy) -> this process's cgroup path, from /proc/self/cgroup."""
    paths = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                paths[c] = path
    return paths


@functools.lru_cache(maxsize=None)
def setup(mount: str = MOUNT) -> tuple[int, list[str]] | str:
    """(version, parent directories) under which this process creates its runs' cgroups, or why none
    can be: checked once per process by creating and configuring a test group."""
    try:
        own = _own_paths()
    except OSError as err:
        return f"cannot read /proc/self/cgroup ({err})"
    reasons = []
    unified = os.path.join(mount, "cgroup.controllers")
    if os.path.exists(unified):
        found = _setup_v2(mount, own.get("", "/"))
        if isinstance(found, list):
            return 2, found
        reasons.append(found)
    if all(os.path.isdir(os.path.join(mount, c)) for c in V1_CONTROLLERS):
        found = _setup_v1(mount, own)
        if isinstance(found, list):
            return 1, found
        reasons.append(found)
    return "; ".join(reasons) or f"no cgroup hierarchy with memory, pids and cpu under {mount}"


def _parent_name() -> str:
    return f"inilora-sandbox-{os.getpid()}"


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(base: str) -> list[str]:
    """Remove the run cgroups of harnesses that died without cleaning up (killed by a signal: atexit did
    not run), killing what still runs in them; returns the parents removed."""
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        prefix, _, pid = name.rpartition("-")
        if prefix != "inilora-sandbox" or not pid.isdigit() or alive(int(pid)) or int(pid) == os.getpid():
            continue
        parent = os.path.join(base, name)
        try:
            runs = [os.path.join(parent, r) for r in os.listdir(parent) if r.startswith("run-")]
        except OSError:
            continue
        for run in runs:
            RunGroup([run], "").remove()
        try:
            os.rmdir(parent)
            removed.append(parent)
        except OSError:
            pass
    return removed


def _setup_v1(mount: str, own: dict[str, str]) -> list[str] | str:
    parents = []
    try:
        for c in V1_CONTROLLERS:
            base = os.path.join(mount, c, own.get(c, "/").lstrip("/"))
            remove_stale(base)
            parent = os.path.join(base, _parent_name())
            os.makedirs(parent, exist_ok=True)
            parents.append(parent)
    except OSError as err:
        _remove_parents(parents)
        return f"cgroup v1 is not writable here ({err.strerror}: {err.filename})"
    atexit.register(_remove_parents, parents)
    return parents


def _setup_v2(mount: str, own_path: str) -> list[str] | str:
    own = os.path.join(mount, own_path.lstrip("/"))
    remove_stale(own)
    parent = os.path.join(own, _parent_name())
    try:
        with open(os.path.join(own, "cgroup.controllers")) as fh:
            available = set(fh.read().split())
        missing = {"memory", "pids", "cpu"} - available
        if missing:
            return f"cgroup v2: the controllers {sorted(missing)} are not delegated to {own}"
        os.makedirs(parent, exist_ok=True)
        # a cgroup hands controllers to its children only if it holds no process itself (v2's rule): the
        # new parent holds none; the harness's own cgroup does, so the harness first moves into a leaf of it
        try:
            _write(os.path.join(own, "cgroup.subtree_control"), "+memory +pids +cpu")
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            leaf = os.path.join(own, f"inilora-harness-{os.getpid()}")
            os.makedirs(leaf, exist_ok=True)
            _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
            try:
                _write(os.path.join(own, "cgroup.subtree_control"), "+memory +pids +cpu")
            except OSError as again:
                return (f"cgroup v2: other processes share {own} ({again.strerror}); run the harness in a "
                        "delegated cgroup of its own (systemd-run --scope -p Delegate=yes, or a batch step)")
        _write(os.path.join(parent, "cgroup.subtree_control"), "+memory +pids +cpu")
    except OSError as err:
        _remove_parents([parent])
        return f"cgroup v2 cannot delegate memory, pids and cpu below {own} ({err.strerror})"
    atexit.register(_remove_parents, [parent])
    return [parent]


def _remove_parents(parents: list[str]) -> None:
    for p in parents:
        try:
            os.rmdir(p)
        except OSError:
            pass


_SETUP_LOCK = threading.Lock()  # the worker threads' first runs would otherwise set up twice


def create(memory_bytes: int, max_procs: int) -> RunGroup | str:
    """A run's cgroup with these bounds, or why there is none (then the caller falls back to rlimits)."""
    with _SETUP_LOCK:
        found = setup()
    if isinstance(found, str):
        return found
    version, parents = found
    token = secrets.token_hex(6)
    dirs = [os.path.join(p, f"run-{token}") for p in parents]
    made = []
    try:
        for d in dirs:
            os.mkdir(d)
            made.append(d)
            _configure(version, d, memory_bytes, max_procs)
    except OSError as err:
        RunGroup(made, "").remove()
        return f"cannot create a cgroup for the run ({err.strerror}: {err.filename})"
    swap = "swap included" if version == 2 or any(os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes"))
                                                   for d in dirs) else "swap not accounted"
    cpu = f"cpu.weight {CPU_WEIGHT}" if version == 2 else f"cpu.shares {CPU_SHARES}"
    return RunGroup(dirs, f"cgroup v{version}: memory {memory_bytes // (1024 * 1024)} MiB ({swap}), "
                                   f"{max_procs} processes, {cpu}")


def _configure(version: int, d: str, memory_bytes: int, max_procs: int) -> None:
    files = set(os.listdir(d))
    if version == 2:
        _write(os.path.join(d, "memory.max"), str(memory_bytes))
        _write(os.path.join(d, "memory.swap.max"), "0", quiet=True)
        _write(os.path.join(d, "pids.max"), str(max_procs + OVERHEAD_TASKS))
        _write(os.path.join(d, "cpu.weight"), str(CPU_WEIGHT))
        return
    if "memory.limit_in_bytes" in files:
        _write(os.path.join(d, "memory.limit_in_bytes"), str(memory_bytes))
        if "memory.memsw.limit_in_bytes" in files:  # memory + swap: no page of the run goes to swap past it
            _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(memory_bytes))
    if "pids.max" in files:
        _write(os.path.join(d, "pids.max"), str(max_procs + OVERHEAD_TASKS))
    if "cpu.shares" in files:
        _write(os.path.join(d, "cpu.shares"), str(CPU_SHARES))
