"""Kernel namespaces around each sandboxed run: bubblewrap, or util-linux ``unshare`` without it.

Both modes give the program the same view, built by the kernel rather than by checks in
the program's own interpreter:

- new network, pid, ipc, uts and mount namespaces: no network but a loopback of its own,
  no other process visible or signalable, and when the namespace's first process dies
  the kernel kills every other one in it, so nothing outlives the run;
- a root file system of its own holding, read-only, the system directories (``/usr``,
  ``/bin``, ``/lib*``) and the interpreter's install prefix with its site-packages
  hidden; its own empty ``/tmp``, ``/var/tmp`` and ``/dev/shm`` (small tmpfs, gone with
  the run); a ``/dev`` with only null, zero, full, random and urandom;
- its working directory ``/sandbox``, a tmpfs of ``WORK_BYTES``: nothing it writes reaches the
  host's disks, and all of it is gone with the run. The project, ``results/``, home
  directories (beyond the directories that lead to the interpreter) and ``/etc`` are not in
  its view.

Under bubblewrap a seccomp filter also refuses a new user namespace (``unshare``/``clone`` with
CLONE_NEWUSER), so the program cannot become root of a namespace of its own and mount there.

``MODES``: ``auto`` takes bubblewrap and falls back to ``unshare``; ``bwrap`` and
``unshare`` insist on that one; ``none`` runs without namespaces (privilege drop,
rlimits and audit hook only), a weaker mode that must be named in the config. Mode
``unshare`` needs root, or unprivileged user namespaces for ``unshare --user``.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading

MODES = ("auto", "bwrap", "unshare", "none")
INSIDE = "/sandbox"  # where the working directory appears in a contained run
TMPFS_BYTES = 16 * 1024 * 1024  # each of /tmp, /var/tmp, /dev/shm: RAM a program may fill
WORK_BYTES = 64 * 1024 * 1024  # the working directory, also RAM
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")


class ContainmentError(RuntimeError):
    """The namespaces a mode needs cannot be set up here."""


def interpreter() -> tuple[str, str]:
    """(install prefix, executable) of the base interpreter: a venv is part of the project, its base is not."""
    prefix = os.path.realpath(sys.base_prefix)
    exe = os.path.realpath(sys.executable)
    if not exe.startswith(prefix + "/"):
        exe = os.path.join(prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    return prefix, exe


def hidden_dirs(prefix: str) -> list[str]:
    """Installed-package folders of the base interpreter (they may hold benchmark data), masked by a tmpfs."""
    paths = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})
    found = {os.path.realpath(paths[k]) for k in ("purelib", "platlib")}
    found |= {"/usr/lib/python3/dist-packages",
              f"/usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}/dist-packages"}
    return sorted(p for p in found if os.path.isdir(p))


def read_only_dirs(prefix: str) -> list[str]:
    dirs = [d for d in SYSTEM_DIRS if os.path.lexists(d)]
    if not any(prefix == d or prefix.startswith(d + "/") for d in dirs):
        dirs.append(prefix)
    return dirs


def bwrap_command(workdir: str, root_dir: str, is_root: bool, seccomp: int | None = None,
                  userns: int | None = None) -> list[str]:
    """The ``bwrap`` argv prefix. As root only CAP_SETUID/CAP_SETGID survive, for the inner privilege drop
    to ``nobody``, a real uid: in the run's own user namespace (``userns``, from :func:`user_namespace`)
    where there is one, else in the host's. ``workdir`` and ``root_dir`` are unused (the working
    directory is a tmpfs); the signature is the builders' own. ``seccomp``: a descriptor of
    :func:`seccomp_program` (``seccomp_fd``); both descriptors are passed to the child."""
    prefix, _ = interpreter()
    cmd = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session",
           "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    if userns is not None:
        cmd += ["--userns", str(userns)]
    cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if is_root else ["--unshare-user"]
    for d in read_only_dirs(prefix):
        cmd += ["--symlink", os.readlink(d), d] if os.path.islink(d) else ["--ro-bind", d, d]
    for d in hidden_dirs(prefix):
        cmd += ["--tmpfs", d, "--remount-ro", d]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        cmd += ["--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", d]
    if seccomp is not None:
        cmd += ["--seccomp", str(seccomp)]
    cmd += ["--perms", "1777", "--size", str(WORK_BYTES), "--tmpfs", INSIDE, "--chdir", INSIDE, "--remount-ro", "/", "--"]
    return cmd


# Run by /bin/sh as the first process of the new namespaces: build the same root as bwrap on a
# tmpfs mounted at $2 (a private empty folder of the run), pivot into it, then run the program as
# its child: a pid namespace's first process ignores signals it has no handler for, the CPU limit's too.
# Every mount is nosuid and the program runs under no_new_privs (util-linux setpriv), so a set-user-ID
# binary of the read-only system directories gains nothing.
_UNSHARE_SCRIPT = r'''
set -eu
W=$1 R=$2 SIZE=$3 RO=$4 HIDE=$5; shift 5  # W: the working directory's size in bytes
P0=$PATH PATH=/usr/sbin:/sbin:$PATH
mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev inilora-root "$R"
for p in $RO; do
  if [ -L "$p" ]; then mkdir -p "$R$(dirname "$p")"; ln -s "$(readlink "$p")" "$R$p"; continue; fi
  mkdir -p "$R$p"; mount --rbind "$p" "$R$p"; mount -o remount,bind,ro,nosuid,nodev "$R$p"
done
for p in $HIDE; do mount -t tmpfs -o ro,nosuid,nodev,size=4k inilora-hidden "$R$p"; done
mkdir -p "$R/proc" "$R/dev" "$R/tmp" "$R/var/tmp" "$R/sandbox"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t tmpfs -o mode=0755,size=64k,nosuid,noexec inilora-dev "$R/dev"
for d in ''' + " ".join(DEVICES) + r'''; do
  touch "$R/dev/$d"; mount --bind "/dev/$d" "$R/dev/$d"; mount -o remount,bind,nosuid,noexec "$R/dev/$d"
done
mkdir "$R/dev/shm"
for t in /tmp /var/tmp /dev/shm; do mount -t tmpfs -o "mode=1777,size=$SIZE,nosuid,nodev" inilora-tmp "$R$t"; done
mount -t tmpfs -o "mode=1777,size=$W,nosuid,nodev" inilora-work "$R/sandbox"
mkdir "$R/.old"; cd "$R"; pivot_root . .old; umount -l /.old; rmdir /.old
mount -o remount,bind,ro,nosuid,nodev /
cd /sandbox
PATH=$P0 setpriv --no-new-privs -- "$@"
'''


def unshare_command(workdir: str, root_dir: str, is_root: bool, seccomp: int | None = None,
                    userns: int | None = None) -> list[str]:
    """The ``unshare`` argv prefix; ``root_dir`` is an empty folder the new root is mounted on. No seccomp
    filter: util-linux cannot load one (nested user namespaces stay possible, bounded by the run's cgroup),
    and no user namespace of the run's own (``userns`` is unused)."""
    prefix, _ = interpreter()
    cmd = [shutil.which("unshare") or "unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork",
           "--kill-child", "--propagation", "private"]
    if not is_root:
        cmd += ["--user", "--map-root-user"]
    return cmd + ["/bin/sh", "-c", _UNSHARE_SCRIPT, "inilora-sandbox", str(WORK_BYTES), root_dir, str(TMPFS_BYTES),
                  " ".join(read_only_dirs(prefix)), " ".join(hidden_dirs(prefix))]


BUILDERS = {"bwrap": bwrap_command, "unshare": unshare_command}

# A seccomp filter for bubblewrap (``--seccomp FD``): no new user namespace inside the sandbox, as
# Flatpak's filter does it. unshare(2) and clone(2) with CLONE_NEWUSER fail with EPERM; clone3(2),
# whose flags a classic BPF filter cannot read (they sit in memory), fails with ENOSYS, so the C
# library falls back to clone(2); a system call of another ABI (x32, a 32-bit compat call) fails with
# EPERM. bwrap's own --disable-userns would need --unshare-user, which as root maps the sandbox to
# uid 0 outside; the filter keeps the run's real uid nobody. The numbers are per architecture.
CLONE_NEWUSER = 0x10000000
SECCOMP_ABI = {  # machine -> (AUDIT_ARCH_*, clone, unshare, clone3)
    "x86_64": (0xC000003E, 56, 272, 435),
    "aarch64": (0xC00000B7, 220, 97, 435),
}
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38


def seccomp_program(machine: str | None = None) -> bytes | None:
    """The filter as bubblewrap reads it (struct sock_filter[]), or None on an architecture not in
    SECCOMP_ABI (the run then has no filter, and its isolation report says so)."""
    abi = SECCOMP_ABI.get(machine or platform.machine())
    if abi is None:
        return None
    arch, clone, unshare, clone3 = abi
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    program = [
        (ld, 0, 0, 4),  # 0: seccomp_data.arch
        (jeq, 1, 0, arch),  # 1: our ABI: go on; any other: EPERM
        (ret, 0, 0, _RET_ERRNO | _EPERM),  # 2
        (ld, 0, 0, 0),  # 3: seccomp_data.nr
        (jge, 7, 0, 0x40000000),  # 4: x32 system calls -> EPERM (line 12)
        (jeq, 7, 0, clone3),  # 5: -> ENOSYS (line 13)
        (jeq, 2, 0, unshare),  # 6: -> flags (line 9)
        (jeq, 1, 0, clone),  # 7: -> flags (line 9)
        (ret, 0, 0, _RET_ALLOW),  # 8
        (ld, 0, 0, 16),  # 9: args[0], its low 32 bits (little-endian)
        (jset, 1, 0, CLONE_NEWUSER),  # 10: -> EPERM (line 12)
        (ret, 0, 0, _RET_ALLOW),  # 11
        (ret, 0, 0, _RET_ERRNO | _EPERM),  # 12
        (ret, 0, 0, _RET_ERRNO | _ENOSYS),  # 13
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in program)


@functools.lru_cache(maxsize=None)
def _seccomp_memfd() -> int | None:
    program = seccomp_program()
    if program is None:
        return None
    fd = os.memfd_create("inilora-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program)
    return fd


_MEMFD_LOCK = threading.Lock()  # the worker threads' first runs would otherwise each make one


def seccomp_fd() -> int | None:
    """A fresh descriptor of the filter for one bwrap (each reads it from offset 0), to close after
    starting it; None where there is no filter for this architecture."""
    with _MEMFD_LOCK:
        memfd = _seccomp_memfd()
    return None if memfd is None else os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY)


@functools.lru_cache(maxsize=None)
def probe(mode: str) -> str | None:
    """None when ``mode`` works here (checked once per process by running the interpreter in it), else why not."""
    if mode == "none":
        return None
    tool = "bwrap" if mode == "bwrap" else "unshare"
    if not shutil.which(tool):
        return f"{tool} is not installed" + (" (Debian package bubblewrap)" if tool == "bwrap" else "")
    if mode == "unshare" and not shutil.which("setpriv"):
        return "unshare needs setpriv (util-linux) to set no_new_privs, and it is not installed"
    base = tempfile.mkdtemp(prefix="inilora-probe-")
    try:
        os.mkdir(os.path.join(base, "work"))
        os.mkdir(os.path.join(base, "root"))
        seccomp = seccomp_fd() if mode == "bwrap" else None
        cmd = BUILDERS[mode](os.path.join(base, "work"), os.path.join(base, "root"), os.geteuid() == 0, seccomp)
        try:
            proc = subprocess.run([*cmd, interpreter()[1], "-I", "-S", "-c", "import os; print(os.getcwd())"],
                                  capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
                                  pass_fds=() if seccomp is None else (seccomp,))
        finally:
            if seccomp is not None:
                os.close(seccomp)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{tool} failed: {err}"
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if proc.returncode != 0 or proc.stdout.strip() != INSIDE:
        return f"{tool} failed (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or [''])[-1][:300]}"
    return None


def choose(mode: str) -> str:
    """The mode to run under: ``mode`` itself, or for ``auto`` the first of bwrap, unshare that works.

    Raises ContainmentError saying what was tried and why it failed; ValueError for an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"containment={mode!r}: allowed are {list(MODES)}")
    tried = ("bwrap", "unshare") if mode == "auto" else (mode,)
    reasons = []
    for candidate in tried:
        why = probe(candidate)
        if why is None:
            return candidate
        reasons.append(why)
    raise ContainmentError(f"containment {mode!r} cannot be set up here: {'; '.join(reasons)}. Install bubblewrap "
                           "(apt-get install bubblewrap), or name the weaker mode 'none' in the config to run "
                           "without namespaces")


def command(mode: str, workdir: str, root_dir: str, seccomp: int | None = None, userns: int | None = None) -> list[str]:
    """argv prefix that runs a command contained by ``mode`` (already chosen), [] for ``none``; ``seccomp``
    and ``userns``: descriptors from :func:`seccomp_fd` and :func:`user_namespace` for bwrap (the caller
    passes them to the child and closes them)."""
    return [] if mode == "none" else BUILDERS[mode](workdir, root_dir, os.geteuid() == 0, seccomp, userns)


def user_namespace(uid: int, gid: int) -> int | str:
    """A descriptor of a new user namespace for one run (root only), or why there is none.

    It maps uid/gid 0 to the host's 0, which bubblewrap needs to set up the mounts (the interpreter may
    sit under /root), and ``uid``/``gid`` (nobody) to themselves, which the program drops to. So each
    run is nobody in a namespace of its own: its own user keyring, its own RLIMIT_NPROC count, nothing
    of another run's. util-linux ``unshare --user`` creates it; this process writes the maps (as root in
    the parent namespace), keeps a descriptor and ends the helper."""
    tool = shutil.which("unshare")
    if tool is None or os.geteuid() != 0:
        return "not root" if tool else "unshare (util-linux) is not installed"
    try:  # the helper says "ready" from inside the new namespace, then waits to be killed
        helper = subprocess.Popen([tool, "--user", "/bin/sh", "-c", "echo ready; exec sleep 30"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as err:
        return f"cannot start unshare: {err}"
    try:
        if helper.stdout.readline() != b"ready\n":  # it failed and exited: EOF
            helper.wait()
            return f"unshare --user failed: {helper.stderr.read().decode(errors='replace').strip()[:200]}"
        for name, inner in (("uid_map", uid), ("gid_map", gid)):
            with open(f"/proc/{helper.pid}/{name}", "w") as fh:
                fh.write(f"0 0 1\n{inner} {inner} 1\n")
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        return f"cannot set up a user namespace: {err}"
    finally:
        helper.kill()
        helper.wait()
        helper.stdout.close()
        helper.stderr.close()
