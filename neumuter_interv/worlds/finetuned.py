"""What the worlds that fine-tune a pretrained model share (``tofu-real``, ``extraction``): the base model and
its key, a cache key for the fine-tuned models, building each model directory once, the fine-tune itself and
the base model's perplexity on the general texts.

A fine-tuned model directory holds the weights, the tokenizer, ``training.json`` (sequences, tokens, seconds,
device and the settings) and ``training_texts.json`` (every text it trained on, in order, so that what a
model saw, and what an oracle never saw, can be checked)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from .. import metrics
from ..cache import build_cache_entry, cached_json
from ..data import texts_sha256
from ..lm import autocast, resolve_device, resolved_dtype
from ..loading import load_causal_lm, packaged_smollm2
from ..neighbours import generate_self_neighbours, model_fingerprint
from ..output import write_json
from ..testbed.training import train_causal_lm
from .base import World


@dataclass
class FineTunedWorld(World):
    """A world whose model was fine-tuned here, saved under ``root / "model"``."""

    config: object = None
    root: Path | None = None
    device: str = "cpu"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    def load_model(self):
        model, _ = load_causal_lm(str(self.model_dir))
        return model.to(resolve_device(self.device))

    def neighbours(self, texts: Sequence[str], k: int, ratio: float, seed: int = 0) -> list[str]:
        """Self-neighbours of the fine-tuned model (as the real world: no masked LM installs offline)."""
        grouped = generate_self_neighbours(texts, self.load_model(), self.tokenizer, model_key=self.root.name, k=k,
                                           ratio=ratio, seed=seed, cache_dir=self.root / "neighbours")
        return [text for group in grouped for text in group]


def load_base(base: str | None, gguf_file: str | None, cache: Path):
    """The pretrained model to fine-tune (a directory or Hub id; None: the packaged SmolLM2-135M), its
    tokenizer and the key that names it in a cache key. A bad base fails here, before any work."""
    directory, gguf = (base, gguf_file) if base else packaged_smollm2()
    model, tokenizer = load_causal_lm(directory, gguf_file=gguf, cache_dir=cache)
    key = Path(model.name_or_path).name if gguf else model_fingerprint(str(model.name_or_path))
    return model, tokenizer, key


def build_key(build_version: int, base_key: str, settings: dict, device: torch.device, train_dtype: str) -> str:
    """The cache key of a world's fine-tuned models: the build version, the base model, the settings that
    shape the weights, the device type, the precision the fine-tune computes in and the versions of the
    packages that train them. The precision is ``train_dtype`` resolved on ``device``: "auto" trains in bf16
    autocast on a CPU with AVX512-BF16 and in fp32 on one without, two different models that must never
    share a cache entry (a cache copied or mounted across machines would otherwise serve one as the other)."""
    return hashlib.sha256(json.dumps({"version": build_version, "base": base_key, "settings": settings,
                                      "device": device.type, "trains_in": resolved_dtype(train_dtype, device), "packages": {
                                          name: version(name) for name in ("torch", "transformers", "faker")}},
                                     sort_keys=True, default=str).encode()).hexdigest()[:20]


def build_model_once(target: Path, build: Callable[[Path], None], log: Callable[[str], None], label: str) -> None:
    """Build the model directory ``target`` once, whole (``cache.build_cache_entry``), and log its time."""
    start = time.perf_counter()
    if build_cache_entry(target, "config.json", build):
        log(f"{label}: built {target.name} in {time.perf_counter() - start:.0f} s")


def as_trained(tokenizer, texts: list[str], max_seq_len: int) -> list[str]:
    """What the fine-tune sees of each text: the text itself, or its first ``max_seq_len - 1`` tokens decoded
    (``fine_tune_copy`` adds EOS and cuts there), so that what is scored is what was trained on."""
    ids = tokenizer(list(texts))["input_ids"]
    return [text if len(row) < max_seq_len else tokenizer.decode(row[:max_seq_len - 1]) for text, row in zip(texts, ids)]


def fine_tune_copy(base, tokenizer, texts: list[str], out: Path, *, epochs: int, learning_rate: float,
                   batch_size: int, max_seq_len: int, seed: int, dtype: str, settings: dict, progress: bool,
                   device: torch.device, desc: str) -> None:
    """A copy of ``base`` (left untouched), every weight fine-tuned on ``texts`` (EOS-terminated, cut at
    ``max_seq_len``), saved to ``out`` with its tokenizer, the training record and the texts."""
    sequences = [ids[:max_seq_len - 1] + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]
    start = time.perf_counter()
    model = train_causal_lm(None, sequences, tokenizer.pad_token_id, epochs=epochs, batch_size=batch_size,
                            lr=learning_rate, seed=seed, progress=progress, desc=desc, start_from=base,
                            device=device, dtype=dtype)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_json(out / "training.json", {"sequences": len(sequences), "tokens": sum(map(len, sequences)),
                                       "seconds": round(time.perf_counter() - start, 1),
                                       "device": device.type, "settings": settings})
    write_json(out / "training_texts.json", list(texts))


def base_perplexity(root: Path, base, tokenizer, general: list[str], dtype: str, batch_size: int) -> float:
    """The pretrained base's perplexity on the general texts, cached in the world directory."""
    path = root / "scores" / f"base-ppl-{texts_sha256(general)[:16]}-{dtype}.json"

    def compute() -> float:
        with autocast(dtype, next(base.parameters()).device):
            return metrics.perplexity(base, tokenizer, general, batch_size=batch_size)

    return cached_json(path, compute)


def demo_settings(size: str) -> dict:
    """The demo's settings: the world's preset; tiny: two epochs of NeuMuter, checked after each."""
    from ..methods.neumuter import CoefficientSchedule

    return {"schedule": CoefficientSchedule.fixed(2, check_every=1)} if size == "tiny" else {}


def comparison_settings(size: str) -> dict:
    """The real world's budgets (the same SmolLM2, fine-tuned here); tiny: two-epoch budgets."""
    from ..methods.registry import method_budgets, real_model_budgets

    if size == "tiny":
        return {"budgets": method_budgets(fine_tuning_epochs=2, ig_positions_per_sample=2, ig_max_neurons=20)}
    return {"budgets": real_model_budgets()}
