"""Fingerprints of data files: what a run records of the files it trained on, so that a resumed run can tell
whether they changed."""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

#: Bytes read at a time while hashing.
CHUNK = 8 * 2**20


def fingerprint(path: str | os.PathLike) -> dict:
    """``{"path", "size", "modified", "sha256"}`` of a file: its resolved path, size in bytes, modification
    time (UTC, ISO 8601) and the SHA-256 of all its bytes (read in chunks of :data:`CHUNK`)."""
    path = Path(path)
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    status = path.stat()
    modified = datetime.datetime.fromtimestamp(status.st_mtime, datetime.timezone.utc).isoformat()
    return {"path": str(path.resolve()), "size": status.st_size, "modified": modified, "sha256": hasher.hexdigest()}


def changes(recorded: dict) -> list[str]:
    """What changed in the file a :func:`fingerprint` was taken of: its absence, its size, its contents (a file
    whose contents are the same is unchanged, whatever its modification time)."""
    path = Path(recorded["path"])
    if not path.is_file():
        return ["it is gone"]
    now = fingerprint(path)
    said = []
    if now["size"] != recorded["size"]:
        said.append(f"size {recorded['size']:,} → {now['size']:,} bytes")
    if now["sha256"] != recorded["sha256"]:
        said.append(f"contents differ (SHA-256 {recorded['sha256'][:12]}… → {now['sha256'][:12]}…, modified "
                    f"{now['modified']})")
    return said
