"""Run directories: created, recognised, locked for one process, and cleaned of mpno's own files only.

A run directory holds a marker (``.mpno-run``) written when the run starts, so
that ``--overwrite`` can tell a directory mpno made from any other one and
removes only the files mpno writes there. While a run trains or resumes, it
holds an exclusive lock on ``.lock`` (``fcntl.flock``): the kernel releases it
when the process exits, even after a crash or ``kill -9``, so a lock is never
stale; a second process is refused with the holder's pid.

Nothing is written through a symbolic link (:mod:`mpno.writing`): the lock is
opened without following one, and a run directory in which one of mpno's own
names is a link is refused, so a run directory someone hands you cannot be
turned into a way to overwrite your files.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time
from pathlib import Path

from ..writing import TEMPORARY, remove_orphans, write_text

MARKER = ".mpno-run"
LOCK = ".lock"
#: What mpno writes into a run directory (file names and glob patterns); nothing else is ever removed.
OWN_FILES = ("config.json", "checkpoint.pt", "best.pt", "metrics.csv", "summary.json", "curves.png",
             "samples_*.png", ".*.tmp", MARKER)
OWN_DIRS = ("tensorboard",)


class RunDirectoryError(ValueError):
    """A run directory cannot be used: not mpno's, in use, not writable."""


def default_path() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def is_run_directory(path: Path) -> bool:
    marker = path / MARKER
    return marker.is_file() and not marker.is_symlink()  # a linked marker is not one mpno wrote


def _contents(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.name != LOCK]


def _remove_own_files(path: Path) -> None:
    for pattern in OWN_FILES:
        for file in path.glob(pattern):
            file.unlink(missing_ok=True)
    for name in OWN_DIRS:
        if (path / name).is_symlink():
            (path / name).unlink()  # the link, not what it points to
        elif (path / name).is_dir():
            shutil.rmtree(path / name)


def refuse_links(path: Path) -> None:
    """``RunDirectoryError`` naming the first of mpno's own names in ``path`` that is a symbolic link:
    writing there would overwrite the file it points to."""
    for pattern in (*OWN_FILES, *OWN_DIRS):
        for file in sorted(path.glob(pattern)):
            if file.is_symlink() and not TEMPORARY.match(file.name):
                raise RunDirectoryError(f"{file} is a symbolic link; mpno never writes through a link (that would "
                                        "overwrite the file it points to): remove it, or use another run directory")


class RunLock:
    """An exclusive, crash-safe lock on a run directory for this process's lifetime (or until :meth:`release`)."""

    def __init__(self, path: Path):
        self.path = path / LOCK
        self.file = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, as before
            return self
        try:  # never through a link, and never truncating a file that is not the lock's own
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise RunDirectoryError(f"{self.path} is a symbolic link; mpno never writes through a link (that "
                                        "would overwrite the file it points to): remove it") from None
            raise
        self.file = os.fdopen(descriptor, "r+b")
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
            self.release()
            raise RunDirectoryError(f"{self.path} is not mpno's lock file (it is a special file or has other "
                                    "names); remove it")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self.file.read(100).decode(errors="replace").strip() or "another process"
            self.release()
            raise RunDirectoryError(f"{self.path.parent} is in use by a running mpno process ({holder}); wait for "
                                    "it to finish, or choose another --out") from None
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}".encode())
        self.file.flush()
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the lock
            self.file = None


def create(out: str | None, overwrite: bool) -> tuple[Path, RunLock]:
    """A new run directory (default ``runs/<date-time>``), locked, with its marker.

    An existing directory is used only if it is empty, or is an mpno run that never
    finished an epoch (a run that failed before it started), or with ``overwrite``
    if it is an mpno run: then mpno's own files are removed and anything else is kept.
    """
    path = Path(out) if out else default_path()
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"--out {path} is a file; give a directory for the run")
    if path.is_dir() and _contents(path) and not is_run_directory(path):  # checked before anything is written
        raise FileExistsError(f"{path} exists, is not empty and is not an mpno run directory; choose another "
                              "--out (--overwrite only replaces runs mpno made, and never files it did not write)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirectoryError(f"--out {path}: cannot create it ({err.strerror}); choose a writable place") from None
    if not os.access(path, os.W_OK):
        raise RunDirectoryError(f"--out {path} is not writable; choose a writable place")
    lock = RunLock(path).acquire()
    try:
        if _contents(path):
            if (path / "checkpoint.pt").exists() and not overwrite:
                raise FileExistsError(f"{path} holds an mpno run; resume it with --resume, pass --overwrite to "
                                      "replace it, or choose another --out")
            _remove_own_files(path)
        write_text(path / MARKER, json.dumps({"created": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
    except BaseException:
        lock.release()
        raise
    return path, lock


def reopen(path: Path) -> RunLock:
    """Lock an existing run directory to resume it, refuse it if one of mpno's names in it is a link,
    and clear what a killed write left behind."""
    lock = RunLock(path).acquire()
    try:
        refuse_links(path)
    except BaseException:
        lock.release()
        raise
    remove_orphans(path, live_too=True)  # the lock says no one else is writing here
    return lock
