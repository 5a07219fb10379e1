# The sandboxed interpreter's first code, sent after wire.py's source through `python -I -B -S -c`.
# It is never imported by the harness. It must import only what is already harmless (no
# subprocess, no ctypes): modules it imports sit in sys.modules before the guard exists and
# so are reachable without an "import" event.
#
# Messages to the harness go on the result pipe as frames: one kind byte, 8 bytes of big-endian
# length, the payload. I: the isolation in force; N: the nonce (the program ran to its end);
# R: ready to serve calls (payload b"1", or b"0" when the entry point is not a function);
# V: a return value (wire JSON); E: the exception a call raised. Requests come on stdin in the
# same framing with kind C: the wire JSON of (args, kwargs).
import builtins
import linecache
import os
import resource
import sys
import traceback
import types


def read_exactly(n):
    chunks, left = [], n
    while left:
        chunk = os.read(0, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame():
    head = read_exactly(9)
    if head is None:
        return None, None
    body = read_exactly(int.from_bytes(head[1:], "big"))
    return (None, None) if body is None else (head[:1], body)


def send(fd, kind, payload):
    data = kind + len(payload).to_bytes(8, "big") + payload
    while data:
        data = data[os.write(fd, data):]


def set_limits(limits):
    for name, (soft, hard) in limits.items():
        which = getattr(resource, name)
        ceiling = resource.getrlimit(which)[1]
        if os.geteuid() != 0 and ceiling != resource.RLIM_INFINITY:  # only root may raise a hard limit
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(which, (soft, hard))


def drop_privileges(uid, gid):
    """setuid to (uid, gid), keeping imports working through fd aliases of the install (for mode
    none, where the install may sit under a home directory that ``nobody`` cannot enter)."""
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
    """Drop privileges if asked; describe the layers in force, the namespaces first."""
    walls = "%s namespaces + " % cfg["containment"] if cfg["containment"] != "none" else "no namespaces: "
    if cfg["containment"] == "bwrap" and cfg["ids"]:  # else why not: the host's uid, shared by every run
        userns = cfg.get("userns", "")
        walls += "own user namespace + " if userns == "own user namespace" else "the host's user namespace (%s) + " % userns
    hook = " + audit hook" if cfg["audit_hook"] else " (audit hook off)"
    if cfg["ids"]:
        uid, gid = cfg["ids"]
        try:
            drop_privileges(uid, gid)
            return walls + "uid %d + rlimits%s" % (uid, hook)
        except OSError as err:
            return walls + ("root: privilege drop to uid %d failed (%s); rlimits%s only, RLIMIT_NPROC does "
                            "not bind root" % (uid, err, hook))
    if os.geteuid() == 0:
        return walls + "root: privilege drop disabled; rlimits%s only, RLIMIT_NPROC does not bind root" % hook
    return walls + "not root: runs as uid %d; rlimits%s only" % (os.getuid(), hook)


def make_guard(workdir):
    """The audit hook. Its lists live in this closure, not in globals a program could empty."""
    # Process creation and signals, sockets, ctypes, tracing and profiling hooks, and the
    # introspection that could reach the harness (gc, other threads' frames).
    # sys._getframe stays allowed because typing and collections use it.
    denied_events = frozenset({
        "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.kill", "os.killpg",
        "subprocess.Popen", "pty.spawn", "signal.pthread_kill",
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.cdata", "ctypes.cdata/buffer",
        "ctypes.call_function", "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at",
        "socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
        "sys._current_exceptions", "sys.addaudithook", "sys.settrace", "sys.setprofile",
        "resource.setrlimit", "resource.prlimit", "webbrowser.open", "urllib.Request",
    })
    # Modules whose functions bypass the events above (_posixsubprocess.fork_exec raises none; Tcl
    # runs processes and opens files itself; sqlite, dbm and readline write files from C without an
    # "open" event) or poke at memory. signal.pidfd_send_signal raises no event either: the pid
    # namespace is what keeps it from reaching another run. os.mknod and os.mkfifo raise no event in
    # 3.11: the mount namespace (a read-only root, the run's own tmpfs) is what bounds them.
    denied_imports = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "_testcapi", "_testinternalcapi",
                                "_xxsubinterpreters", "_tkinter", "tkinter", "_sqlite3", "sqlite3", "readline",
                                "_dbm", "_gdbm", "dbm"})
    # event -> ((index of a path argument, index of its dir_fd argument or None), ...); immutable
    path_events = tuple({
        "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),), "os.rename": ((0, 2), (1, 3)),
        "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
        "os.truncate": ((0, None),), "os.utime": ((0, 3),), "os.setxattr": ((0, None),),
        "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),), "os.mkfifo": ((0, 2),), "os.mknod": ((0, 2),),
    }.items())
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    own_proc = "/proc/%d" % os.getpid()
    # Everything the guard calls is bound here, and it reads only exact str, bytes and int values:
    # a program can reach module globals (``posixpath.abspath``) and could shadow a builtin there
    # (``any = lambda *a: False``), and a str subclass could answer the guard differently from the
    # kernel (its own ``__str__``, ``startswith``). So paths are resolved below with the os primitives
    # bound now, never through os.path, and any other type of name or path is refused.
    readlink, lstat, stat, getcwd = os.readlink, os.lstat, os.stat, os.getcwd
    FileNotFoundError = builtins.FileNotFoundError  # noqa: A001
    encoding = sys.getfilesystemencoding()
    type, str, bytes, int, len = builtins.type, builtins.str, builtins.bytes, builtins.int, builtins.len
    frozenset_ = builtins.frozenset
    PermissionError, ImportError, OSError, TypeError, ValueError = (  # noqa: A001
        builtins.PermissionError, builtins.ImportError, builtins.OSError, builtins.TypeError, builtins.ValueError)
    events_with_paths = frozenset_(e for e, _ in path_events)

    def text(path):
        """``path`` as an exact str, or TypeError: a subclass or another type cannot be checked."""
        if type(path) is str:
            return path
        if type(path) is bytes:
            return path.decode(encoding, "surrogateescape")
        raise TypeError("sandbox: a path of type %s cannot be checked; pass a str" % type(path).__name__)

    def fd_path(fd):
        if type(fd) is not int:
            raise TypeError("sandbox: a descriptor of type %s cannot be checked" % type(fd).__name__)
        return readlink("/proc/self/fd/%d" % fd)

    def realpath(path):
        """The absolute path with every symlink followed (a missing tail is kept as written)."""
        done, hops = [], 0
        if not path.startswith("/"):  # the working directory is already resolved: walk only what follows it
            done = [part for part in getcwd().split("/") if part]
        todo = path.split("/")[::-1]
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            here = "/" + "/".join(done + [part])
            try:
                is_link = lstat(here).st_mode & 0o170000 == 0o120000
            except (FileNotFoundError, PermissionError):  # a tail not created yet, or a directory it may
                is_link = False  # not search (its own /proc/self/fd after the uid drop); ENAMETOOLONG... refuses
            if not is_link:
                done.append(part)
                continue
            hops += 1
            if hops > 40:
                raise OSError("too many symbolic links")
            target = readlink(here)
            if target.startswith("/"):
                done = []
            todo.extend(target.split("/")[::-1])
        return "/" + "/".join(done)

    def resolve(path, dir_fd=None):
        if type(path) is int:
            return fd_path(path)
        path = text(path)
        if dir_fd is not None and dir_fd != -1 and not path.startswith("/"):
            path = fd_path(dir_fd) + "/" + path
        return realpath(path)

    def resolved(path, dir_fd=None):
        """The real path, or None where it cannot be told (then every check refuses)."""
        try:
            return resolve(path, dir_fd)
        except (OSError, TypeError, ValueError):
            return None

    def within(real):
        return real is not None and (real == workdir or real.startswith(workdir + "/"))

    def inside(path, dir_fd=None):
        return within(resolved(path, dir_fd))

    def of_other_process(real):
        if real is None:
            return True
        parts = real.split("/")
        return real == "/proc" or (len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and not (
            real == own_proc or real.startswith(own_proc + "/")))

    def other_process(path):
        return type(path) is not int and of_other_process(resolved(path))

    def directory(real):
        try:
            return real is not None and stat(real).st_mode & 0o170000 == 0o040000
        except OSError:
            return False

    def writes(mode, flags):
        if type(flags) is int:
            return flags & write_flags
        if mode is None or type(mode) is str:
            return mode is not None and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
        return True  # a mode we cannot read counts as a write

    def guard(event, args):
        if event in denied_events:
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "import":
            name = args[0]
            if type(name) is not str:
                raise ImportError("sandbox: an import name of type %s is not allowed" % type(name).__name__)
            if name.rpartition(".")[2] in denied_imports:  # "x._posixsubprocess" too
                raise ImportError("sandbox: importing %s is not allowed" % name)
        if event == "open":
            path, mode, flags = args
            checkable(path)
            real = resolved(path)  # once per event
            # the event carries no dir_fd: a relative path is checked against the working directory, so
            # no descriptor of a directory, inside it or out, can be had to serve as another base
            if writes(mode, flags) and not within(real):
                raise PermissionError("sandbox: writing %s outside the working directory is not allowed" % shown(path))
            if type(path) is not int and of_other_process(real):
                raise PermissionError("sandbox: opening %s of another process is not allowed" % shown(path))
            if type(path) is not int and directory(real):
                raise PermissionError("sandbox: opening the directory %s is not allowed (it could serve as "
                                      "a dir_fd)" % shown(path))
        if event in ("os.listdir", "os.scandir") and args and args[0] is not None and checkable(args[0]) \
                and other_process(args[0]):
            raise PermissionError("sandbox: listing other processes is not allowed")
        if event in events_with_paths:
            for name, pairs in path_events:
                if name != event:
                    continue
                for index, fd_index in pairs:
                    checkable(args[index])
                    if not inside(args[index], None if fd_index is None else args[fd_index]):
                        raise PermissionError("sandbox: %s on %s outside the working directory is not allowed"
                                              % (event, shown(args[index])))

    def checkable(path):
        """True for a path the guard can read exactly (str, bytes, a descriptor); PermissionError otherwise."""
        t = type(path)
        if t is str or t is bytes or t is int:
            return True
        raise PermissionError("sandbox: a path of type %s cannot be checked; pass a str" % t.__name__)

    def shown(path):
        """A path for a message, without calling anything of the program's (its repr if exact)."""
        t = type(path)
        return path.__repr__() if t is str or t is bytes or t is int else "a %s" % t.__name__

    return guard


def serve(fd, function):
    """Answer the harness's calls of the entry point until it closes stdin."""
    send(fd, b"R", b"1" if callable(function) else b"0")
    while True:
        kind, body = read_frame()
        if kind != b"C":
            finish(0)
        try:
            args, kwargs = loads(body)  # noqa: F821 (wire.py's, sent before this file)
            send(fd, b"V", dumps(function(*args, **kwargs)))  # noqa: F821
        except BaseException as err:  # SystemExit too: the harness decides what a raise means
            try:
                text = "%s: %s" % (type(err).__name__, err)
            except BaseException:
                text = type(err).__name__
            send(fd, b"E", text[:2000].encode("utf-8", "replace"))


def main():
    import json

    cfg = json.loads(sys.argv[1])
    fd = cfg["result_fd"]
    os.closerange(3, fd)  # nothing the launchers passed on (a namespace, a filter) reaches the program
    os.closerange(fd + 1, 65536)
    kind, frame = read_frame()
    nonce, _, source = (frame or b"").partition(b"\n")
    set_limits(cfg["limits"])
    send(fd, b"I", isolation(cfg).encode())
    source = source.decode("utf-8", "replace")
    linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")
    program = types.ModuleType("__main__")  # the program's own __main__, not the child code's globals
    program.__builtins__ = __builtins__
    sys.modules["__main__"] = program
    if cfg["audit_hook"]:
        sys.addaudithook(make_guard(cfg["workdir"]))
    try:
        exec(compile(source, "<program>", "exec"), program.__dict__)
    except BaseException:  # SystemExit too: leaving early is not completing
        try:
            traceback.print_exc()
        except BaseException:
            sys.__stderr__.write("program raised an exception that could not be printed\n")
        finish(1)
    if cfg["serve"]:
        serve(fd, program.__dict__.get(cfg["serve"]))
    send(fd, b"N", nonce)
    finish(0)


def finish(code):
    """Flush what the program printed and leave without running its atexit/finalizers."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
