"""The setup every testbed experiment shares (``neumuter demo``, ``neumuter compare``).

Build (or load) the testbed world, compute the Eq. 17 thresholds on held-out people with the original
model, score the original model and the retrain oracle with ``evaluate``, and build the one
``ForgettingCriterion`` that stops every method. Keeping this in one place is what makes the demo's
and the comparison's numbers the same numbers. The thresholds and reference scores are cached in the
testbed directory, so a warm run starts unlearning within seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import evaluation as evaluation_module
from . import metrics as metrics_module
from .evaluation import EvaluationSet, evaluate, thresholds
from .lm import resolve_device
from .neighbours import generate_neighbours
from .output import write_json
from .stopping import ForgettingCriterion
from .testbed import Testbed, TestbedConfig, build_testbed


@dataclass
class TestbedExperiment:
    """A built world with its thresholds, reference scores and stop criterion."""

    __test__ = False  # not a pytest test class despite the name

    testbed: Testbed
    tokenizer: object
    data: EvaluationSet
    thresholds: dict[str, float]
    original: dict  # ``evaluate`` of the original model
    oracle: dict  # ``evaluate`` of the model retrained without the forget people
    criterion: ForgettingCriterion

    @property
    def oracle_losses(self) -> list[float]:
        return self.oracle["per_sample"]["forget_loss"]

    def evaluate(self, model) -> dict:
        """Score ``model`` exactly as the original and the oracle were scored."""
        return evaluate(model, self.tokenizer, self.data, self.thresholds, self.oracle_losses)

    def neighbours(self, texts: Sequence[str], k: int, ratio: float, seed: int = 0) -> list[str]:
        """``k`` MLM neighbours per text from the testbed's masked LM (which never saw the forget
        people), sample-major and flat, cached in the testbed directory."""
        grouped = generate_neighbours(texts, str(self.testbed.mlm_dir), k=k, ratio=ratio, seed=seed,
                                      cache_dir=self.testbed.root / "neighbours")
        return [text for group in grouped for text in group]


def prepare_experiment(testbed_config: TestbedConfig, *, target_fraction: float = 1.0, el_prefix_stride: int = 1,
                       progress: bool = True, log: Callable[[str], None] = print,
                       device: str = "cpu") -> TestbedExperiment:
    """Testbed -> Eq. 17 thresholds -> original and oracle scores -> stop criterion. ``device`` builds
    and scores the world there (see ``build_testbed``)."""
    testbed = build_testbed(testbed_config, progress=progress, device=device)
    tokenizer = testbed.load_tokenizer()
    log(f"testbed: {len(testbed.forget_texts)} forget / {len(testbed.retain_texts)} retain / "
        f"{len(testbed.heldout_people_texts)} held-out people at {testbed.root}")
    data = EvaluationSet.from_testbed(testbed, el_prefix_stride=el_prefix_stride)
    reference = _reference_scores(testbed, tokenizer, data, resolve_device(device))
    limits, original, oracle = reference["thresholds"], reference["original"], reference["oracle"]
    log(f"Eq. 17 thresholds from held-out people: MA {limits['ma']:.3f}, EL10 {limits['el10']:.3f}")
    criterion = ForgettingCriterion(tokenizer, testbed.forget_texts, limits, target_fraction,
                                    el_prefix_stride=el_prefix_stride)
    return TestbedExperiment(testbed, tokenizer, data, limits, original, oracle, criterion)


def _reference_scores(testbed: Testbed, tokenizer, data: EvaluationSet, device: torch.device) -> dict:
    """Thresholds and the original's and the oracle's scores: a pure function of the world, the evaluation
    settings and the scoring code, so cached in the testbed directory under a hash of all three (the
    source of ``metrics.py`` and ``evaluation.py`` is part of the key: editing them recomputes)."""
    code = b"".join(Path(module.__file__).read_bytes() for module in (metrics_module, evaluation_module))
    key = hashlib.sha256(code + json.dumps(data.settings, sort_keys=True).encode()).hexdigest()[:20]
    path = testbed.root / "scores" / f"reference-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    model = testbed.load_model().to(device)
    limits = thresholds(model, tokenizer, data)
    oracle = evaluate(testbed.load_oracle().to(device), tokenizer, data, limits)
    original = evaluate(model, tokenizer, data, limits, oracle["per_sample"]["forget_loss"])
    reference = {"thresholds": limits, "original": original, "oracle": oracle}
    path.parent.mkdir(exist_ok=True)
    staging = path.with_suffix(f".tmp{os.getpid()}")
    write_json(staging, reference)
    os.replace(staging, path)  # atomic: a concurrent reader sees the whole file or none
    return json.loads(path.read_text())  # the same JSON round trip as a cache hit: one type for both


def public_scores(scores: dict) -> dict:
    """``evaluate``'s summary numbers without the per-sample lists."""
    return {key: value for key, value in scores.items() if key != "per_sample"}
