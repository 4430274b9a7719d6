"""Neighbour samples for the KL term of NeuMuter (paper Section 3.1, Appendix B.4 and C.4.3).

A neighbour of a forget sample keeps its grammar and general context but not its specific content:
a masked LM that never saw the forget data rewrites a share ``ratio`` (r) of the sample's tokens. The
mask is trained to keep the LLM's outputs on neighbours unchanged, which spares "universal" neurons.

Procedure (official code, which the paper's r = 1 setting matches):

1. Tokenize the text with the MLM's own tokenizer (no special tokens; BERT-uncased lowercases).
2. Pick round(r * L) of the L non-special token positions at random and visit them ONE AT A TIME in
   random order (``order="sequential"`` visits them left to right, as C.4.3's prose describes).
3. At each visited position put the mask token, run the MLM on the current sequence (earlier
   replacements included) and write its argmax there. Special tokens are banned from the argmax and
   never replaced. The argmax may equal the original token; the official code keeps it, so do we.
4. Decode with ``clean_up_tokenization_spaces``; MLM special tokens present in the text (e.g. [UNK]
   for unknown characters) are dropped by the decoding.

K neighbours per sample: the paper uses K = 5 (B.4), the official code K = 1 (our default).

Self-neighbours (``self_neighbours``): no pretrained masked LM installs offline, so for a real model the
default neighbours are written by the causal LM itself: a share r of positions, left to right, each
replaced by a sample from the model's top-k given the already rewritten left context, never the
original token. This departs from the paper (an MLM that never saw the forget data): the model has
seen the forget data, but sampling outside the original token keeps the neighbour fluent while changing
its specific content. At small r the neighbour stays close to the original; at r = 1 it becomes a free
continuation of the first token that drifts off topic (the real-model demo's neighbour of an MIT-licence
window is a recipe text): general text of the model's own on which the KL term anchors its behaviour.

Texts longer than the MLM's context are not truncated: each prediction sees a window of the context
size centred on the masked position (clamped to the text). The random order of neighbour j of a text
depends only on (seed, text, j), so the result is the same whether texts are processed one at a time
or batched, and independent of a text's position in the list (duplicate texts get equal neighbours).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .cache import cached_json
from .data import pad_batch
from .errors import NeuMuterError

CACHE_VERSION = 1
_ROBERTA_LIKE = ("roberta", "camembert", "longformer")


# ---------------------------------------------------------------------------------------------
# Shared pieces: validation and seeded order of replacements
# ---------------------------------------------------------------------------------------------

def _check_arguments(items: Sequence, k: int, ratio: float) -> None:
    if len(items) == 0:
        raise NeuMuterError("no samples given to build neighbours from")
    if k < 1:
        raise NeuMuterError(f"k (neighbours per sample) must be at least 1, got {k}")
    if not 0.0 <= ratio <= 1.0:
        raise NeuMuterError(f"ratio (share of tokens replaced) must be in [0, 1], got {ratio}")


def _rng(seed: int, content: bytes, neighbour: int) -> np.random.Generator:
    """Generator for neighbour ``neighbour`` of a sample, from its content, not its list position."""
    digest = int.from_bytes(hashlib.sha256(content).digest()[:8], "little")
    return np.random.default_rng([seed, digest, neighbour])


def _positions(ids: Sequence[int], special: set[int], ratio: float, rng: np.random.Generator,
               first: int = 0) -> list[int]:
    """round(ratio * eligible) non-special positions from ``first`` on, in a random order."""
    eligible = [p for p, t in enumerate(ids) if p >= first and t not in special]
    chosen = rng.permutation(len(eligible))[:round(ratio * len(eligible))]
    return [eligible[c] for c in chosen]


# ---------------------------------------------------------------------------------------------
# Random replacement (no MLM)
# ---------------------------------------------------------------------------------------------

def random_replacement_neighbours(token_ids: Sequence[Sequence[int]] | torch.Tensor, vocab_size: int, ratio: float,
                                  k: int = 1, seed: int = 0, special_ids: Sequence[int] = ()) -> list[list[list[int]]]:
    """Cheap neighbours when no MLM is at hand: round(ratio * eligible) non-special positions get a
    uniformly random non-special token. Returns ``out[i][j]`` = neighbour j of sample i (token ids)."""
    if isinstance(token_ids, torch.Tensor):
        token_ids = token_ids.tolist()
    _check_arguments(token_ids, k, ratio)
    special = {int(s) for s in special_ids}
    allowed = np.array([t for t in range(vocab_size) if t not in special])
    if allowed.size == 0:
        raise NeuMuterError("every token id is special: nothing to replace with")
    out = []
    for ids in token_ids:
        ids = [int(t) for t in ids]
        content = np.asarray(ids, dtype=np.int64).tobytes()
        group = []
        for j in range(k):
            rng = _rng(seed, content, j)
            positions = _positions(ids, special, ratio, rng)
            neighbour = list(ids)
            for p, t in zip(positions, rng.choice(allowed, size=len(positions))):
                neighbour[p] = int(t)
            group.append(neighbour)
        out.append(group)
    return out


# ---------------------------------------------------------------------------------------------
# Self-neighbours: written by the causal LM itself (no masked LM needed)
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def self_neighbours(token_ids: Sequence[Sequence[int]], model: torch.nn.Module, *, k: int = 1, ratio: float = 0.5,
                    top_k: int = 50, seed: int = 0, batch_size: int = 8,
                    special_ids: Sequence[int] = ()) -> list[list[list[int]]]:
    """Neighbours written by the causal LM that is being unlearned, for when no masked LM is at hand (none
    installs offline). A departure from the paper, which rewrites with a masked LM that never saw the
    forget data; see the module docstring of ``neighbours`` and the README.

    round(ratio * eligible) of the positions 1..T-1 that hold no special token are replaced, left to
    right: at each, the model's next-token distribution given the ALREADY REWRITTEN left context is cut
    to its ``top_k`` tokens, the original token and special tokens are removed, and one token is sampled
    from the rest. A replaced position never keeps its original token (the official MLM code may keep
    it). Position 0 has no left context and is never replaced. The positions and the draws of neighbour
    j of a sample depend only on (seed, its tokens, j); rows advance together through one KV-cached
    decoding pass per batch. Returns ``out[i][j]`` = neighbour j of sample i (token ids).
    """
    _check_arguments(token_ids, k, ratio)
    if top_k < 1 or batch_size < 1:
        raise NeuMuterError(f"top_k and batch_size must be at least 1, got {top_k} and {batch_size}")
    special = {int(t) for t in special_ids}
    rows, plans, rngs = [], [], []
    for ids in token_ids:
        ids = [int(t) for t in ids]
        content = np.asarray(ids, dtype=np.int64).tobytes()
        for j in range(k):
            rng = _rng(seed, content, j)
            rows.append(list(ids))
            plans.append(set(_positions(ids, special, ratio, rng, first=1)))
            rngs.append(rng)
    banned = torch.tensor(sorted(special), dtype=torch.long)
    for start in range(0, len(rows), batch_size):
        _rewrite_batch(model, rows[start:start + batch_size], plans[start:start + batch_size],
                       rngs[start:start + batch_size], top_k, banned)
    return [rows[i * k:(i + 1) * k] for i in range(len(token_ids))]


def _rewrite_batch(model, rows: list[list[int]], plans: list[set[int]], rngs: list[np.random.Generator],
                   top_k: int, banned: torch.Tensor) -> None:
    """Rewrite ``rows`` in place (``self_neighbours``): one pass left to right with the KV cache; rows are
    right-padded, which causal attention never lets reach an earlier position."""
    device = next(model.parameters()).device
    width = max(len(row) for row in rows)
    planned = [p for plan in plans for p in plan]
    if not planned:
        return
    current = torch.tensor([row + [row[-1]] * (width - len(row)) for row in rows], device=device)
    past, fed = None, 0
    for position in sorted(set(planned)):  # feed what lies before the next replaced position, then draw
        chunk = current[:, fed:position]
        output = model(input_ids=chunk, past_key_values=past, use_cache=True)
        past, fed = output.past_key_values, position
        logits = output.logits[:, -1].float()
        for r, row in enumerate(rows):
            if position in plans[r]:
                current[r, position] = _draw(logits[r], row[position], top_k, banned.to(device), rngs[r])
                row[position] = int(current[r, position])


def _draw(logits: torch.Tensor, original: int, top_k: int, banned: torch.Tensor, rng: np.random.Generator) -> int:
    """A token from the top-k of ``logits`` without the original token and special tokens."""
    logits = logits.clone()
    logits[original] = -torch.inf
    if banned.numel():
        logits[banned[banned < logits.numel()]] = -torch.inf
    values, indices = torch.topk(logits, min(top_k, logits.numel()))
    keep = torch.isfinite(values)
    if not bool(keep.any()):
        raise NeuMuterError("no token left to sample: every candidate is special or the original")
    probs = torch.softmax(values[keep].double(), 0).cpu().numpy()
    return int(indices[keep][rng.choice(len(probs), p=probs / probs.sum())])


def generate_self_neighbours(texts: Sequence[str], model: torch.nn.Module, tokenizer, *, model_key: str, k: int = 1,
                             ratio: float = 0.5, top_k: int = 50, seed: int = 0, batch_size: int = 8,
                             cache_dir: str | os.PathLike | None = None) -> list[list[str]]:
    """``self_neighbours`` on texts, decoded; cached as JSON in ``cache_dir`` under a key of (``model_key``,
    which must identify the model's weights, the texts, k, ratio, top_k, seed). ``out[i][j]`` is
    neighbour j of text i."""
    _check_arguments(texts, k, ratio)
    key = hashlib.sha256(json.dumps({
        "version": CACHE_VERSION, "kind": "self", "model": model_key, "k": k, "ratio": ratio, "top_k": top_k,
        "seed": seed, "texts": hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest(),
    }).encode()).hexdigest()

    def compute() -> list[list[str]]:
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
        grouped = self_neighbours(ids, model, k=k, ratio=ratio, top_k=top_k, seed=seed, batch_size=batch_size,
                                  special_ids=tokenizer.all_special_ids)
        return [[tokenizer.decode(n) for n in group] for group in grouped]

    return cached_json(Path(cache_dir) / f"self-neighbours-{key[:24]}.json", compute) if cache_dir else compute()


# ---------------------------------------------------------------------------------------------
# Masked-LM neighbours
# ---------------------------------------------------------------------------------------------

class _MaskedLM:
    """The MLM, its tokenizer, and the windowing that fits any sequence into its context."""

    def __init__(self, model: torch.nn.Module, tokenizer):
        if tokenizer.mask_token_id is None:
            raise NeuMuterError(f"tokenizer {type(tokenizer).__name__} has no mask token: not a masked LM")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.special = set(tokenizer.all_special_ids)
        self.banned = torch.tensor(sorted(i for i in self.special if i < model.config.vocab_size), dtype=torch.long)
        self.prefix, self.suffix = self._special_wrapping()
        self.window = self._context_length() - len(self.prefix) - len(self.suffix)
        if self.window < 1:
            raise NeuMuterError("the masked LM's context is too short to hold a single token")

    def _special_wrapping(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text (e.g. [CLS] ... [SEP]),
        read off the encoding of the mask token alone."""
        mask = self.tokenizer.mask_token_id
        wrapped = list(self.tokenizer(self.tokenizer.mask_token, add_special_tokens=True)["input_ids"])
        where = wrapped.index(mask)
        return wrapped[:where], wrapped[where + 1:]

    def _context_length(self) -> int:
        config = self.model.config
        length = config.max_position_embeddings
        if any(name in getattr(config, "model_type", "") for name in _ROBERTA_LIKE):
            length -= config.pad_token_id + 1  # positions start after the padding index
        tokenizer_limit = self.tokenizer.model_max_length
        return min(length, tokenizer_limit) if tokenizer_limit and tokenizer_limit < 10**6 else length

    def encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        if not ids:
            raise NeuMuterError(f"text has no tokens for the masked LM: {text[:60]!r}")
        return ids

    def masked_input(self, ids: Sequence[int], position: int) -> tuple[list[int], int]:
        """Model input with ``position`` masked, cut to a context window around it; and the mask index."""
        start = min(max(position - self.window // 2, 0), max(len(ids) - self.window, 0))
        window = list(ids[start:start + self.window])
        window[position - start] = self.tokenizer.mask_token_id
        return self.prefix + window + self.suffix, len(self.prefix) + position - start

    @torch.no_grad()
    def predict(self, inputs: Sequence[tuple[list[int], int]]) -> list[int]:
        """Argmax at each mask position, special tokens banned; one right-padded forward."""
        device = next(self.model.parameters()).device
        batch = pad_batch([ids for ids, _ in inputs], self.tokenizer.pad_token_id or 0).to(device)
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        rows = torch.arange(len(inputs), device=device)
        at_mask = logits[rows, torch.tensor([m for _, m in inputs], device=device)].float()
        at_mask[:, self.banned.to(device)] = -torch.inf
        return at_mask.argmax(-1).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)


def mlm_neighbours(texts: Sequence[str], model: torch.nn.Module, tokenizer, *, k: int = 1, ratio: float = 1.0,
                   seed: int = 0, batch_size: int = 8, order: str = "random") -> list[list[str]]:
    """Neighbours by one-at-a-time masked-LM replacement (module docstring). ``out[i][j]`` is
    neighbour j of text i. All (text, neighbour) pairs advance together: step s replaces the s-th
    position of every pair still running, in forwards of ``batch_size`` rows (full-vocabulary logits:
    memory grows with batch_size x context x vocabulary)."""
    _check_arguments(texts, k, ratio)
    if order not in ("random", "sequential"):
        raise NeuMuterError(f"order must be 'random' or 'sequential', got {order!r}")
    if batch_size < 1:
        raise NeuMuterError(f"batch_size must be at least 1, got {batch_size}")
    mlm = _MaskedLM(model, tokenizer)
    encoded = [mlm.encode(text) for text in texts]
    current, plans = [], []
    for text, ids in zip(texts, encoded):
        for j in range(k):
            positions = _positions(ids, mlm.special, ratio, _rng(seed, text.encode("utf-8"), j))
            current.append(list(ids))
            plans.append(sorted(positions) if order == "sequential" else positions)
    for step in range(max(len(p) for p in plans)):
        running = [r for r, plan in enumerate(plans) if step < len(plan)]
        for start in range(0, len(running), batch_size):
            rows = running[start:start + batch_size]
            predictions = mlm.predict([mlm.masked_input(current[r], plans[r][step]) for r in rows])
            for r, token in zip(rows, predictions):
                current[r][plans[r][step]] = token
    decoded = [mlm.decode(ids) for ids in current]
    return [decoded[i * k:(i + 1) * k] for i in range(len(texts))]


def model_fingerprint(mlm_path: str) -> str:
    """Identity of a model for a cache: a local folder by its files' names, sizes and times; a hub
    name by itself."""
    path = Path(mlm_path)
    if not path.is_dir():
        return mlm_path
    files = sorted((f.relative_to(path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                   for f in path.rglob("*") if f.is_file())
    return json.dumps([str(path.resolve()), files])


def generate_neighbours(texts: Sequence[str], mlm_path: str, *, k: int = 1, ratio: float = 1.0, seed: int = 0,
                        batch_size: int = 8, order: str = "random", cache_dir: str | os.PathLike | None = None,
                        device: str | torch.device | None = None) -> list[list[str]]:
    """``mlm_neighbours`` with any Hugging Face masked LM (BERT, RoBERTa, DistilBERT, ...) loaded from
    ``mlm_path``, cached as JSON in ``cache_dir`` under a key of (MLM identity, texts, k, ratio, seed,
    order). ``out[i][j]`` is neighbour j of text i."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    _check_arguments(texts, k, ratio)
    key = hashlib.sha256(json.dumps({
        "version": CACHE_VERSION, "mlm": model_fingerprint(mlm_path), "k": k, "ratio": ratio, "seed": seed,
        "order": order, "texts": hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest(),
    }).encode()).hexdigest()

    def compute() -> list[list[str]]:
        tokenizer = AutoTokenizer.from_pretrained(mlm_path)
        model = AutoModelForMaskedLM.from_pretrained(mlm_path).to(device or ("cuda" if torch.cuda.is_available()
                                                                               else "cpu"))
        return mlm_neighbours(texts, model, tokenizer, k=k, ratio=ratio, seed=seed, batch_size=batch_size,
                              order=order)

    return cached_json(Path(cache_dir) / f"neighbours-{key[:24]}.json", compute) if cache_dir else compute()


def with_anchors(neighbours: Sequence[str], k: int, anchors: Sequence[str], per_sample: int) -> list[str]:
    """Sample-major neighbours (``k`` per forget sample) with ``per_sample`` anchor texts added to each sample's,
    taken round-robin from ``anchors``: other memorized text whose outputs the KL term then keeps too (a retain
    term in the mask objective, as BalancedSubnet's; a run that uses it uses retained text)."""
    if per_sample and not anchors:
        raise NeuMuterError("anchors were asked for, but the world has no anchor texts (other memorized windows)")
    if len(neighbours) % k:
        raise NeuMuterError(f"{len(neighbours)} neighbours are not {k} per forget sample")
    out: list[str] = []
    for sample in range(len(neighbours) // k):
        out += list(neighbours[sample * k:(sample + 1) * k])
        out += [anchors[(sample * per_sample + j) % len(anchors)] for j in range(per_sample)]
    return out
