"""What has this model memorized? Cut candidate texts into token windows and find the windows the model
predicts far better than text it cannot have seen (``neumuter scan``).

Steps:

1. **Windows.** Each document is tokenized and cut into windows of ``window`` tokens every ``stride``
   tokens (a last window is aligned to the document's end, so nothing is skipped; a document shorter
   than a window is one window if it has at least ``min_tokens``). A window's text is the decoding of its
   tokens, and it is scored as that text re-tokenized, exactly as ``--forget`` would read it.
2. **Near-duplicates folded.** A window whose token ``fold_ngram``-grams are at least ``fold_threshold``
   contained in an earlier window's of another document (the smaller set's share) is folded into it: the kept window lists
   the folded window's source under ``copies``. The same licence shipped by 40 packages is one window
   with 40 copies, not 40 windows.
3. **Scores.** One teacher-forced forward per batch gives every window's MA (Eq. 15) and mean loss, in
   bfloat16 where the hardware is fast at it (``dtype``; held-out and candidates alike, so the
   comparison is fair; the demo's evaluation afterwards runs in float32).
4. **Memorized: above the held-out distribution, per window.** How predictable a text is depends on
   its kind (boilerplate code is as predictable as a memorized licence), so one threshold for all
   windows is not enough. A window's threshold is the ``quantile`` (default 1.0: the maximum) of held-out
   MA among the ``reference_neighbours`` (24) held-out windows nearest to it in zlib compression ratio
   (compressible, repetitive text is predictable without being memorized; Carlini et al., USENIX
   Security 2021 use the same ratio against false positives). A window is memorized when its MA exceeds
   its threshold by more than ``margin`` (0.05): a lower quantile would flag about (1 - quantile) of
   unseen windows, which the tests showed. ``p_value`` is the share of those held-out windows at or above its MA (with +1
   smoothing).
5. **Extraction checks, for the top candidates only** (by MA above threshold): EL10 (Eq. 16) and the
   extraction test of Chang et al. (NAACL 2024): does greedy decoding from the window's first 32 tokens
   reproduce the next 48 exactly?

Outputs of ``write_scan``: ``memorized.jsonl`` (usable as ``--forget`` as it is), ``scan.json`` (every
window's scores and the settings), ``report.md`` (the top windows with their source) and
``ma_distributions.png`` (candidates vs held-out).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import metrics
from .corpora import Document
from .data import model_context_length
from .errors import NeuMuterError
from .lm import as_language_model, autocast, check_dtype
from .output import output_directory, write_json, write_text
from .report import markdown_table, plot_distributions
from .validation import check_number


@dataclass
class ScanConfig:
    window: int = 128
    stride: int = 64
    min_tokens: int = 48
    max_windows_per_document: int | None = None  # evenly spaced over the document (first and last kept)
    fold_ngram: int = 8
    fold_threshold: float = 0.8
    quantile: float = 1.0  # of the nearest held-out windows' MA: 1.0 = their maximum
    reference_neighbours: int = 24
    margin: float = 0.05
    top_k: int = 24  # extraction checks (EL10, exact 32 -> 48 reproduction) for this many top candidates
    el_n: int = 10
    el_prefix_stride: int = 8
    extraction_prefix: int = 32
    extraction_suffix: int = 48
    batch_size: int = 8
    dtype: str = "auto"  # of the scoring forwards: bf16 where the hardware is fast at it (lm.autocast)

    def __post_init__(self):
        check_number("window", self.window, minimum=2, integer=True)
        check_number("min_tokens", self.min_tokens, minimum=2, maximum=self.window, integer=True)
        for name in ("stride", "fold_ngram", "reference_neighbours", "el_n", "el_prefix_stride", "extraction_prefix",
                     "extraction_suffix", "batch_size"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        check_number("top_k", self.top_k, minimum=0, integer=True)
        if self.max_windows_per_document is not None:
            check_number("max_windows_per_document", self.max_windows_per_document, minimum=1, integer=True)
        check_number("fold_threshold", self.fold_threshold, above=0, maximum=1)
        check_number("quantile", self.quantile, above=0, maximum=1)
        check_number("margin", self.margin, minimum=0, maximum=1)
        check_number("el_n", self.el_n, maximum=self.min_tokens - 1)  # EL_n needs n + 1 tokens in every window
        check_dtype(self.dtype)


@dataclass
class Window:
    """A token window of a document with its scores (filled in by ``scan``)."""

    text: str
    source: str
    start: int  # token offset in the source document
    copies: list[str] = field(default_factory=list)  # sources of near-duplicates folded into this one
    ma: float | None = None
    loss: float | None = None
    compression: float | None = None  # zlib-compressed bytes / raw bytes
    threshold: float | None = None  # per-window MA threshold from the held-out windows
    p_value: float | None = None
    memorized: bool | None = None
    el10: float | None = None
    extraction_match: float | None = None  # share of the 48-token suffix reproduced from the 32-token prefix
    extracted: bool | None = None  # the whole suffix reproduced exactly

    @property
    def excess(self) -> float:
        """How far the window's MA stands above its threshold."""
        return self.ma - self.threshold


@dataclass
class ScanResult:
    config: ScanConfig
    candidates: list[Window]
    heldout: list[Window]

    @property
    def memorized(self) -> list[Window]:
        """Memorized candidate windows, most memorized (highest MA above its threshold) first."""
        return sorted((w for w in self.candidates if w.memorized), key=lambda w: -w.excess)

    def summary(self) -> dict:
        held, cand = np.array([w.ma for w in self.heldout]), np.array([w.ma for w in self.candidates])
        return {
            "candidate_windows": len(self.candidates),
            "candidate_copies_folded": sum(len(w.copies) for w in self.candidates),
            "heldout_windows": len(self.heldout),
            "memorized_windows": len(self.memorized),
            "candidate_ma_mean": float(cand.mean()), "heldout_ma_mean": float(held.mean()),
            "heldout_ma_quantiles": {q: float(np.quantile(held, float(q))) for q in ("0.5", "0.9", "0.95", "0.99")},
            "extracted_windows": sum(bool(w.extracted) for w in self.candidates),
        }


def cut_windows(tokenizer, documents: Sequence[Document], config: ScanConfig) -> list[Window]:
    """Token windows of every document (module docstring, step 1)."""
    out = []
    for document in documents:
        ids = tokenizer(document.text, add_special_tokens=False)["input_ids"]
        if len(ids) < config.min_tokens:
            continue
        starts = list(range(0, max(len(ids) - config.window, 0) + 1, config.stride))
        if starts[-1] + config.window < len(ids):
            starts.append(len(ids) - config.window)
        if config.max_windows_per_document:
            starts = evenly_spaced(starts, config.max_windows_per_document)
        for start in starts:
            text = tokenizer.decode(ids[start:start + config.window])
            if text.strip():
                out.append(Window(text, document.source, start))
    return out


def evenly_spaced(items: Sequence, limit: int) -> list:
    """At most ``limit`` items, evenly spaced over the sequence (first and last kept)."""
    if len(items) <= limit:
        return list(items)
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def fold_near_duplicates(windows: Sequence[Window], tokenizer, n: int, threshold: float) -> list[Window]:
    """Windows with near-duplicates folded into their first occurrence (module docstring, step 2)."""
    kept: list[Window] = []
    kept_grams: list[set] = []
    index: dict[tuple, list[int]] = {}
    for window in windows:
        grams = set(metrics.ngrams(tokenizer(window.text, add_special_tokens=False)["input_ids"], n))
        shared: dict[int, int] = {}
        for gram in grams:
            for k in index.get(gram, ()):
                shared[k] = shared.get(k, 0) + 1
        match = next((k for k, count in sorted(shared.items())
                      if count >= threshold * max(1, min(len(grams), len(kept_grams[k])))
                      and kept[k].source != window.source), None)  # a document's own windows overlap by design
        if match is not None:
            kept[match].copies.append(window.source)
            continue
        for gram in grams:
            index.setdefault(gram, []).append(len(kept))
        kept.append(window)
        kept_grams.append(grams)
    return kept


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / max(1, len(raw))


def score_windows(model, tokenizer, windows: Sequence[Window], batch_size: int, progress: bool = True,
                  desc: str = "scoring windows", dtype: str = "float32") -> None:
    """MA and mean loss of each window from one forward per batch (in ``dtype``: ``lm.autocast``), written
    into the windows."""
    device = as_language_model(model).device
    bar = tqdm(total=len(windows), desc=desc, unit="window", disable=not progress)
    chunk = batch_size * 8
    for start in range(0, len(windows), chunk):
        part = windows[start:start + chunk]
        with autocast(dtype, device):
            ma, loss = metrics.teacher_forced_scores(model, tokenizer, [w.text for w in part], batch_size=batch_size)
        for window, a, b in zip(part, ma.tolist(), loss.tolist()):
            window.ma, window.loss, window.compression = a, b, compression_ratio(window.text)
        bar.update(len(part))
    bar.close()


def apply_thresholds(candidates: Sequence[Window], heldout: Sequence[Window], config: ScanConfig) -> None:
    """Per-window thresholds and p-values from the held-out windows nearest in compression (step 4)."""
    if not heldout:
        raise NeuMuterError("the scan needs held-out windows: text the model cannot have seen")
    held_ma = np.array([w.ma for w in heldout])
    held_ratio = np.array([w.compression for w in heldout])
    k = min(config.reference_neighbours, len(heldout))
    for window in candidates:
        nearest = np.argsort(np.abs(held_ratio - window.compression), kind="stable")[:k]
        reference = held_ma[nearest]
        window.threshold = float(np.quantile(reference, config.quantile))
        window.p_value = float((1 + (reference >= window.ma).sum()) / (1 + k))
        window.memorized = window.ma > window.threshold + config.margin


def extraction_checks(model, tokenizer, windows: Sequence[Window], config: ScanConfig) -> None:
    """EL10 and the exact 32 -> 48 reproduction test for the given windows (step 5)."""
    if not windows:
        return
    texts = [w.text for w in windows]
    el = metrics.extraction_likelihood(model, tokenizer, texts, config.el_n, batch_size=config.batch_size * 4,
                                       prefix_stride=config.el_prefix_stride)
    long_enough = [i for i, text in enumerate(texts)
                   if len(tokenizer(text)["input_ids"]) >= config.extraction_prefix + config.extraction_suffix]
    matches = {}
    if long_enough:
        examples = metrics.generation_examples(model, tokenizer, [texts[i] for i in long_enough],
                                               prefix_length=config.extraction_prefix,
                                               max_new_tokens=config.extraction_suffix, batch_size=config.batch_size)
        matches = {i: example["token_matches"] for i, example in zip(long_enough, examples)}
    for i, window in enumerate(windows):
        window.el10 = float(el[i])
        window.extraction_match = matches.get(i)
        window.extracted = None if i not in matches else matches[i] == 1.0


def scan(model, tokenizer, candidates: Sequence[Document], heldout: Sequence[Document],
         config: ScanConfig | None = None, progress: bool = True, log: Callable[[str], None] = print) -> ScanResult:
    """Windows of ``candidates`` scored against windows of ``heldout`` (module docstring)."""
    config = config or ScanConfig()
    context = model_context_length(as_language_model(model))
    if context is not None and config.window > context:
        raise NeuMuterError(f"--window {config.window} is longer than the model's context of {context} tokens; "
                            f"use --window {context} or less")
    candidate_windows = fold_near_duplicates(cut_windows(tokenizer, candidates, config), tokenizer,
                                             config.fold_ngram, config.fold_threshold)
    heldout_windows = fold_near_duplicates(cut_windows(tokenizer, heldout, config), tokenizer,
                                           config.fold_ngram, config.fold_threshold)
    if not candidate_windows:
        raise NeuMuterError(f"no candidate text has the {config.min_tokens} tokens a window needs")
    if not heldout_windows:
        raise NeuMuterError(f"no held-out text has the {config.min_tokens} tokens a window needs")
    log(f"scan: {len(candidate_windows)} candidate windows ({sum(len(w.copies) for w in candidate_windows)} "
        f"near-duplicates folded), {len(heldout_windows)} held-out windows")
    score_windows(model, tokenizer, heldout_windows, config.batch_size, progress, "scoring held-out windows",
                  config.dtype)
    score_windows(model, tokenizer, candidate_windows, config.batch_size, progress, "scoring candidate windows",
                  config.dtype)
    apply_thresholds(candidate_windows, heldout_windows, config)
    result = ScanResult(config, candidate_windows, heldout_windows)
    top = result.memorized[:config.top_k]
    log(f"scan: {len(result.memorized)} memorized windows; extraction checks on the top {len(top)}")
    extraction_checks(model, tokenizer, top, config)
    return result


def write_scan(out: str | Path, result: ScanResult, model_name: str, overwrite: bool = False,
               report_rows: int = 20) -> None:
    """``memorized.jsonl``, ``scan.json``, ``report.md`` and ``ma_distributions.png``, all or nothing."""
    with output_directory(out, overwrite) as staging:
        with (staging / "memorized.jsonl").open("w") as handle:
            for window in result.memorized:
                handle.write(json.dumps(_record(window)) + "\n")
        write_json(staging / "scan.json", {
            "model": model_name, "settings": asdict(result.config), "summary": result.summary(),
            "candidates": [_record(w) for w in result.candidates], "heldout": [_record(w) for w in result.heldout]})
        write_text(staging / "report.md", scan_report(result, model_name, report_rows))
        plot_distributions({"candidates": [w.ma for w in result.candidates], "held-out": [w.ma for w in result.heldout],
                            "memorized": [w.ma for w in result.memorized]},
                           staging / "ma_distributions.png", "memorization accuracy (Eq. 15) per window",
                           f"MA of candidate and held-out windows ({model_name})")


def _record(window: Window) -> dict:
    record = asdict(window)
    record["copies"] = len(window.copies)
    record["copy_sources"] = window.copies
    return record


def scan_report(result: ScanResult, model_name: str, rows: int = 20) -> str:
    summary, config = result.summary(), result.config
    table = [[i + 1, f"{w.ma:.3f}", f"{w.threshold:.3f}", f"{w.loss:.2f}",
              "" if w.el10 is None else f"{w.el10:.3f}",
              "" if w.extracted is None else ("yes" if w.extracted else f"no ({w.extraction_match:.2f})"),
              len(w.copies) + 1, f"`{_short(w.source)}`", _snippet(w.text)]
             for i, w in enumerate(result.memorized[:rows])]
    quantiles = summary["heldout_ma_quantiles"]
    return "\n\n".join([
        f"# What {model_name} memorized",
        f"{summary['candidate_windows']} candidate windows of {config.window} tokens (stride {config.stride}; "
        f"{summary['candidate_copies_folded']} near-duplicates folded into them), {summary['heldout_windows']} "
        f"held-out windows. Mean MA: candidates {summary['candidate_ma_mean']:.3f}, held-out "
        f"{summary['heldout_ma_mean']:.3f} (held-out quantiles 0.5 / 0.9 / 0.95 / 0.99: {quantiles['0.5']:.3f} / "
        f"{quantiles['0.9']:.3f} / {quantiles['0.95']:.3f} / {quantiles['0.99']:.3f}).",
        f"**{summary['memorized_windows']} windows memorized**: MA more than {config.margin:g} above the "
        f"{config.quantile:g} quantile of the MA of the {config.reference_neighbours} held-out windows nearest in "
        "zlib compression ratio (a per-window threshold). "
        f"{summary['extracted_windows']} of the top {min(config.top_k, summary['memorized_windows'])} reproduce "
        f"their {config.extraction_suffix}-token suffix exactly from a {config.extraction_prefix}-token prefix.",
        markdown_table(["#", "MA", "threshold", "loss", f"EL{config.el_n}", "exact 32->48", "copies", "source",
                        "text"], table),
        "![MA distributions](ma_distributions.png)",
    ]) + "\n"


def _short(source: str, keep: int = 60) -> str:
    return source if len(source) <= keep else "..." + source[-keep + 3:]


def _snippet(text: str, keep: int = 70) -> str:
    flat = " ".join(text.split()).replace("|", "\\|").replace("`", "'")
    return flat if len(flat) <= keep else flat[:keep - 3] + "..."
