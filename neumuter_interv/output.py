"""Writing result directories safely: all or nothing, never over an existing result by surprise, never
over the command's own input.

Every command that writes a directory (``unlearn``, ``eval``, ``demo``, ``compare``, ``export``,
``scan``) checks its target with ``check_writable`` before any long work, then writes through
``output_directory``: files go into a hidden sibling ``.NAME.partial-PID-XXXX``, which becomes the target
only when everything succeeded. The rules, checked once here for every command:

* the target is a directory or does not exist yet, is not a symbolic link, and is not the current
  directory (or one that holds it);
* a non-empty target is replaced only with ``overwrite``; the commit re-checks (a rename onto a
  non-empty directory fails), so of two runs racing for one empty target the second is refused;
* the target is not, does not hold, and does not lie inside any of the command's inputs, nor the cache
  (``default_cache_dir``), which every command reads (its worlds, its dequantized weights);
* its nearest existing parent is a directory this process can create entries in (probed for real, so a
  read-only file system or ``/proc`` is refused too, whoever runs it);
* staging directories honour the umask (a served checkpoint must be readable), and those left by a
  killed process (its PID gone) are removed by the next write to the same parent.

Cache entries (built worlds, dequantized checkpoints, scores) are written the same all-or-nothing way by
``cache``, under a file lock instead of the overwrite rules, and checked when read.
"""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .corpora import glob_reaches
from .errors import NeuMuterError

Inputs = Mapping[str, "str | Path | None"]


def check_writable(target: str | Path, overwrite: bool = False, inputs: Inputs | None = None) -> Path:
    """The target as given, once every rule of the module docstring holds; call before long work.

    ``inputs`` maps a label (``"--model"``) to each path the command reads; entries that are not local
    paths (a Hub id, None) are ignored.
    """
    target = Path(target)
    shown = str(target)
    resolved = Path(os.path.realpath(target))
    _check_name_lengths(shown, resolved)
    if target.is_symlink():
        raise NeuMuterError(f"output {shown!r} is a symbolic link (to {os.readlink(target)!r}); name a real directory")
    if resolved == Path.cwd() or resolved in Path.cwd().parents:
        raise NeuMuterError(f"output {shown!r} is the current directory or holds it; name a new directory")
    if target.exists() and not target.is_dir():
        raise NeuMuterError(f"output {shown!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise NeuMuterError(f"output directory {shown!r} exists and is not empty (pass --overwrite to replace it)")
    from .cache import default_cache_dir  # the cache writes through this module

    for label, path in {**(inputs or {}), "the cache ($NEUMUTER_CACHE)": default_cache_dir()}.items():
        _refuse_overlap(shown, resolved, label, path)
    _probe_parent(shown, resolved.parent)
    return target


def read_kept_results(path: str | Path | None, key: str) -> dict:
    """The ``key`` entries of an earlier run's results JSON (a study's ``--keep``), ``{}`` without a path;
    call before long work: a missing or foreign file is a ``NeuMuterError`` naming it."""
    if path is None:
        return {}
    try:
        kept = json.loads(Path(path).read_text())[key]
    except OSError as error:
        raise NeuMuterError(f"--keep {str(path)!r} cannot be read: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError):
        raise NeuMuterError(f"--keep {str(path)!r} is not an earlier run's results: it has no {key!r} entries") from None
    if not isinstance(kept, dict):
        raise NeuMuterError(f"--keep {str(path)!r} is not an earlier run's results: its {key!r} is not a mapping")
    return kept


def _refuse_overlap(shown: str, resolved: Path, label: str, path) -> None:
    if isinstance(path, str) and glob.has_magic(path) and not os.path.lexists(path):
        if glob_reaches(path, resolved):
            raise NeuMuterError(f"output {shown!r} lies where the glob {path!r} ({label}) reads: a rerun would read "
                                "this command's own output; choose an output directory outside it")
        return
    if path is None or not os.path.lexists(path):
        return
    source = Path(os.path.realpath(path))
    if source == resolved:
        relation = "is"
    elif resolved in source.parents:
        relation = "holds"
    elif source in resolved.parents:
        relation = "lies inside"
    else:
        return
    raise NeuMuterError(f"output {shown!r} {relation} the input {str(path)!r} ({label}); writing it would replace "
                        "what this command reads: choose another output directory")


def _probe_parent(shown: str, parent: Path) -> None:
    """Refuse a parent that is not a directory or where no entry can be created; creates nothing."""
    existing = parent
    while not os.path.lexists(existing):
        existing = existing.parent
    if not existing.is_dir():
        raise NeuMuterError(f"cannot write output {shown!r}: {str(existing)!r} is not a directory")
    probe = existing / f".neumuter-write-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as error:
        raise NeuMuterError(f"cannot write output {shown!r}: cannot create entries in {str(existing)!r} "
                            f"({os.strerror(error.errno) if error.errno else error})") from None


STAGING_SUFFIX_BYTES = len(".partial-") + 1 + 10 + 1 + 8  # ".NAME" + ".partial-PID-XXXXXXXX" (PID up to 10 digits)


def _check_name_lengths(shown: str, resolved: Path) -> None:
    """Refuse a name the file system cannot hold, counting the staging sibling's longer name, before any work
    (a too-long name otherwise fails only at the commit, after the run)."""
    existing = resolved.parent
    while not os.path.isdir(existing):  # os.path: an over-long name is "not there", not an error
        existing = existing.parent
    name_max = os.pathconf(existing, "PC_NAME_MAX")
    for part in resolved.relative_to(existing).parts:
        extra = STAGING_SUFFIX_BYTES if part == resolved.name else 0
        if len(os.fsencode(part)) + extra > name_max:
            raise NeuMuterError(f"output {shown!r}: the name {part[:40]!r}... is {len(os.fsencode(part))} bytes; this "
                                f"file system holds names up to {name_max} bytes ({name_max - STAGING_SUFFIX_BYTES} for "
                                "the output's own name, which is staged under a longer one): choose a shorter name")
    if len(os.fsencode(resolved)) + STAGING_SUFFIX_BYTES + 64 > os.pathconf(existing, "PC_PATH_MAX"):
        raise NeuMuterError(f"output {shown[:60]!r}...: the path is too long for this file system; choose a shorter one")


@contextmanager
def output_directory(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging directory that becomes ``target`` when the block finishes without error."""
    target = check_writable(target, overwrite)
    resolved = Path(os.path.realpath(target))
    resolved.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(resolved)
    staging = _fresh_sibling(resolved, "partial")
    try:
        yield staging
        _commit(staging, resolved, str(target), overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fresh_sibling(target: Path, kind: str) -> Path:
    """A new hidden directory beside ``target``, named with this PID, created with the umask's mode."""
    path = target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def _commit(staging: Path, target: Path, shown: str, overwrite: bool) -> None:
    if overwrite and target.is_dir() and any(target.iterdir()):
        retired = _fresh_sibling(target, "old")
        try:
            target.rename(retired / "old")
        except FileNotFoundError:  # another --overwrite run retired it first: commit as onto an empty target
            pass
        try:
            os.rename(staging, target)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise NeuMuterError(f"output {shown!r} was replaced by another run while this run worked; its "
                                    "result was kept and this one was not written") from None
            raise
        finally:
            shutil.rmtree(retired, ignore_errors=True)
        return
    try:
        os.rename(staging, target)  # atomic; onto an empty directory only: re-checks what check_writable saw
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise NeuMuterError(f"output {shown!r} was written by someone else while this run worked; nothing "
                                "was replaced (pass --overwrite to replace it)") from None
        raise


def remove_stale_staging(target: Path) -> None:
    """Remove ``.NAME.partial-PID-*`` / ``.NAME.old-PID-*`` siblings of ``target`` whose process is gone
    (a SIGKILL cannot be cleaned up after by the process itself)."""
    for kind in ("partial", "old"):
        for leftover in target.parent.glob(f".{target.name}.{kind}-*-*"):
            pid = leftover.name[len(f".{target.name}.{kind}-"):].split("-")[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text(path: str | Path, text: str) -> None:
    """A report or card as UTF-8. File names are data: one that is not UTF-8 (held by Python as surrogate
    escapes) is written as backslash escapes (``caf\\udce9.txt``) instead of failing after the work."""
    Path(path).write_text(text, encoding="utf-8", errors="backslashreplace")


def write_json(path: str | Path, data: Any) -> None:
    """Strict JSON: a value that is not a finite number (NaN, an infinity) is written as ``null``."""
    Path(path).write_text(json_text(data) + "\n")


def json_text(data: Any) -> str:
    """``data`` as ``write_json`` writes it (NaN and infinities as ``null``, tensors and paths as plain values)."""
    return json.dumps(_finite(data), indent=2, sort_keys=False, default=_jsonable, allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return value


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
