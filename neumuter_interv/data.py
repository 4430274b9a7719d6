"""Reading forget sets and turning texts into padded token batches.

A forget set is a file of texts: ``.txt`` (one sample per line), ``.jsonl`` (one object per line with
a ``text`` field) or ``.csv`` (a ``text`` column, as in the knowledge-unlearning ``lm_extraction_*``
files). Every problem is reported as a ``NeuMuterError`` naming the file, line or column.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import NeuMuterError

IGNORE_INDEX = -100


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """Texts of a ``.txt``, ``.jsonl`` or ``.csv`` file; refuses a missing file, column or an empty set."""
    path = Path(path)
    if not path.is_file():
        raise NeuMuterError(f"forget file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
    elif suffix == ".jsonl":
        texts = _read_jsonl(path, column)
    elif suffix == ".csv":
        texts = _read_csv(path, column)
    else:
        raise NeuMuterError(f"cannot read {str(path)!r}: use .txt (one sample per line), .jsonl or .csv with a {column!r} column")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise NeuMuterError(f"forget file {str(path)!r} holds no text: the forget set is empty")
    return texts


def _read_jsonl(path: Path, column: str) -> list[str]:
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise NeuMuterError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or column not in record:
            raise NeuMuterError(f"{path}:{number}: missing {column!r} field")
        texts.append(str(record[column]))
    return texts


def _read_csv(path: Path, column: str) -> list[str]:
    csv.field_size_limit(1 << 30)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or column not in reader.fieldnames:
            found = ", ".join(reader.fieldnames or []) or "none"
            raise NeuMuterError(f"{path}: missing {column!r} column (columns found: {found})")
        return [row[column] or "" for row in reader]


def texts_sha256(texts: Sequence[str]) -> str:
    """A fingerprint of a forget set (one text per line), recorded with every run and export."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


@dataclass
class TokenBatch:
    """A padded batch: ``labels`` equal ``input_ids`` with pads set to -100 (ignored by every loss)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def labels(self) -> torch.Tensor:
        return self.input_ids.masked_fill(self.attention_mask == 0, IGNORE_INDEX)

    def to(self, device) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device))

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
    """Token ids per text, refusing (not truncating) any text longer than ``max_length``."""
    if not texts:
        raise NeuMuterError(f"the {what} set is empty")
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    for index, sample in enumerate(ids):
        if len(sample) < 2:
            raise NeuMuterError(f"{what} sample {index} has fewer than 2 tokens: nothing to predict")
        if max_length is not None and len(sample) > max_length:
            raise NeuMuterError(
                f"{what} sample {index} is {len(sample)} tokens long, longer than the model's context of {max_length}"
            )
    return ids


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> TokenBatch:
    """Pad to the longest sequence; right padding for teacher forcing, left for generation."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if side == "left" else slice(0, len(sequence))
        input_ids[row, span] = torch.as_tensor(sequence, dtype=torch.long)
        attention_mask[row, span] = 1
    return TokenBatch(input_ids, attention_mask)


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
