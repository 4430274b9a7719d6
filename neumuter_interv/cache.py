"""The cache: what the project builds once and reads again (worlds, dequantized checkpoints, reference scores,
neighbours), under ``default_cache_dir()``.

Every entry is written whole (a killed build leaves nothing that passes for an entry) and checked when it is
read: a directory entry (``build_cache_entry``) carries a manifest of the sizes and SHA-256 hashes of the files
its build wrote, a
JSON entry (``cached_json``) the hash of its content. An entry that does not match (truncated, edited, zeroed
weights) is rebuilt, with one line on stderr that says so, instead of failing or being used silently.
A directory entry is hashed once per process; later reads in the same process only compare sizes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import NeuMuterError
from .output import json_text, write_json

MANIFEST = ".cache-manifest.json"  # in each directory entry: {relative path: [size, sha256]}
_VERIFIED: set[tuple[str, float]] = set()  # entries hashed by this process (path, manifest mtime)


def default_cache_dir() -> Path:
    """Where built worlds and dequantized checkpoints live: ``$NEUMUTER_CACHE``, else ``~/.cache/neumuter_interv``."""
    return Path(os.environ.get("NEUMUTER_CACHE") or Path.home() / ".cache" / "neumuter_interv")


def build_cache_entry(target: Path, marker: str, build: Callable[[Path], None]) -> bool:
    """Build the cache directory ``target`` once, whole: unless it holds ``marker`` and matches its manifest,
    ``build(staging)`` writes a hidden sibling under a file lock (concurrent processes wait for one build),
    the manifest is added and the sibling is renamed into place. A killed build leaves no manifest; what it
    left is removed by the next build. Returns whether it built."""
    if _problem(target, marker) is None:
        return False
    with _usable_cache(target), FileLock(str(target) + ".lock"):
        problem = _problem(target, marker)
        if problem is None:
            return False
        if problem != "absent":
            print(f"cache entry {target} {problem}: rebuilding it", file=sys.stderr)
        for stale in target.parent.glob(f".{target.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            build(staging)
            (staging / MANIFEST).write_text(json.dumps(_manifest(staging), indent=1))
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)
            _VERIFIED.add(_verified_key(target))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return True


_CACHE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EEXIST}


@contextmanager
def _usable_cache(entry: Path) -> Iterator[None]:
    """Turn a cache that cannot be written (a file, ``/proc``, read-only, a full disk) into one line."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _refuse(entry, error)
    try:
        yield
    except OSError as error:
        if error.errno not in _CACHE_ERRNOS:
            raise
        _refuse(entry, error)


def _refuse(entry: Path, error: OSError):
    reason = os.strerror(error.errno) if error.errno else str(error)
    raise NeuMuterError(f"the cache cannot hold {entry} ({reason}): set NEUMUTER_CACHE to a writable directory "
                        f"(now {default_cache_dir()})") from None


def _problem(target: Path, marker: str) -> str | None:
    """None for an entry that matches its manifest, else what is wrong (``"absent"``: nothing there yet)."""
    if not (target / marker).exists():
        return "absent" if not target.exists() else f"lacks {marker}"
    try:
        recorded = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return "has no readable manifest"
    key = _verified_key(target)
    hashes = key not in _VERIFIED
    changed = []
    for name, (size, digest) in recorded.items():
        path = target / name
        if not path.is_file() or path.stat().st_size != size or (hashes and _sha256(path) != digest):
            changed.append(name)
    if changed:
        return f"does not match its manifest ({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})"
    _VERIFIED.add(key)
    return None


def _verified_key(target: Path) -> tuple[str, float]:
    return str(target.resolve()), (target / MANIFEST).stat().st_mtime if (target / MANIFEST).exists() else 0.0


def _manifest(root: Path) -> dict[str, list]:
    """Every file the build wrote: relative path -> [size, sha256]. Files added to the entry later (the
    ``scores/`` a world keeps beside its weights, each a ``cached_json`` entry checked on its own) are not
    part of it."""
    return {path.relative_to(root).as_posix(): [path.stat().st_size, _sha256(path)]
            for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """``compute()``'s JSON value, computed once and stored at ``path`` with the hash of its content; a file
    that is unreadable or does not match its hash is computed again (one line on stderr). The value goes
    through the same JSON round trip on a hit and a miss: one type for both."""
    if path.exists():
        stored = _read_verified(path)
        if stored is not _DAMAGED:
            return stored
        print(f"cache entry {path} is damaged or was edited: computing it again", file=sys.stderr)
    value = compute()
    with _usable_cache(path):
        write_atomically(path, value)
    return json.loads(path.read_text())["data"]


_DAMAGED = object()


def _read_verified(path: Path) -> Any:
    """The data of a file written by ``write_atomically``, or ``_DAMAGED`` where it is unreadable or does not
    match its hash."""
    try:
        stored = json.loads(path.read_text())
        if _content_hash(stored["data"]) == stored["sha256"]:
            return stored["data"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return _DAMAGED


def write_atomically(path: Path, data: Any) -> None:
    """Write a ``cached_json`` entry so that a concurrent reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.tmp{os.getpid()}")
    stored = json.loads(json_text(data))  # what a reader will see (NaN as null): the hash is of that
    write_json(staging, {"sha256": _content_hash(stored), "data": stored})
    os.replace(staging, path)


def _content_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def code_fingerprint() -> str:
    """The SHA-256 of this package's source files: a journal (``Journal``) written by other code is not reused."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class Journal:
    """What a long command has finished so far (e.g. ``compare``'s methods), kept in the cache so that the same
    command, killed and run again with the same inputs, settings and code, continues where it stopped instead of
    starting over. ``identity`` is everything its entries depend on (JSON); the code's fingerprint is added. The
    journal is a ``cached_json``-style file, rewritten whole after each entry, and removed by ``finish`` once
    the command's output is written."""

    def __init__(self, kind: str, identity: Any):
        key = _content_hash({"identity": json.loads(json_text(identity)), "code": code_fingerprint()})[:24]
        self.path = default_cache_dir() / "journals" / kind / f"{key}.json"
        self.entries: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        stored = _read_verified(self.path)
        if isinstance(stored, dict):
            return stored
        print(f"journal {self.path} is damaged or was edited: starting over", file=sys.stderr)
        return {}

    def record(self, name: str, value: Any) -> Any:
        """Keep ``value`` as entry ``name``; returns it as a reader of the journal will see it (JSON round trip)."""
        self.entries[name] = json.loads(json_text(value))
        with _usable_cache(self.path):
            write_atomically(self.path, self.entries)
        return self.entries[name]

    def finish(self) -> None:
        """The command's output is written: the journal is no longer needed."""
        self.path.unlink(missing_ok=True)
