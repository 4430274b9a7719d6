"""The general-capability corpus: real English prose harvested offline from the running Python.

Utility after unlearning is measured as the paper does, on general held-out text that has nothing to
do with the memorized people. Every machine with Python has such text on disk: the interpreter's own
reference documentation (``pydoc_data/topics.py``, ~750 KB) and the docstrings of standard-library
modules. We harvest it at build time (nothing is committed), keep the prose paragraphs, drop code and
headings, and pack the paragraphs into chunks short enough for a 128-token training window.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
from collections.abc import Iterable, Iterator

# Standard-library modules whose docstrings are prose-rich and import without side effects. A fixed
# list (not "everything installed") keeps the corpus identical on every machine with the same Python.
DOCSTRING_MODULES = (
    "abc", "argparse", "asyncio", "base64", "bisect", "calendar", "codecs", "collections",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib",
    "email.message", "enum", "fractions", "functools", "gettext", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html.parser", "http.client", "http.server", "inspect", "io", "ipaddress", "itertools",
    "json", "logging", "mailbox", "mimetypes", "numbers", "operator", "optparse", "os", "pathlib",
    "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shlex", "shutil",
    "smtplib", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "timeit", "tokenize", "traceback", "typing", "unittest", "urllib.parse",
    "urllib.request", "uuid", "warnings", "weakref", "xml.dom.minidom", "xml.etree.ElementTree",
    "zipfile",
)

_MIN_WORDS = 8
_HEADING_UNDERLINE = re.compile(r"^\s*([=\-~*^\"'`#+])\1{2,}\s*$")
_WS = re.compile(r"\s+")


def _pydoc_topics() -> Iterator[str]:
    """The interpreter's reference manual, one topic per string, in sorted topic order."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _stdlib_docstrings() -> Iterator[str]:
    """Docstrings of the modules in ``DOCSTRING_MODULES`` and their public members, in a fixed order."""
    for module_name in DOCSTRING_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # a Python built without e.g. sqlite3
            continue
        seen: set[int] = set()
        objects = [module] + [getattr(module, n) for n in sorted(vars(module)) if not n.startswith("_")]
        for obj in objects:
            if id(obj) in seen or (obj is not module and getattr(obj, "__module__", None) != module.__name__):
                continue
            seen.add(id(obj))
            doc = inspect.getdoc(obj)
            if doc:
                yield doc


def _is_prose(paragraph_lines: list[str]) -> bool:
    """True for running English text; False for code, tables, grammar rules, headings and lists of names."""
    first = paragraph_lines[0]
    if first.startswith((" ", "\t", ">>>", "...", "|", "+")):
        return False  # indented literal block, doctest, table
    text = " ".join(line.strip() for line in paragraph_lines)
    words = text.split()
    if len(words) < _MIN_WORDS:
        return False
    letters = sum(ch.isalpha() or ch.isspace() for ch in text)
    if letters / len(text) < 0.85 or text[-1] not in ".:;)!?":
        return False
    return sum(w.islower() and w.isalpha() for w in words) / len(words) > 0.5


def paragraphs(documents: Iterable[str]) -> Iterator[str]:
    """Split documents at blank lines and yield the prose paragraphs as single whitespace-normalised lines."""
    for document in documents:
        for block in re.split(r"\n\s*\n", document):
            lines = [line for line in block.splitlines() if line.strip() and not _HEADING_UNDERLINE.match(line)]
            if lines and _is_prose(lines):
                yield _WS.sub(" ", " ".join(line.strip() for line in lines)).strip()


def chunks(paras: Iterable[str], max_words: int) -> Iterator[str]:
    """Pack consecutive paragraphs into chunks of at most ``max_words`` words, splitting long paragraphs
    at sentence ends (or hard at ``max_words`` when a sentence is longer than that)."""
    current: list[str] = []
    for para in paras:
        sentences = re.split(r"(?<=[.!?])\s+", para)
        for sentence in sentences:
            words = sentence.split()
            while len(words) > max_words:
                if current:
                    yield " ".join(current)
                    current = []
                yield " ".join(words[:max_words])
                words = words[max_words:]
            if len(current) + len(words) > max_words and current:
                yield " ".join(current)
                current = []
            current.extend(words)
    if current:
        yield " ".join(current)


def general_corpus(seed: int, max_words: int, heldout_chunks: int) -> tuple[list[str], list[str]]:
    """Harvest, clean and chunk the corpus; return ``(train_chunks, heldout_chunks)``.

    Duplicate chunks are removed (docstrings repeat across classes), the rest shuffled with ``seed``
    and the first ``heldout_chunks`` held out for perplexity.
    """
    documents = list(_pydoc_topics()) + list(_stdlib_docstrings())
    unique = list(dict.fromkeys(chunks(paragraphs(documents), max_words)))
    unique = [c for c in unique if len(c.split()) >= _MIN_WORDS]
    random.Random(seed).shuffle(unique)
    return unique[heldout_chunks:], unique[:heldout_chunks]
