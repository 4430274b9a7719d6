"""Reading forget sets and turning texts into padded token batches.

A forget set is a file of texts: ``.txt`` (one sample per line), ``.jsonl`` (one object per line with
a ``text`` field) or ``.csv`` (a ``text`` column, as in the knowledge-unlearning ``lm_extraction_*``
files). Every problem is reported as a ``NeuMuterError`` naming the file, line or column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import NeuMuterError

IGNORE_INDEX = -100


class Texts(list):
    """A list of texts that remembers the file it was read from (``source``), so that a later complaint about
    one sample (too short, too long) can name the file."""

    def __init__(self, texts, source: str | None = None):
        super().__init__(texts)
        self.source = source


def read_texts(path: str | Path, column: str = "text", what: str = "forget") -> Texts:
    """Texts of a ``.txt``, ``.jsonl`` or ``.csv`` file (UTF-8, a byte-order mark tolerated); refuses a
    missing, non-regular, undecodable or empty file and a missing column, naming the file (``what`` says
    which input it is: forget, held-out, ...)."""
    path = Path(path)
    label = f"{what} file {str(path)!r}"
    suffix = path.suffix.lower()
    content = read_text_file(path, label, "a .txt, .jsonl or .csv file")
    if suffix not in (".txt", ".jsonl", ".csv"):
        raise NeuMuterError(f"cannot read {str(path)!r}: use .txt (one sample per line), .jsonl or .csv with a {column!r} column")
    if suffix == ".txt":
        texts = split_lines(content)
    elif suffix == ".jsonl":
        texts = _read_jsonl(path, content, column)
    else:
        texts = _read_csv(path, content, column)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise NeuMuterError(f"{label} holds no text: the {what} set is empty")
    return Texts(texts, str(path))


def split_lines(content: str) -> list[str]:
    """Lines split on newlines only (``\\n``, ``\\r\\n``): a form feed or U+2028 inside a line is text, where
    ``str.splitlines`` would cut there."""
    return [line.removesuffix("\r") for line in content.split("\n")]


def parse_json(text: str, where: str):
    """JSON, strictly: a repeated key, a number too long to read or nesting too deep is one line naming
    ``where``, like a syntax error (``json.loads`` keeps the last of repeated keys and raises others raw)."""
    def refuse_repeats(pairs):
        keys = [key for key, _ in pairs]
        repeated = next((key for key in keys if keys.count(key) > 1), None)
        if repeated is not None:
            raise NeuMuterError(f"{where}: the key {repeated!r} appears twice in one object")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=refuse_repeats)
    except json.JSONDecodeError as error:
        raise NeuMuterError(f"{where}: not valid JSON ({error.msg} at line {error.lineno})") from None
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error).split(";")[0]
        raise NeuMuterError(f"{where}: not usable JSON ({reason})") from None


def read_json_file(path: Path, label: str):
    """``parse_json`` of a UTF-8 file, refusing what ``read_text_file`` refuses."""
    return parse_json(read_text_file(path, label, "a .json file"), label)


def read_text_file(path: Path, label: str, expected: str) -> str:
    """The UTF-8 text of a regular file, or one line naming ``label`` (which input it is) and the problem."""
    if not path.exists():
        raise NeuMuterError(f"{label} does not exist")
    if path.is_dir():
        raise NeuMuterError(f"{label} is a directory; give {expected}")
    if not path.is_file():
        raise NeuMuterError(f"{label} is not a regular file (a device or a pipe); give {expected}")
    return decode_text(path.read_bytes(), label)


def read_csv_records(path: str | Path, columns: Sequence[str], what: str) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of ``columns`` (all required), refusing what ``read_texts`` refuses."""
    path = Path(path)
    return _csv_rows(path, read_text_file(path, f"{what} file {str(path)!r}", "a .csv file"), columns)


def _csv_rows(path: Path, content: str, columns: Sequence[str]) -> list[dict[str, str]]:
    csv.field_size_limit(1 << 30)
    reader = csv.DictReader(io.StringIO(content, newline=""))
    try:
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        twice = [column for column in columns if (reader.fieldnames or []).count(column) > 1]
        if twice:
            raise NeuMuterError(f"{path}: the column {twice[0]!r} appears twice in the header; keep one")
        if missing:
            found = ", ".join(reader.fieldnames or []) or "none"
            raise NeuMuterError(f"{path}: missing {' and '.join(map(repr, missing))} column (columns found: {found})")
        return [{column: row[column] or "" for column in columns} for row in reader]
    except csv.Error as error:
        raise NeuMuterError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None


def decode_text(raw: bytes, label: str) -> str:
    """UTF-8 (with or without a byte-order mark), or one line naming the file, the byte and the fix."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise NeuMuterError(f"{label} is not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); "
                            "convert it, e.g. iconv -f latin1 -t utf-8") from None


def _read_jsonl(path: Path, content: str, column: str) -> list[str]:
    texts = []
    for number, line in enumerate(split_lines(content), start=1):
        if not line.strip():
            continue
        record = parse_json(line, f"{path}:{number}")
        if not isinstance(record, dict) or column not in record:
            raise NeuMuterError(f"{path}:{number}: missing {column!r} field")
        if not isinstance(record[column], str):
            raise NeuMuterError(f"{path}:{number}: the {column!r} field is {type(record[column]).__name__}, not a string")
        texts.append(record[column])
    return texts


def _read_csv(path: Path, content: str, column: str) -> list[str]:
    return [row[column] for row in _csv_rows(path, content, [column])]


def texts_sha256(texts: Sequence[str]) -> str:
    """A fingerprint of a forget set (one text per line), recorded with every run and export."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


@dataclass
class TokenBatch:
    """A padded batch: ``labels`` equal ``input_ids`` with pads set to -100 (ignored by every loss), and with
    the positions ``target_mask`` marks 0 (tokens a loss must not train on: token-selective forgetting)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_mask: torch.Tensor | None = None

    @property
    def labels(self) -> torch.Tensor:
        kept = self.attention_mask if self.target_mask is None else self.attention_mask * self.target_mask
        return self.input_ids.masked_fill(kept == 0, IGNORE_INDEX)

    def to(self, device) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device),
                          None if self.target_mask is None else self.target_mask.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def model_context_length(model) -> int | None:
    """The most positions the model has (``max_position_embeddings`` or its older names); None if unknown."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def tokenize(tokenizer, texts: Sequence[str], max_length: int | None = None, what: str = "forget") -> list[list[int]]:
    """Token ids per text, refusing (not truncating) any text longer than ``max_length``.

    A text far longer in characters than ``max_length`` is judged on a prefix first (``_PREFIX_CHARS_PER_TOKEN``
    characters per allowed token), so that a 10 MB line is refused in milliseconds, not tokenized whole.
    """
    if isinstance(texts, str):
        raise NeuMuterError(f"the {what} set must be a list of texts, got one string (wrap it: [text])")
    if not texts:
        raise NeuMuterError(f"the {what} set is empty")
    ids = []
    for index, text in enumerate(texts):
        where = _sample_name(texts, index, what)
        if max_length is not None and len(text) > _PREFIX_CHARS_PER_TOKEN * max_length:
            prefix = tokenizer(text[:_PREFIX_CHARS_PER_TOKEN * max_length], add_special_tokens=False)["input_ids"]
            if len(prefix) > max_length + 1:  # + 1: the cut may split one token in two
                raise NeuMuterError(f"{where} is more than {max_length} tokens long ({len(text):,} characters), "
                                    f"longer than the model's context of {max_length}")
        sample = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(sample) < 2:
            raise NeuMuterError(f"{where} has fewer than 2 tokens: nothing to predict")
        if max_length is not None and len(sample) > max_length:
            raise NeuMuterError(f"{where} is {len(sample)} tokens long, longer than the model's context of {max_length}")
        ids.append(sample)
    return ids


_PREFIX_CHARS_PER_TOKEN = 16


def _sample_name(texts: Sequence[str], index: int, what: str) -> str:
    """``"forget sample 3 of data/forget.txt"``, or without the file when the texts did not come from one."""
    source = getattr(texts, "source", None)
    return f"{what} sample {index} of {source}" if source else f"{what} sample {index}"


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right",
              targets: Sequence[Sequence[bool]] | None = None) -> TokenBatch:
    """Pad to the longest sequence; right padding for teacher forcing, left for generation. ``targets``
    (one flag per token of each sequence) marks the tokens a loss trains on; without it, every token."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    target_mask = None if targets is None else torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
        input_ids[row, span] = torch.as_tensor(sequence, dtype=torch.long)
        attention_mask[row, span] = 1
        if target_mask is not None:
            if len(targets[row]) != len(sequence):
                raise NeuMuterError(f"{len(targets[row])} target flags for a sequence of {len(sequence)} tokens")
            target_mask[row, span] = torch.as_tensor([int(flag) for flag in targets[row]], dtype=torch.long)
    return TokenBatch(input_ids, attention_mask, target_mask)


def pad_id_of(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


def batches(sequences: Sequence[Sequence[int]], batch_size: int, pad_id: int) -> list[TokenBatch]:
    """Fixed-composition, right-padded batches in the given order."""
    if batch_size < 1:
        raise NeuMuterError(f"batch size must be at least 1, got {batch_size}")
    return [pad_batch(sequences[i:i + batch_size], pad_id) for i in range(0, len(sequences), batch_size)]
