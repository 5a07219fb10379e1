"""Run untrusted, model-generated Python in a contained child process.

One call of :func:`run_untrusted` runs one program in a fresh interpreter and says
whether it ran to completion. The layers, outermost first:

1. **Process.** A new session/process group with a scrubbed environment (no inherited
   tokens), a fresh empty working directory that is deleted afterwards, captured and
   size-capped stdout/stderr, and a wall-clock deadline after which the whole group is
   SIGKILLed (so forked children die too).
2. **Resource limits** set in the child before the program runs: address space
   (RLIMIT_AS), CPU seconds, processes (RLIMIT_NPROC), file size, open files, no core dumps.
3. **Privileges.** When we are root the child drops to an unprivileged account
   (``nobody``) before the program runs, so the kernel itself refuses writes outside the
   working directory (owned by that account), reads of root-only files such as
   ``/proc/<parent>/environ``, and RLIMIT_NPROC becomes binding (it never binds root).
4. **Audit hook** (PEP 578) installed just before the program: refuses writes, renames
   and deletions outside the working directory, process creation (``os.system``,
   ``subprocess``, ``os.fork``, ``os.exec*``, ``os.posix_spawn``), signals to other
   processes, sockets, ``ctypes``, and the introspection that could reach the harness.

The program passes only if the bootstrap reaches the line after ``exec`` and writes a
random nonce (received on stdin, never in argv or the environment) to a private pipe;
``sys.exit(0)`` or ``os._exit(0)`` half-way through leaves no nonce and so fails.

Why the privilege drop happens inside the child rather than through
``Popen(user=...)``: the interpreter often lives where ``nobody`` cannot even look
(here ``/root/.pyenv``, with ``/root`` mode 0700; pyenv and conda installs under a
home directory are common), so ``nobody`` cannot exec it. The child therefore starts
as root, opens its install prefixes as directory descriptors, points ``sys.path`` at
``/proc/self/fd/<n>/...`` (a process can always follow its own fd links), and then
calls setgroups/setgid/setuid before any untrusted code runs. If that fails (no
CAP_SETUID, no /proc), the run goes on with the audit hook and limits only and
``Result.isolation`` and ``Result.detail`` say so.

Limitations, written down rather than hidden:

- Not root: no privilege drop is possible. The program runs as the calling user, so
  the audit hook is the only barrier for the user's own files, and RLIMIT_NPROC
  counts *all* of that user's processes; we set it to (tasks the user has now +
  ``max_procs``), which is racy if the user starts other processes meanwhile.
- The audit hook is a tripwire, not a security boundary: CPython documents that
  hooks can be bypassed by sufficiently determined code. Likewise a program that
  deliberately walks the interpreter's frames (``f_back``) could find the nonce. Both
  need a targeted attack on this harness, not a sloppy or confused model.
- A descendant that escapes both the process group and the session (needs a fork,
  which layers 2-4 refuse) would outlive the deadline.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

STATUSES = ("passed", "failed", "timeout", "killed", "error")

# What the child sees of the environment: nothing inherited, so no HF_TOKEN & co.
# HOME and TMPDIR are filled with the working directory per run.
SAFE_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}


@dataclass(frozen=True)
class Result:
    """Outcome of one sandboxed run.

    status: "passed" (ran to completion), "failed" (raised, exited early or without
    the completion nonce), "timeout" (wall clock exceeded, group killed), "killed"
    (ended by a signal, e.g. the CPU or file-size limit), "error" (the harness could
    not run the program at all). elapsed is wall-clock seconds. isolation says which
    layers were in force, e.g. "uid 65534 + rlimits + audit hook"; when it does not
    start with "uid ", detail carries it too, so a degraded run is never silent.
    pid is the child's pid, which is also its process-group and session id.
    """

    passed: bool
    status: str
    detail: str
    elapsed: float
    isolation: str = ""
    stdout: str = ""
    stderr: str = ""
    pid: int | None = None


def run_untrusted(program: str, timeout: float = 3.0, memory_mb: int = 1024, *,
                  cpu_seconds: int | None = None, max_procs: int = 16, max_file_mb: int = 16,
                  max_open_files: int = 64, output_limit: int = 64 * 1024,
                  user: str | int | None = "nobody", audit_hook: bool = True) -> Result:
    """Run ``program`` (Python source) in a contained child; never raises for what it does.

    timeout: wall-clock seconds for the whole run, interpreter start included.
    memory_mb: address-space limit (MiB). cpu_seconds: CPU limit, default ceil(timeout)+1.
    max_procs: processes/threads the program may have in total, itself included.
    max_file_mb: largest file it may write (MiB). max_open_files: descriptor limit.
    output_limit: bytes of stdout and of stderr kept (the rest is read and dropped).
    user: account to drop to when we are root; None stays root (audit hook only).
    audit_hook: False disables the in-process guard; only for testing the OS layers.
    Raises ValueError only for bad arguments, naming the argument and what is allowed.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout={timeout!r}: allowed is a number of seconds > 0")
    _check_counts(memory_mb=memory_mb, max_procs=max_procs, max_file_mb=max_file_mb,
                  max_open_files=max_open_files, output_limit=output_limit,
                  **({} if cpu_seconds is None else {"cpu_seconds": cpu_seconds}))
    start = time.monotonic()
    try:
        ids = _target_ids(user)
    except (KeyError, OSError) as err:
        raise ValueError(f"user={user!r}: no such account ({err}); allowed is a user name, a uid or None") from None
    limits = _limits(memory_mb, cpu_seconds or math.ceil(timeout) + 1, max_procs, max_file_mb, max_open_files,
                     ids[0] if ids else os.getuid())
    try:
        workdir = tempfile.mkdtemp(prefix="inilora-sandbox-")
    except OSError as err:
        return Result(False, "error", f"cannot create a working directory: {err}", time.monotonic() - start)
    try:
        return _run_in(workdir, program, start + timeout, timeout, limits, ids, audit_hook, output_limit, start)
    finally:
        _remove_tree(workdir)


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


def _limits(memory_mb: int, cpu_seconds: int, max_procs: int, max_file_mb: int, max_open_files: int,
            uid: int) -> dict[str, list[int]]:
    """RLIMIT name -> [soft, hard] for the child.

    RLIMIT_NPROC counts every task of the real uid, not just this child's, so the
    limit is what that uid runs now plus ``max_procs``. The CPU hard limit sits one
    second above the soft one so that a program ignoring SIGXCPU still gets SIGKILL.
    """
    mib = 1024 * 1024
    return {
        "RLIMIT_AS": [memory_mb * mib] * 2,
        "RLIMIT_CPU": [cpu_seconds, cpu_seconds + 1],
        "RLIMIT_NPROC": [_count_tasks(uid) + max_procs] * 2,
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


def _run_in(workdir: str, program: str, deadline: float, timeout: float, limits: dict, ids: tuple[int, int] | None,
            audit_hook: bool, output_limit: int, start: float) -> Result:
    """Spawn the bootstrap in ``workdir``, feed it the nonce and program, and judge the outcome."""
    if ids:
        os.chown(workdir, *ids)
    nonce = secrets.token_hex(16)
    read_end, write_end = os.pipe()
    config = {"workdir": os.path.realpath(workdir), "result_fd": write_end, "ids": ids, "limits": limits,
              "audit_hook": audit_hook}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir,
            env={**SAFE_ENV, "HOME": workdir, "TMPDIR": workdir}, pass_fds=(write_end,), start_new_session=True)
    except OSError as err:
        os.close(read_end)
        return Result(False, "error", f"cannot start {sys.executable}: {err}", time.monotonic() - start)
    finally:
        os.close(write_end)
    try:
        _feed(proc, (nonce + "\n" + program).encode("utf-8", "surrogatepass"))
        outputs, exited = _collect(proc, read_end, deadline, output_limit)
    finally:
        _kill_group(proc)
        os.close(read_end)
    return _judge(proc, outputs, exited, nonce, timeout, time.monotonic() - start)


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    """Write the nonce and program to the child's stdin and close it.

    The bootstrap reads stdin to EOF before anything else, so this cannot deadlock
    even for programs larger than a pipe buffer.
    """
    for step in (lambda: proc.stdin.write(data), proc.stdin.close):
        try:
            step()
        except OSError:  # the child died early; its exit status tells why
            pass


def _collect(proc: subprocess.Popen, result_fd: int, deadline: float, cap: int) -> tuple[dict, bool]:
    """Read stdout, stderr and the result pipe until EOF or the deadline.

    Returns ({"stdout"|"stderr"|"result": (first ``cap`` bytes, total bytes)}, exited).
    Beyond ``cap`` bytes we keep reading and dropping so a chatty child never blocks.
    """
    names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr", result_fd: "result"}
    kept = {name: bytearray() for name in names.values()}
    total = dict.fromkeys(kept, 0)
    with selectors.DefaultSelector() as sel:
        for fd in names:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(max(deadline - time.monotonic(), 0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                name = names[key.fd]
                kept[name] += chunk[: max(cap - len(kept[name]), 0)]
                total[name] += len(chunk)
        exited = not sel.get_map() and _wait_exit(proc.pid, deadline)
    return {name: (bytes(kept[name]), total[name]) for name in kept}, exited


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


def _kill_group(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """SIGKILL the child's process group and session, reap the child, and wait for the rest to die.

    Done after every run, not just on timeout, so descendants left behind by a
    program that finished do not linger. The session sweep also catches descendants
    that moved to another process group of the same session. SIGKILL is delivered
    asynchronously, so we re-check for up to ``grace`` seconds: when this returns,
    nothing of the run is still executing (zombies await init, which reaps them).
    """
    _signal_all([(os.killpg, proc.pid)])
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # stuck in the kernel; nothing more we can do from here
        pass
    give_up = time.monotonic() + grace
    while (alive := _session_members(proc.pid)) and time.monotonic() < give_up:
        _signal_all([(os.kill, pid) for pid in alive])
        time.sleep(0.01)
    for stream in (proc.stdout, proc.stderr):
        stream.close()


def _signal_all(targets: list) -> None:
    for kill, target in targets:
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _session_members(sid: int) -> list[int]:
    """Pids in session ``sid`` that are not zombies (from /proc/<pid>/stat)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # after "pid (comm)": state ppid pgrp session ...
            members.append(int(name))
    return members


def _judge(proc: subprocess.Popen, outputs: dict, exited: bool, nonce: str, timeout: float,
           elapsed: float) -> Result:
    """Turn exit status, captured output and the result pipe into a :class:`Result`."""
    stdout, stderr = (_text(*outputs[name]) for name in ("stdout", "stderr"))
    lines = outputs["result"][0].decode("ascii", "replace").split("\n")
    started = lines[0].startswith("I ")
    isolation = lines[0][2:] if started else "unknown (bootstrap did not start)"
    common = dict(elapsed=elapsed, isolation=isolation, stdout=stdout, stderr=stderr, pid=proc.pid)
    degraded = "" if isolation.startswith("uid ") else f" [isolation: {isolation}]"
    if not exited:
        return Result(False, "timeout", f"no result within {timeout:g} s; process group killed" + degraded, **common)
    code = proc.returncode
    if code < 0:
        return Result(False, "killed", _signal_detail(-code) + degraded, **common)
    if not started:
        return Result(False, "error", f"bootstrap failed (exit {code}): {_last_line(stderr)}", **common)
    if code == 0 and nonce in lines[1:]:
        return Result(True, "passed", "ran to completion" + degraded, **common)
    reason = _last_line(stderr) or f"exited with status {code} before the program finished"
    return Result(False, "failed", reason + degraded, **common)


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
    """Delete the working directory whatever the program left in it; never raises.

    Iterative (an explicit stack, not os.walk or shutil.rmtree, which recurse and fail on a tree
    1500 levels deep), never following a symlink, which could point anywhere. Root ignores
    permission bits; any other user first gives itself rwx on each directory it enters.
    """
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


# The child's first code, run with `python -I -B -c`. It must import only what is
# already harmless (no subprocess, no ctypes), because modules it imports are in
# sys.modules before the guard exists and so reachable without an "import" event.
_BOOTSTRAP = r'''
import json, linecache, os, resource, sys, traceback

# Audit events refused outright. Process creation and signals, sockets, ctypes,
# and the introspection that could find the harness's nonce (gc, other threads'
# frames). sys._getframe stays allowed because typing and collections use it.
DENIED_EVENTS = frozenset({
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.kill", "os.killpg",
    "subprocess.Popen", "pty.spawn", "signal.pthread_kill",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata", "ctypes.cdata/buffer",
    "ctypes.call_function", "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at",
    "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
    "sys._current_exceptions", "sys.addaudithook", "resource.setrlimit", "resource.prlimit",
    "webbrowser.open", "urllib.Request",
})
# Modules whose functions bypass the events above (_posixsubprocess.fork_exec
# raises none) or poke at memory.
DENIED_IMPORTS = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "_testcapi", "_testinternalcapi",
                            "_xxsubinterpreters"})
# event -> [(index of a path argument, index of its dir_fd argument or None)]
PATH_EVENTS = {
    "os.remove": [(0, 1)], "os.rmdir": [(0, 1)], "os.mkdir": [(0, 2)], "os.rename": [(0, 2), (1, 3)],
    "os.link": [(0, 2), (1, 3)], "os.symlink": [(1, 2)], "os.chmod": [(0, 2)], "os.chown": [(0, 3)],
    "os.truncate": [(0, None)], "os.utime": [(0, 3)], "os.setxattr": [(0, None)],
    "os.removexattr": [(0, None)], "shutil.rmtree": [(0, 1)],
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def read_stdin():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def set_limits(limits):
    for name, (soft, hard) in limits.items():
        which = getattr(resource, name)
        ceiling = resource.getrlimit(which)[1]
        if os.geteuid() != 0 and ceiling != resource.RLIM_INFINITY:  # only root may raise a hard limit
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(which, (soft, hard))


def drop_privileges(uid, gid):
    """setuid to (uid, gid), keeping imports working through fd aliases of the install."""
    prefixes = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)}, key=len, reverse=True)
    aliases = []
    for prefix in prefixes:
        fd = os.open(prefix, os.O_RDONLY | os.O_DIRECTORY)
        alias = "/proc/self/fd/%d" % fd
        if not os.path.isdir(alias):
            raise OSError("no /proc to alias " + prefix)
        aliases.append((prefix, alias))

    def rewrite(path):
        real = os.path.realpath(path)
        for prefix, alias in aliases:
            if real == prefix or real.startswith(prefix + "/"):
                return alias + real[len(prefix):]
        return path

    sys.path[:] = [rewrite(p) for p in sys.path]
    for module in list(sys.modules.values()):  # packages remember where their submodules live
        if isinstance(getattr(module, "__path__", None), list):
            module.__path__[:] = [rewrite(p) for p in module.__path__]
    sys.path_importer_cache.clear()
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise OSError("ids did not change")


def isolation(cfg):
    """Drop privileges if asked; describe the layers in force."""
    hook = " + audit hook" if cfg["audit_hook"] else " (audit hook off)"
    if cfg["ids"]:
        uid, gid = cfg["ids"]
        try:
            drop_privileges(uid, gid)
            return "uid %d + rlimits%s" % (uid, hook)
        except OSError as err:
            return ("root: privilege drop to uid %d failed (%s); rlimits%s only, RLIMIT_NPROC does not bind root"
                    % (uid, err, hook))
    if os.geteuid() == 0:
        return "root: privilege drop disabled; rlimits%s only, RLIMIT_NPROC does not bind root" % hook
    return "not root: runs as uid %d; rlimits%s only, RLIMIT_NPROC shared with that user" % (os.getuid(), hook)


def make_guard(workdir):
    own_proc = "/proc/%d" % os.getpid()

    def resolve(path, dir_fd=None):
        if isinstance(path, int):
            return os.readlink("/proc/self/fd/%d" % path)
        path = os.fsdecode(os.fspath(path))
        if dir_fd not in (None, -1) and not os.path.isabs(path):
            path = os.path.join(os.readlink("/proc/self/fd/%d" % dir_fd), path)
        return os.path.realpath(path)

    def inside(path, dir_fd=None):
        try:
            real = resolve(path, dir_fd)
        except (OSError, TypeError, ValueError):
            return False  # cannot tell where it points: refuse
        return real == workdir or real.startswith(workdir + "/")

    def other_process(path):
        if isinstance(path, int):
            return False
        real = os.path.realpath(os.fsdecode(os.fspath(path)))
        parts = real.split("/")
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and not (
            real == own_proc or real.startswith(own_proc + "/"))

    def guard(event, args):
        if event in DENIED_EVENTS:
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "import" and args[0] in DENIED_IMPORTS:
            raise ImportError("sandbox: importing %s is not allowed" % args[0])
        if event == "open":
            path, mode, flags = args
            writes = flags & WRITE_FLAGS if isinstance(flags, int) else any(c in str(mode) for c in "wax+")
            if writes and not inside(path):
                raise PermissionError("sandbox: writing %r outside the working directory is not allowed" % (path,))
            if other_process(path):  # e.g. the parent's /proc/<pid>/environ when not root
                raise PermissionError("sandbox: opening %r of another process is not allowed" % (path,))
        for index, fd_index in PATH_EVENTS.get(event, ()):
            if not inside(args[index], None if fd_index is None else args[fd_index]):
                raise PermissionError("sandbox: %s on %r outside the working directory is not allowed"
                                      % (event, args[index]))

    return guard


def main():
    cfg = json.loads(sys.argv[1])
    result_fd = cfg["result_fd"]
    nonce, _, source = read_stdin().partition(b"\n")
    set_limits(cfg["limits"])
    os.write(result_fd, ("I " + isolation(cfg) + "\n").encode())
    source = source.decode("utf-8", "replace")
    linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")
    if cfg["audit_hook"]:
        sys.addaudithook(make_guard(cfg["workdir"]))
    try:
        exec(compile(source, "<program>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except BaseException:  # SystemExit too: leaving early is not completing
        nonce = None
        try:
            traceback.print_exc()
        except BaseException:
            sys.__stderr__.write("program raised an exception that could not be printed\n")
        finish(1)
    os.write(result_fd, nonce + b"\n")
    finish(0)


def finish(code):
    """Flush what the program printed and leave without running its atexit/finalizers."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


main()
'''
