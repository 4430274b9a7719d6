"""The interface every world shares: a model to unlearn, what to forget, and one way to score it.

A world is built once (cached on disk) and gives the demo, ``compare`` and the studies the same things:
the forget texts, the retain texts a rival method may use, a fresh copy of the original model, the Eq. 17
thresholds, the original model's (and, where one exists, the retrain oracle's) scores, the stopping
criterion, neighbours for NeuMuter's KL term, and ``evaluate`` for any unlearned model. Three worlds exist:
``people`` (a tiny model trained here on fictitious people, with a retrain oracle), ``real`` (a
pretrained SmolLM2-135M and texts it memorized during pretraining, no oracle) and ``tofu-real`` (a
pretrained model fine-tuned here on fictitious people, with a retrain oracle per TOFU split).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import evaluation as evaluation_module
from .. import metrics as metrics_module
from .. import utility as utility_module
from ..cache import cached_json
from ..errors import NeuMuterError
from ..evaluation import EvaluationSet, evaluate
from ..lm import resolved_dtype
from ..paper_results import PaperRows
from ..stopping import ForgettingCriterion


@dataclass
class World:
    """What a world has built. Subclasses add how to load the model and write neighbours."""

    name: str
    tokenizer: object
    data: EvaluationSet
    thresholds: dict[str, float]
    original: dict  # ``evaluate`` of the original model
    oracle: dict | None  # ``evaluate`` of the model retrained without the forget set, where one exists
    criterion: ForgettingCriterion

    @property
    def forget_texts(self) -> list[str]:
        return list(self.data.forget_texts)

    @property
    def retain_texts(self) -> list[str]:
        """Texts a method with a retain set may train on (never scored as forget)."""
        return list(self.data.retain_texts)

    @property
    def example_texts(self) -> list[str]:
        """Forget samples whose greedy continuation the report shows before and after (Table 14)."""
        return self.forget_texts

    @property
    def attribution_reference(self) -> list[str]:
        """Other memorized texts (never scored as retain where the world has spare ones): the attribution
        baseline ranks neurons by their forget share over their share on these."""
        return self.retain_texts

    @property
    def oracle_losses(self) -> list[float] | None:
        return self.oracle["per_sample"]["forget_loss"] if self.oracle else None

    @property
    def oracle_truth_ratios(self) -> list[float] | None:
        """The oracle's TOFU truth ratios on the forget questions, where the world has TOFU's probes."""
        return self.oracle["per_sample"].get("forget_truth_ratio") if self.oracle else None

    def evaluate(self, model) -> dict:
        """Score ``model`` exactly as the original (and the oracle) were scored."""
        return evaluate(model, self.tokenizer, self.data, self.thresholds, self.oracle_losses,
                        self.oracle_truth_ratios)

    def with_forget_subset(self, count: int) -> World:
        """The same world forgetting only its first ``count`` forget samples (the forget-size study): the
        others are scored as the MA group ``rest_of_forget``; thresholds stay, the original model is rescored
        (no cache: one evaluation) and the oracle is dropped (it was trained without all of them)."""
        if not 1 <= count <= len(self.data.forget_texts):
            raise NeuMuterError(f"a forget subset needs 1 to {len(self.data.forget_texts)} samples, got {count}")
        if count == len(self.data.forget_texts):
            return self
        forget, rest = list(self.data.forget_texts[:count]), list(self.data.forget_texts[count:])
        data = dataclasses.replace(self.data, forget_texts=forget,
                                   ma_groups={**self.data.ma_groups, **({"rest_of_forget": rest} if rest else {})})
        settings = data.settings
        criterion = ForgettingCriterion(self.tokenizer, forget, self.thresholds, self.criterion.target_fraction,
                                        el_prefix_stride=settings["el_prefix_stride"],
                                        batch_size=settings["batch_size"], dtype=settings.get("dtype", "float32"))
        subset = dataclasses.replace(self, data=data, oracle=None, criterion=criterion)
        subset.original = subset.evaluate(subset.load_model())
        return subset

    def load_model(self):
        """A fresh copy of the original model (methods change weights in place)."""
        raise NotImplementedError

    def neighbours(self, texts: Sequence[str], k: int, ratio: float, seed: int = 0) -> list[str]:
        """``k`` neighbours per text for NeuMuter's KL term, sample-major and flat."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """What a saved run records about where its model and forget set came from."""
        raise NotImplementedError

    def describe(self) -> str:
        """One sentence on the model and what it unlearns, for report headers."""
        raise NotImplementedError


def public_scores(scores: dict) -> dict:
    """``evaluate``'s summary numbers without the per-sample lists."""
    return {key: value for key, value in scores.items() if key != "per_sample"}


def cached_reference_scores(root: Path, data: EvaluationSet, device: torch.device, compute: Callable[[], dict]) -> dict:
    """Thresholds and reference scores are a pure function of the world, the evaluation settings, the
    precision they are computed in and the scoring code, so ``compute()`` (on ``device``) runs once and is
    cached in the world directory under a hash of the last three (the source of the ``metrics`` package,
    ``evaluation.py`` and ``utility.py`` is part of the key: editing them recomputes). The precision is
    ``settings["dtype"]`` resolved on ``device``: "auto" scores in bf16 on one machine and in fp32 on another,
    and a cache shared between the two must not serve one's scores as the other's."""
    sources = [*sorted(Path(metrics_module.__file__).parent.glob("*.py")), Path(evaluation_module.__file__),
               Path(utility_module.__file__)]
    code = b"".join(path.read_bytes() for path in sources)
    computes_in = resolved_dtype(data.settings.get("dtype", "float32"), device)
    key = hashlib.sha256(code + json.dumps({**data.settings, "computes_in": computes_in}, sort_keys=True).encode()
                         ).hexdigest()[:20]
    return cached_json(root / "scores" / f"reference-{key}.json", compute)


SIZES = ("default", "tiny")


def _no_inputs(settings) -> dict[str, str]:
    return {}


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(frozen=True)
class WorldSpec:
    """One world as the harness sees it.

    ``settings(size)`` is the world's settings dataclass at ``size`` (``SIZES``). ``prepare(settings, *,
    target_fraction, el_prefix_stride, progress, log, device, utility)`` builds the world (or reads it from the
    cache). ``demo(size)`` holds the ``DemoConfig`` fields this world sets (NeuMuter's settings, its schedule,
    the Eq. 17 target, ...); ``comparison(size)`` the ``ComparisonConfig`` ones (``budgets``). ``targets`` are
    the demo's success criteria (``demo.check_targets``); ``retain_set`` says what a
    method with a retain set trains on here. ``layer_study(size)`` is what the paper's Table 3 study
    (``recipes/layer_selection_study.py``) runs here: ``specs`` (layer specs separated by ';') and, where it
    departs from the comparison's demo settings, ``demo`` (fields) and ``neumuter`` (a ``NeuMuterConfig``);
    None: the study does not run on this world. ``add_arguments`` adds the world's own CLI options (their
    ``dest`` names in ``options``); ``from_arguments(args, size)`` reads its settings from them. ``paper_rows`` are
    the rows of a paper table for the setting this world reproduces (``paper_results``), which ``compare`` quotes
    beside its own. ``max_forget(settings)`` is the most forget samples a world of these settings holds, known
    before it is built (the forget-size study checks its values against it; None: known once built)."""

    name: str
    title: str  # report heading: "NeuMuter on <title>"
    help: str  # one line for --world
    settings: Callable[[str], Any]
    prepare: Callable[..., World]
    demo: Callable[[str], dict] = lambda size: {}
    comparison: Callable[[str], dict] = lambda size: {}
    targets: Mapping[str, float] = field(default_factory=dict)
    retain_set: str = "the world's retain texts"
    seed_setting: str | None = None  # the field of the settings that ``--seed`` sets (None: the world has none)
    takes_utility: bool = True  # whether the paper's utility benchmarks (``--utility``) apply
    layer_study: Callable[[str], dict] | None = None
    inputs: Callable[[Any], dict[str, str]] = _no_inputs  # option -> file a run reads (never to be overwritten)
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    options: tuple[str, ...] = ()
    from_arguments: Callable[[argparse.Namespace, str], Any] | None = None
    paper_rows: PaperRows | None = None
    max_forget: Callable[[Any], int | None] = lambda settings: None

    def settings_from(self, args: argparse.Namespace, size: str) -> Any:
        """The world's settings from a command line (its own options, or the size preset without any)."""
        return self.from_arguments(args, size) if self.from_arguments else self.settings(size)
