"""Run untrusted, model-generated Python in a contained child process.

One call runs one program in a fresh interpreter. The layers, outermost first:

0. **Namespaces** (:mod:`inilora.sandbox.contain`): bubblewrap, or util-linux ``unshare``
   without it, gives the run new network, pid, ipc, uts and mount namespaces, its own
   ``/tmp``, ``/var/tmp`` and ``/dev/shm``, the system directories read-only and the working
   directory as its only writable path; the project, results and home directories are not
   in its view. Killing the namespace's first process kills everything in it. When the
   namespaces cannot be set up the run is refused with status ``error``; ``containment="none"``
   (named in the config) runs without them, and ``Result.containment`` says which ran.
1. **Process.** A scrubbed environment (no inherited tokens), a fresh empty working
   directory deleted afterwards, captured and size-capped stdout/stderr, a wall-clock deadline.
2. **A cgroup per run** (:mod:`inilora.sandbox.cgroups`, v2 or v1) where one is writable: memory
   with swap (every page the run causes, tmpfs, xattrs and memfd included), processes and the
   same CPU share for every run. **Resource limits** set in the child before the program runs:
   address space (RLIMIT_AS), CPU seconds, file size, open files, no core dumps, and, where no
   cgroup is writable, processes (RLIMIT_NPROC, counted over the uid). ``Result.bounds`` says
   which bound the run had.
3. **Privileges.** When we are root the child drops to ``nobody`` before the program runs; under
   bubblewrap inside a user namespace of the run's own (:func:`inilora.sandbox.contain.user_namespace`),
   so no two runs share a keyring or a process count.
4. **Audit hook** (PEP 578): refuses writes outside the working directory, process creation,
   signals, sockets, ctypes, tracing and profiling hooks and the introspection that reaches
   the harness. Its lists live in a closure, not in globals the program could empty; it is a
   tripwire that turns sloppy code into a clear error, not the wall: layers 0-3 are.

**Verdicts.** :func:`run_check` decides pass or fail outside the untrusted process: the
program only defines the candidate function; the trusted check (HumanEval's ``check``) runs
in the harness and every call of the candidate crosses the wall as plain data
(:mod:`inilora.sandbox.wire`), so no value with its own ``__eq__`` and no message the program
writes can make a failing candidate pass. The only route left is to return the right values, and
nothing tells a candidate which of its values were right: HumanEval's check is run with every assert
evaluated and recorded, none stopping it (:func:`inilora.evaluate.humaneval.trusted_check`), so the
calls a candidate receives are the same whatever it answers, and memory shared between runs has no
verdict to carry.

:func:`run_untrusted` runs a whole program and reports whether it ran to its end. That
report comes from inside (a nonce the child code writes after the program), and a program
that walks its frames (``f_back`` is not audited) can find and write it: use it to run code
contained, not to score it.

Replies are read with limits (:mod:`inilora.sandbox.wire`: size, items, depth, values sharing
one hash), so no return value can make the harness slow or large.

Known gaps, found by red-teaming and not closed:

- a program that gets past the audit hook (it is a tripwire) can start processes; they stay
  inside the namespaces and the run's cgroup and die with the run. Under ``containment="none"``
  the hook is the only wall, and calls that raise no audit event (``os.mknod``, ``os.mkfifo``)
  pass it;
- a harness killed by a signal leaves its cgroups and its runs' temporary folders (its exit
  handlers do not run) until the next harness starts: that one removes both, killing what still
  runs in the cgroups;
- under the ``unshare`` fallback (no seccomp filter there) it can create a nested user namespace
  and mount a tmpfs in it; the run's cgroup bounds its pages (without a writable cgroup, nothing
  but the run's 3 s does, as for memfd); bubblewrap's filter refuses the namespace;
- under the ``unshare`` fallback the runs share uid ``nobody`` of the host, and so its kernel keyring
  (``add_key`` / ``keyctl``); under bubblewrap each run has its own. In every mode, which pages of the
  shared read-only files sit in the host's page cache can be probed without privilege (``preadv2``
  with ``RWF_NOWAIT``), and no namespace closes that: a channel from one run to a later one. Since the
  call sequence no longer depends on the verdict, nothing a run learns can be carried through it to score.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import pwd
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inilora.sandbox import cgroups, contain, wire

STATUSES = ("passed", "failed", "timeout", "killed", "error")
REPLY_LIMIT = 1024 * 1024  # bytes of one return value from the sandbox (HumanEval's are a few KB)

# What the child sees of the environment: nothing inherited, so no HF_TOKEN & co.
# HOME and TMPDIR are filled with the working directory per run.
SAFE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}
_BOOTSTRAP = "\n".join((Path(wire.__file__).read_text(), (Path(__file__).parent / "child.py").read_text()))


@dataclass(frozen=True)
class Result:
    """Outcome of one sandboxed run.

    status: "passed", "failed" (raised, exited early, or the check failed), "timeout"
    (wall clock exceeded, everything killed), "killed" (ended by a signal, e.g. the CPU or
    file-size limit), "error" (the harness could not run the program, e.g. no containment).
    elapsed: wall-clock seconds. containment: the namespace mode that ran ("bwrap", "unshare",
    "none"), "" when none started. isolation: every layer in force, e.g. "bwrap namespaces +
    uid 65534 + rlimits + audit hook"; a degraded run also says so in detail. pid: the child
    the harness started. workdir: the run's host folder, removed on return (mode none: where the
    program wrote; a contained program writes only to its own tmpfs ``/sandbox``). bounds: what
    bounded the run's memory and processes: its own cgroup (:mod:`inilora.sandbox.cgroups`), or,
    where none is writable, rlimits only and why.
    """

    passed: bool
    status: str
    detail: str
    elapsed: float
    isolation: str = ""
    stdout: str = ""
    stderr: str = ""
    pid: int | None = None
    containment: str = ""
    workdir: str = ""
    bounds: str = ""


@dataclass(frozen=True)
class _Settings:
    timeout: float
    limits: dict
    ids: tuple[int, int] | None
    audit_hook: bool
    output_limit: int
    containment: str
    memory_mb: int
    max_procs: int


def run_untrusted(program: str, timeout: float = 3.0, memory_mb: int = 1024, *,
                  cpu_seconds: int | None = None, max_procs: int = 16, max_file_mb: int = 16,
                  max_open_files: int = 64, output_limit: int = 64 * 1024,
                  user: str | int | None = "nobody", audit_hook: bool = True, containment: str = "auto") -> Result:
    """Run ``program`` (Python source) contained; "passed" = it ran to its end. Never raises for what it does.

    timeout: wall-clock seconds for the whole run, interpreter start included.
    memory_mb: address-space limit per process (MiB), and the run's cgroup memory limit, swap included. cpu_seconds: CPU limit, default ceil(timeout)+1.
    max_procs: processes/threads the program may have in total, itself included (the run's cgroup
    ``pids.max`` where a cgroup is writable, else RLIMIT_NPROC over the uid).
    max_file_mb: largest file it may write (MiB). max_open_files: descriptor limit.
    output_limit: bytes of stdout and of stderr kept (the rest is read and dropped).
    user: account to drop to when we are root; None stays root.
    audit_hook: False disables the in-process guard; only for testing the outer layers.
    containment: one of contain.MODES. Raises ValueError only for bad arguments.
    """
    return _run(program, None, None, locals())


def run_check(program: str, entry_point: str, check: Callable[[Callable], object], timeout: float = 3.0,
              memory_mb: int = 1024, **limits) -> Result:
    """Pass iff the trusted ``check(candidate)`` returns, ``candidate`` being ``entry_point`` of ``program``.

    ``program`` runs contained and only defines the candidate; ``check`` runs here, in the
    harness, and each ``candidate(*args, **kwargs)`` is answered from inside the sandbox with
    plain data (:mod:`inilora.sandbox.wire`). A raise inside the candidate raises
    ``CandidateError`` in ``check``. The deadline covers the program and every call.
    Other keywords as for :func:`run_untrusted`.
    """
    return _run(program, entry_point, check, {"timeout": timeout, "memory_mb": memory_mb, **limits})


class CandidateError(Exception):
    """The candidate raised inside the sandbox, returned a value that cannot cross, or died."""


class _Deadline(BaseException):
    """The run's time is up; a BaseException so that a check's ``except Exception`` cannot absorb it."""


def _settings(args: dict) -> _Settings:
    """Checked options over run_untrusted's own defaults (run_check shares them)."""
    defaults = {k: p.default for k, p in inspect.signature(run_untrusted).parameters.items() if k != "program"}
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        raise ValueError(f"unknown sandbox option(s) {unknown}; allowed: {', '.join(defaults)}")
    a = {**defaults, **args}
    timeout = a["timeout"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout={timeout!r}: allowed is a number of seconds > 0")
    counts = {k: a[k] for k in ("memory_mb", "max_procs", "max_file_mb", "max_open_files", "output_limit")}
    _check_counts(**counts, **({} if a["cpu_seconds"] is None else {"cpu_seconds": a["cpu_seconds"]}))
    if a["containment"] not in contain.MODES:
        raise ValueError(f"containment={a['containment']!r}: allowed are {list(contain.MODES)}")
    try:
        ids = _target_ids(a["user"])
    except (KeyError, OSError) as err:
        raise ValueError(f"user={a['user']!r}: no such account ({err}); allowed is a user name, a uid or None") from None
    limits = _limits(a["memory_mb"], a["cpu_seconds"] or math.ceil(timeout) + 1, a["max_file_mb"], a["max_open_files"])
    return _Settings(timeout, limits, ids, bool(a["audit_hook"]), a["output_limit"], a["containment"], a["memory_mb"],
                     a["max_procs"])


def _run(program: str, entry_point: str | None, check: Callable | None, args: dict) -> Result:
    """Set up the namespaces and the working directory, run, judge, and clean up whatever happened."""
    cfg = _settings({k: v for k, v in args.items() if k != "program"})
    start = time.monotonic()
    try:
        mode = contain.choose(cfg.containment)
    except contain.ContainmentError as err:
        return Result(False, "error", f"refused: {err}", time.monotonic() - start)
    group = cgroups.create(cfg.memory_mb * 1024 * 1024, cfg.max_procs)
    if isinstance(group, str):  # rlimits alone; RLIMIT_NPROC counts every task of the uid on the host
        uid = cfg.ids[0] if cfg.ids else os.getuid()
        cfg = dataclasses.replace(cfg, limits={**cfg.limits, "RLIMIT_NPROC": [_count_tasks(uid) + cfg.max_procs] * 2})
        bounds = (f"rlimits only ({group}): address space {cfg.memory_mb} MiB per process, {cfg.max_procs} "
                  "processes counted over the uid, tmpfs sizes")
        group = None
    else:  # the cgroup counts the run's own processes; RLIMIT_NPROC stays as inherited
        bounds = group.bounds
    try:
        return _run_bounded(program, entry_point, check, mode, cfg, start, group, bounds)
    finally:
        if group is not None:
            group.remove()


def _run_bounded(program: str, entry_point: str | None, check: Callable | None, mode: str, cfg: _Settings,
                 start: float, group: cgroups.RunGroup | None, bounds: str) -> Result:
    """:func:`_run` once the run's cgroup (or its fallback) is set: the working directory, the child, the verdict."""
    with _STALE_LOCK:
        _remove_stale_folders()
    try:
        base = tempfile.mkdtemp(prefix=f"inilora-sandbox-{os.getpid()}-")
        workdir, root = os.path.join(base, "work"), os.path.join(base, "root")
        os.chmod(base, 0o711)  # mode none: nobody must reach work/ (and nothing else here)
        os.mkdir(workdir, 0o700)
        os.mkdir(root, 0o700)
        if cfg.ids:
            os.chown(workdir, *cfg.ids)
    except OSError as err:
        return Result(False, "error", f"cannot create a working directory: {err}", time.monotonic() - start)
    try:
        child = _Child.start(program, entry_point, mode, workdir, root, cfg, start, group, bounds)
        if isinstance(child, Result):
            return child
        try:
            return child.judge(child.serve(check)) if check else child.judge(None)
        finally:
            child.stop()
    finally:
        _remove_tree(base)


class _Child:
    """The contained interpreter: its pipes, the framed result channel, and the deadline."""

    def __init__(self, proc: subprocess.Popen, result_fd: int, mode: str, workdir: str, cfg: _Settings,
                 start: float, nonce: bytes, group: cgroups.RunGroup | None, bounds: str):
        self.proc, self.result_fd, self.mode, self.workdir, self.cfg = proc, result_fd, mode, workdir, cfg
        self.group, self.bounds = group, bounds
        self.start, self.deadline, self.nonce = start, start + cfg.timeout, nonce
        self.kept = {"stdout": bytearray(), "stderr": bytearray()}
        self.total = {"stdout": 0, "stderr": 0}
        self.channel = bytearray()
        self.frames: list[tuple[bytes, bytes]] = []
        self.isolation, self.timed_out, self.closed, self.stopped = "", False, False, False
        self.sel = selectors.DefaultSelector()
        self.names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr", result_fd: "result"}
        for fd in self.names:
            self.sel.register(fd, selectors.EVENT_READ)

    @classmethod
    def start(cls, program: str, entry_point: str | None, mode: str, workdir: str, root: str, cfg: _Settings,
              start: float, group: cgroups.RunGroup | None, bounds: str):
        inside = contain.INSIDE if mode != "none" else os.path.realpath(workdir)
        opened: list[int] = []  # every descriptor made here, closed on every path out
        try:
            read_end, write_end = os.pipe()
            opened += [read_end, write_end]
            config = {"workdir": inside, "result_fd": write_end, "ids": cfg.ids, "limits": cfg.limits,
                      "audit_hook": cfg.audit_hook, "containment": mode, "serve": entry_point}
            seccomp = contain.seccomp_fd() if mode == "bwrap" else None
            opened += [seccomp] if seccomp is not None else []
            userns = contain.user_namespace(*cfg.ids) if mode == "bwrap" and cfg.ids else None
            if isinstance(userns, str):  # the program's uid is then the host's nobody, shared with every run
                config["userns"], userns = userns, None
            elif userns is not None:
                config["userns"] = "own user namespace"
                opened.append(userns)
            argv = contain.command(mode, workdir, root, seccomp, userns) + [
                contain.interpreter()[1], "-I", "-B", "-S", "-c", _BOOTSTRAP, json.dumps(config)]
            if group is not None:  # the run's first process joins its cgroup before anything else runs
                argv = group.join_prefix() + argv
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=workdir, env={**SAFE_ENV, "HOME": inside, "TMPDIR": inside},
                                    pass_fds=tuple(fd for fd in opened if fd != read_end), start_new_session=True)
        except OSError as err:
            for fd in opened:
                os.close(fd)
            return Result(False, "error", f"cannot start the contained interpreter: {err}", time.monotonic() - start,
                          containment=mode, bounds=bounds)
        for fd in opened:  # the child holds its own copies; the read end stays ours
            if fd != read_end:
                os.close(fd)
        nonce = secrets.token_hex(16).encode()
        child = cls(proc, read_end, mode, workdir, cfg, start, nonce, group, bounds)
        os.set_blocking(proc.stdin.fileno(), False)
        child.send(b"P", nonce + b"\n" + program.encode("utf-8", "surrogatepass"))
        if entry_point is None:
            child.close_stdin()
        return child

    # -- the channel ---------------------------------------------------------------------------------

    def send(self, kind: bytes, payload: bytes) -> bool:
        """Write one frame to the child's stdin before the deadline; False if it stopped reading."""
        data = memoryview(kind + len(payload).to_bytes(8, "big") + payload)
        fd = self.proc.stdin.fileno()
        while data and not self.closed:
            try:
                data = data[os.write(fd, data):]
            except BlockingIOError:
                if not self._pump(write_fd=fd):
                    return False
            except OSError:  # the child died early; its exit status tells why
                return False
        return not data

    def close_stdin(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def frame(self) -> tuple[bytes, bytes] | None:
        """The next result frame; None at end of stream or at the deadline (then timed_out is set)."""
        while not self.frames:
            if not self._pump():
                return None
        return self.frames.pop(0)

    def _pump(self, write_fd: int | None = None) -> bool:
        """Read whatever is ready (or wait until ``write_fd`` is writable); False at EOF or deadline."""
        if write_fd is not None:
            self.sel.register(write_fd, selectors.EVENT_WRITE)
        try:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.timed_out = True
                return False
            if not self.names and write_fd is None:
                return False
            for key, _ in self.sel.select(left):
                if key.fd == write_fd:
                    return True
                self._read(key.fd)
            return True
        finally:
            if write_fd is not None:
                self.sel.unregister(write_fd)

    def _read(self, fd: int) -> None:
        chunk = os.read(fd, 65536)
        name = self.names[fd]
        if not chunk:
            self.sel.unregister(fd)
            del self.names[fd]
            return
        if name == "result":
            self.channel += chunk
            self._split()
            return
        self.kept[name] += chunk[: max(self.cfg.output_limit - len(self.kept[name]), 0)]
        self.total[name] += len(chunk)

    def _split(self) -> None:
        while len(self.channel) >= 9:
            size = int.from_bytes(self.channel[1:9], "big")
            if size > REPLY_LIMIT:
                self.frames.append((b"X", f"a reply of {size} bytes exceeds {REPLY_LIMIT}".encode()))
                self.channel.clear()
                return
            if len(self.channel) < 9 + size:
                return
            self.frames.append((bytes(self.channel[:1]), bytes(self.channel[9:9 + size])))
            del self.channel[:9 + size]

    # -- the two protocols -------------------------------------------------------------------------------

    def _until(self, *kinds: bytes) -> tuple[bytes, bytes] | None:
        """Skip to the next frame of one of ``kinds``, recording the isolation report on the way."""
        while (got := self.frame()) is not None:
            if got[0] == b"I" and not self.isolation:
                self.isolation = got[1].decode("ascii", "replace")
            elif got[0] in kinds or got[0] == b"X":
                return got
        return None

    def call(self, args: tuple, kwargs: dict):
        """One call of the candidate, answered from inside; raises CandidateError or _Deadline."""
        try:
            request = wire.dumps((tuple(args), dict(kwargs)))
        except wire.WireError as err:
            raise CandidateError(f"argument cannot be sent to the sandbox: {err}") from None
        if not self.send(b"C", request) or (reply := self._until(b"V", b"E")) is None:
            if self.timed_out:
                raise _Deadline
            raise CandidateError("the candidate's process ended during a call")
        kind, payload = reply
        if kind == b"V":
            try:
                return wire.loads(payload)
            except wire.WireError as err:
                raise CandidateError(f"the candidate's return value cannot be read: {err}") from None
        if kind == b"X":  # a frame the harness refused to read (too large)
            raise CandidateError(payload.decode("utf-8", "replace"))
        raise CandidateError(f"the candidate raised {payload.decode('utf-8', 'replace')}")

    def serve(self, check: Callable) -> tuple[str, str] | bool:
        """Run the trusted check against the contained candidate: (status, detail), or False when
        the program never got as far as serving (the exit status then tells why)."""
        ready = self._until(b"R")
        if ready is None:
            return ("timeout", "") if self.timed_out else False
        if ready[1] != b"1":
            return "failed", "the program does not define the entry point as a function"
        try:
            check(lambda *a, **k: self.call(a, k))
        except _Deadline:
            return "timeout", ""
        except Exception as err:  # the check's own AssertionError and anything a bad answer provoked
            return "failed", f"check: {type(err).__name__}: {str(err)[:300]}".rstrip(": ")
        return "passed", "check passed"

    def _drain(self) -> bool:
        """Read the streams to EOF and wait for the exit, up to the deadline; True if it exited."""
        while len(self.names) and self._pump():
            pass
        return not self.names and _wait_exit(self.proc.pid, self.deadline)

    # -- the verdict ---------------------------------------------------------------------------------

    def judge(self, served: tuple[str, str] | None | bool) -> Result:
        """Exit status, output and frames to a Result. ``served``: None for run_untrusted; for run_check
        the check's (status, detail), or False when the program never served (it can then only fail)."""
        self.close_stdin()
        if served and served[0] in ("passed", "failed"):
            self.stop()  # the verdict is in; whatever the program still does does not count
            return self._result(served[0] == "passed", served[0], served[1])
        nonce = self._until(b"N") if served is None and not self.timed_out else None
        exited = not self.timed_out and self._drain()
        if not exited:
            return self._result(False, "timeout", f"no result within {self.cfg.timeout:g} s; everything killed")
        code = self.proc.returncode if self.proc.returncode is not None else self.proc.wait()
        signum = -code if code < 0 else (code - 128 if self.mode != "none" and code > 128 else 0)
        if signum:
            oom = self.group is not None and self.group.out_of_memory()
            return self._result(False, "killed", _signal_detail(signum) + (" [out of memory: the run's cgroup limit of "
                                                                            f"{self.cfg.memory_mb} MiB]" if oom else ""))
        if not self.isolation:
            return self._result(False, "error", f"the child code failed (exit {code}): {_last_line(self._text('stderr'))}")
        if code == 0 and nonce is not None and nonce[1] == self.nonce:
            return self._result(True, "passed", "ran to completion")
        reason = _last_line(self._text("stderr")) or f"exited with status {code} before the program finished"
        return self._result(False, "failed", reason)

    def _result(self, passed: bool, status: str, detail: str) -> Result:
        isolation = self.isolation or "unknown (the child code did not start)"
        degraded = "uid " not in isolation or self.mode == "none"
        return Result(passed, status, detail + (f" [isolation: {isolation}]" if degraded else ""),
                      time.monotonic() - self.start, isolation, self._text("stdout"), self._text("stderr"),
                      self.proc.pid, self.mode, self.workdir, self.bounds)

    def _text(self, name: str) -> str:
        return _text(bytes(self.kept[name]), self.total[name])

    def stop(self, grace: float = 2.0) -> None:
        """Kill everything the run started and wait until none of it executes; idempotent."""
        if self.stopped:
            return
        self.stopped = True
        self.close_stdin()
        inits = _children(self.proc.pid) if self.mode != "none" else []
        _signal_all([(os.kill, pid) for pid in inits] + [(os.killpg, self.proc.pid)])
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # stuck in the kernel; nothing more we can do from here
            pass
        give_up = time.monotonic() + grace
        # a namespace's first process exits only after the kernel has killed all the others
        while (alive := _alive(inits, self.proc.pid)) and time.monotonic() < give_up:
            _signal_all([(os.kill, pid) for pid in alive])
            time.sleep(0.005)
        if self.group is not None:  # anything that left the session or the namespace is still in the cgroup
            self.group.kill(grace)
        self.sel.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        os.close(self.result_fd)


_STALE_LOCK = threading.Lock()  # the worker threads' first runs would otherwise both clean up


@functools.lru_cache(maxsize=None)
def _remove_stale_folders() -> None:
    """Once per process: the run folders of harnesses that died without cleaning up (killed by a signal)."""
    top = tempfile.gettempdir()
    try:
        names = os.listdir(top)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) == 4 and parts[:2] == ["inilora", "sandbox"] and parts[2].isdigit() and int(parts[2]) != os.getpid():
            if not cgroups.alive(int(parts[2])):
                _remove_tree(os.path.join(top, name))


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``: the first process of the sandbox's pid namespace."""
    return [p for p, fields in _stats() if int(fields[1]) == pid]


def _alive(pids: list[int], sid: int) -> list[int]:
    """Live pids among ``pids`` or in session ``sid``, from one pass over /proc."""
    return [p for p, fields in _stats() if fields[0] != "Z" and (p in pids or int(fields[3]) == sid)]


def _stats():
    """(pid, fields after "pid (comm)": state ppid pgrp session ...) of every process we can see."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                yield int(name), fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue


def _session_members(sid: int) -> list[int]:
    """Pids in session ``sid`` that are not zombies (mode none: the program's own session)."""
    return [p for p, fields in _stats() if int(fields[3]) == sid and fields[0] != "Z"]


def _check_counts(**values) -> None:
    """Positive ints only: rlimits are integers, and a zero limit would fail every program for our reasons."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: allowed is an int >= 1")


def _target_ids(user: str | int | None) -> tuple[int, int] | None:
    """(uid, gid) to drop to, or None when we are not root or the caller chose to stay root."""
    if user is None or os.geteuid() != 0:
        return None
    entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    if entry.pw_uid == 0:
        raise OSError("dropping to uid 0 would keep root")
    return entry.pw_uid, entry.pw_gid


def _limits(memory_mb: int, cpu_seconds: int, max_file_mb: int, max_open_files: int) -> dict[str, list[int]]:
    """RLIMIT name -> [soft, hard] for the child; RLIMIT_NPROC is added per run (``_run``).

    RLIMIT_NPROC counts every task of the real uid, not just this child's: with a cgroup
    per run it is left as inherited (the cgroup's pids.max counts the run alone); without
    one it is what that uid runs now plus ``max_procs``. The CPU hard limit sits one second above
    the soft one so that a program ignoring SIGXCPU still gets SIGKILL.
    """
    mib = 1024 * 1024
    return {
        "RLIMIT_AS": [memory_mb * mib] * 2,
        "RLIMIT_CPU": [cpu_seconds, cpu_seconds + 1],
        "RLIMIT_FSIZE": [max_file_mb * mib] * 2,
        "RLIMIT_NOFILE": [max_open_files] * 2,
        "RLIMIT_CORE": [0, 0],
    }


def _count_tasks(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) whose real uid is ``uid``."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:  # the process ended while we looked
            continue
        if int(fields["Uid"].split()[0]) == uid:
            total += int(fields["Threads"])
    return total


def _wait_exit(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` has exited or the deadline passes, *without* reaping it.

    The unreaped zombie keeps the process-group id alive, so the killpg that follows
    can never hit an unrelated group that reused the number.
    """
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # reaped by someone else's waitpid(-1): it has exited
            return True
        time.sleep(0.005)
    return False


def _signal_all(targets: list) -> None:
    for kill, target in targets:
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _text(data: bytes, total: int) -> str:
    note = f"\n[truncated: {total - len(data)} more bytes]" if total > len(data) else ""
    return data.decode("utf-8", "replace") + note


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("[truncated")]
    return lines[-1].strip()[:300] if lines else ""


def _signal_detail(signum: int) -> str:
    why = {signal.SIGXCPU: "CPU time limit", signal.SIGXFSZ: "file size limit",
           signal.SIGKILL: "e.g. CPU hard limit or out of memory"}.get(signum, "")
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"killed by {name}" + (f" ({why})" if why else "")


def _remove_tree(path: str) -> None:
    """Delete the run's host folder whatever the program left in it; never raises.

    Contained runs wrote only to their own tmpfs, so the folder is empty. Without namespaces
    (mode none) the program wrote here: coreutils ``rm -rf`` copes with trees of any depth and
    with paths longer than PATH_MAX (it works relative to each directory), never following a
    symlink; any other user first gives itself rwx (``chmod -R``) on what it owns. The
    iterative walk below is the fallback where ``rm`` is missing.
    """
    try:
        for sub in ("work", "root", ""):
            os.rmdir(os.path.join(path, sub) if sub else path)
        return
    except OSError:
        pass
    try:
        if os.geteuid() != 0:
            subprocess.run(["chmod", "-R", "u+rwx", path], capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", "--one-file-system", "--", path], capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        pass
    if not os.path.lexists(path):
        return
    try:
        _remove_iteratively(path)
    except Exception:  # what is left is in the system temp folder; the run's result stands
        shutil.rmtree(path, ignore_errors=True)


def _remove_iteratively(top: str) -> None:
    root = os.geteuid() == 0
    stack = [(top, False)]
    while stack:
        path, emptied = stack.pop()
        if emptied:
            try:
                os.rmdir(path)
            except OSError:
                pass
            continue
        if not root:
            _chmod_quietly(path)
        stack.append((path, True))
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, False))
            else:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass


def _chmod_quietly(path: str) -> None:
    try:
        os.chmod(path, 0o700)
    except OSError:  # not ours or already gone: rmtree's ignore_errors covers it
        pass


