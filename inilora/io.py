"""Writing artifacts so a killed job never leaves a file a later run would accept, and one writer
per run folder."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary name in the same folder, fsync, then rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_dir(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_dir)`` on a sibling folder, then swap it in under ``path``.

    A folder cannot be renamed over a non-empty one, so an old copy is moved aside first;
    a kill between the two renames leaves no folder under ``path`` (a rerun redoes it),
    never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            shutil.rmtree(old)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_result(path: str) -> dict:
    """A result JSON, read once per process however many tables and statistics look at it (treat
    the dict as read-only); a file rewritten since (other mtime or size) is read again."""
    st = os.stat(path)
    return _read_json(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=1024)
def _read_json(path: str, mtime_ns: int, size: int) -> dict:
    return json.loads(Path(path).read_text())


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    """sha256 of a file's bytes, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class IntegrityError(ValueError):
    pass


def check_recorded_hash(path: Path, record: Path, key: str, rerun: str) -> None:
    """Refuse ``path`` when ``record`` (a JSON written with it) holds another sha256 under ``key``.

    No record at all is accepted (a file made outside the workflow); a record without the key is
    an artifact from before hashes were kept, refused so that it is rebuilt, never silently reused.
    """
    path, record = Path(path), Path(record)
    if not record.is_file():
        return
    stored = json.loads(record.read_text()).get(key)
    if stored is None:
        raise IntegrityError(f"{record} records no content hash ({key}) for {path}; delete both and rerun {rerun}")
    here = file_sha256(path)
    if here != stored:
        raise IntegrityError(f"{path} was altered after it was written: its sha256 is {here[:16]}..., {record.name} "
                             f"recorded {stored[:16]}...; delete {path} and {record} and rerun {rerun}")


WRITER_LOCK = ".writer.lock"


class LockHeld(RuntimeError):
    pass


class Preempted(RuntimeError):
    """A job stopped on SIGTERM (a scheduler's pre-emption or cancel) after saving what resumes it."""


@contextlib.contextmanager
def writer_lock(folder: Path, job: str) -> Iterator[None]:
    """Hold ``folder``'s one-writer lock (``.writer.lock`` in it) while the body runs; a second writer
    stops at once with ``LockHeld`` naming the holder's pid and host.

    A job whose shell was killed (``kill -9``, a lost node's Snakemake) can leave its Python process
    running as an orphan, still writing; without the lock a rerun would write the same folder at the
    same time. ``flock`` is released by the kernel when the holder dies however it dies, so a stale
    lock file never blocks anyone; Linux maps it onto POSIX locks on NFS, so it holds across the
    machines of a cluster's shared filesystem too. The file is removed when the body ends (a killed
    holder leaves it behind, unlocked).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WRITER_LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(_holder_message(folder, path)) from None
        try:  # the file a finished holder unlinked after we opened it is no lock: take the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"job": job, "pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.time()}).encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held, so the folder keeps only its artifacts
        os.close(fd)  # closing the only descriptor releases the lock


def _holder_message(folder: Path, path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"])) if "since" in holder else "?"
    return (f"{folder} is being written by another {holder.get('job', 'job')}: pid {holder.get('pid', '?')} "
            f"on host {holder.get('host', '?')}, since {since}. Two writers would mix their files; stop "
            f"that process (or let it finish) and rerun")
