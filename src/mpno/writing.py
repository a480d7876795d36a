"""How mpno writes files: whole or not at all, never through a symbolic link, and with one clear line when it fails.

Every file mpno creates or rewrites (run directories, ``generate`` and ``predict``
outputs, plots, baselines) is written by :func:`replacing` or a helper built on
it:

* a target that is a symbolic link is refused (:class:`LinkError`): writing through
  it would overwrite whatever file the link points to;
* the content goes to a temporary file ``.NAME.<pid>.tmp`` beside the target,
  created exclusively (``O_EXCL``: a link planted at that name is never followed),
  then renamed over the target; a rename replaces a name, never a link's target;
* if the write fails (an error, Ctrl-C, a full disk) the temporary file is removed
  and the target is untouched; a full disk is reported as :class:`NoSpaceError`,
  naming the device;
* temporary files that killed writers left behind (their pid is gone) are removed
  the next time the same file is written.

HDF5 files are written through :func:`new_hdf5`, which keeps HDF5 from crashing the
process when a write fails (it does when it wrote to a full disk itself).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
from pathlib import Path
from typing import IO, Iterable, Iterator

from .memory import size

#: What killed writers leave: ``.NAME.<pid>.tmp``.
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


class LinkError(ValueError):
    """mpno was asked to write a file whose name is a symbolic link."""


class NoSpaceError(OSError):
    """A write failed because the device (or the user's quota) is full."""


class NotWritableError(OSError):
    """A file cannot be written where it was asked for: a read-only file system, or no permission."""


def refuse_link(path: str | os.PathLike, option: str = "") -> None:
    """``LinkError`` if ``path`` is a symbolic link (``option``: the flag that named it, for the message)."""
    path = Path(path)
    if path.is_symlink():
        label = f"{option} " if option else ""
        raise LinkError(f"{label}{path} is a symbolic link; mpno never writes through a link (that would overwrite "
                        "the file it points to): remove the link or choose another path")


def check_output(path: str | os.PathLike, overwrite: bool, inputs: Iterable[str | os.PathLike] = (),
                 option: str = "--out") -> Path:
    """``path`` if a new output may be written there: not a link, not a directory, none of ``inputs``
    (under any name), and not an existing file unless ``overwrite``."""
    path = Path(path)
    refuse_link(path, option)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a directory; give a file name")
    for source in inputs:
        if path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise ValueError(f"{option} {path} is the input {source}; writing it would destroy the input: "
                             "choose another output file")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    return path


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(directory: str | os.PathLike, name: str | None = None, live_too: bool = False) -> None:
    """Remove the temporary files of killed writers in ``directory`` (of the file ``name`` only, if given):
    those whose pid is no longer running, or all of them with ``live_too`` (when a lock says no one
    else writes there). Links are removed, never followed."""
    directory = Path(directory)
    pattern = f".{glob.escape(name)}.*.tmp" if name else ".*.tmp"
    for file in directory.glob(pattern):
        match = TEMPORARY.match(file.name)
        if match and (name is None or match["name"] == name) and \
                (live_too or int(match["pid"]) == os.getpid() or not _alive(int(match["pid"]))):
            file.unlink(missing_ok=True)


def no_space(error: BaseException, path: Path) -> NoSpaceError | None:
    """A :class:`NoSpaceError` for ``path`` if ``error`` (or what caused it) is a full device or quota."""
    seen = error
    while seen is not None:
        text = str(seen)
        if (isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT)) or \
                "No space left on device" in text or "errno = 28," in text or "Disk quota exceeded" in text:
            full = NoSpaceError(f"{path}: no space left on {device_of(path.parent)}; free some space there or "
                                "write elsewhere (nothing partial was left behind)")
            full.errno = errno.ENOSPC
            return full
        seen = seen.__cause__ or seen.__context__
    return None


def device_of(directory: Path) -> str:
    """The device holding ``directory`` and where it is mounted, e.g. ``/dev/sda1 (mounted at /data)``."""
    place = Path(os.path.abspath(directory))
    while not place.exists() and place != place.parent:
        place = place.parent
    mount = place
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        with open("/proc/self/mounts") as table:
            sources = {fields[1]: fields[0] for fields in (line.split() for line in table) if len(fields) > 1}
    except OSError:
        sources = {}
    source = sources.get(str(mount))
    return f"{source} (mounted at {mount})" if source else f"the device mounted at {mount}"


def require_space(path: str | os.PathLike, needed: float) -> None:
    """Now, before any work: ``NotWritableError`` if the file ``path`` cannot be written in its directory (or the
    nearest one that exists), ``NoSpaceError`` if it (about ``needed`` bytes) cannot fit on its device."""
    path = Path(path)
    directory = Path(os.path.abspath(path.parent))
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    if not os.access(directory, os.W_OK):  # before the free space: a read-only device reports none free
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
        why = "is on a read-only file system" if read_only else "is not writable (permission denied)"
        refused = NotWritableError(f"{path}: cannot be written: {directory} {why}; write elsewhere (the default "
                                   "example's data: set MPNO_CACHE to a writable directory)")
        refused.errno = errno.EROFS if read_only else errno.EACCES
        raise refused
    free = shutil.disk_usage(directory).free
    if needed > free:
        full = NoSpaceError(f"{path}: no space left on {device_of(directory)} for it: it needs about {size(needed)} "
                            f"and {size(free)} are free; free some space there, write elsewhere or ask for less")
        full.errno = errno.ENOSPC
        raise full


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (it does not exist yet: create it exclusively);
    renamed to ``path`` when the block ends, removed if the block fails."""
    path = Path(path)
    refuse_link(path)
    remove_orphans(path.parent, path.name)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as err:
        temporary.unlink(missing_ok=True)
        full = no_space(err, path)
        if full is not None:
            raise full from None
        if isinstance(err, OSError) and err.filename is not None and Path(err.filename) == temporary:
            raise type(err)(err.errno, err.strerror, str(path)) from None  # name the file asked for
        raise


@contextlib.contextmanager
def open_replacing(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A new file object (``"wb"``, ``"w+b"`` or ``"w"``) whose content replaces ``path`` when the block ends."""
    with replacing(path) as temporary:
        access = os.O_RDWR if "+" in mode else os.O_WRONLY
        descriptor = os.open(temporary, access | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_CLOEXEC", 0), 0o666)
        with open(descriptor, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as file:
            yield file


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), safely."""
    with open_replacing(path, "w") as file:
        file.write(text)


class _Guarded:
    """The binary file object h5py's ``fileobj`` driver writes to: it never raises into HDF5.

    The first failed write is kept (:meth:`check` raises it) and later writes are
    dropped, so HDF5 can always close the file. (After a write fails inside HDF5's own
    driver, closing the file fails and the process crashes when it exits.)
    """

    def __init__(self, file: IO):
        self.file, self.error = file, None

    def write(self, data) -> int:
        if self.error is None:
            try:
                return self.file.write(data)
            except BaseException as err:  # Ctrl-C too: raised by check(), outside HDF5
                self.error = err
        return len(memoryview(data))

    def read(self, size: int = -1):
        return self.file.read(size)

    def readinto(self, buffer):
        return self.file.readinto(buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.file.truncate(size) if self.error is None else (size or 0)

    def flush(self) -> None:
        if self.error is None:
            try:
                self.file.flush()
            except BaseException as err:
                self.error = err

    def check(self) -> None:
        """Raise the error of a failed write, if one failed."""
        if self.error is not None:
            raise self.error


class HDF5Output:
    """An HDF5 file being written by :func:`new_hdf5`: ``file`` (an ``h5py.File``) and :meth:`check`."""

    def __init__(self, file, guard: _Guarded):
        self.file, self._guard = file, guard

    def check(self) -> None:
        """Raise now if a write has failed (e.g. the disk is full), instead of when the file is closed."""
        self._guard.check()


@contextlib.contextmanager
def new_hdf5(path: str | os.PathLike) -> Iterator[HDF5Output]:
    """An HDF5 file that replaces ``path`` when the block ends (as :func:`replacing`); nothing is left
    if the block or any write fails."""
    import h5py

    with open_replacing(path, "w+b") as raw:
        guard = _Guarded(raw)
        file = h5py.File(guard, "w")
        try:
            yield HDF5Output(file, guard)
        finally:
            file.close()  # cannot fail: the guard swallows write errors
        guard.check()
