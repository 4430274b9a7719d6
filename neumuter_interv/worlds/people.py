"""The people world: the embedded testbed (a tiny GPT-Neo that memorized fictitious people, its retrain
oracle and a masked LM for neighbours; ``neumuter demo --world people``).

Build (or load) the testbed world, compute the Eq. 17 thresholds on held-out people with the original
model, score the original model and the retrain oracle with ``evaluate``, and build the one
``ForgettingCriterion`` that stops every method. Keeping this in one place is what makes the demo's
and the comparison's numbers the same numbers. The thresholds and reference scores are cached in the
testbed directory, so a warm run starts unlearning within seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..data import texts_sha256
from ..evaluation import EvaluationSet, evaluate, thresholds
from ..lm import resolve_device
from ..neighbours import generate_neighbours
from ..stopping import ForgettingCriterion
from ..testbed import Testbed, TestbedConfig, build_testbed
from ..utility import UtilityConfig, load_utility
from .base import World, WorldSpec, cached_reference_scores


@dataclass
class PeopleWorld(World):
    """The built testbed with its thresholds, reference scores (original and retrain oracle) and stop
    criterion."""

    testbed: Testbed | None = None

    def load_model(self):
        return self.testbed.load_model()

    def provenance(self) -> dict:
        return {"model": str(self.testbed.model_dir), "forget_file": "testbed forget people",
                "forget_samples": len(self.forget_texts), "forget_sha256": texts_sha256(self.forget_texts)}

    def describe(self) -> str:
        config = self.testbed.config
        return (f"the people testbed: GPT-Neo {config.n_layers} layers x {config.hidden_size} wide (FFN "
                f"{config.ffn_size}), {config.n_forget} forget / {config.n_retain} retain / {config.n_heldout} "
                "held-out people, with its retrain oracle")

    def neighbours(self, texts: Sequence[str], k: int, ratio: float, seed: int = 0) -> list[str]:
        """``k`` MLM neighbours per text from the testbed's masked LM (which never saw the forget
        people), sample-major and flat, cached in the testbed directory."""
        grouped = generate_neighbours(texts, str(self.testbed.mlm_dir), k=k, ratio=ratio, seed=seed,
                                      cache_dir=self.testbed.root / "neighbours")
        return [text for group in grouped for text in group]


def prepare_people_world(testbed_config: TestbedConfig, *, target_fraction: float = 1.0, el_prefix_stride: int = 1,
                         progress: bool = True, log: Callable[[str], None] = print,
                         device: str = "cpu", utility: UtilityConfig | None = None) -> PeopleWorld:
    """Testbed -> Eq. 17 thresholds -> original and oracle scores (with the paper's utility benchmarks
    when ``utility`` names their files) -> stop criterion. ``device`` builds and scores the world there
    (see ``build_testbed``)."""
    utility_data = load_utility(utility) if utility is not None else None  # a missing file fails before the build
    testbed = build_testbed(testbed_config, progress=progress, device=device)
    tokenizer = testbed.load_tokenizer()
    log(f"testbed: {len(testbed.forget_texts)} forget / {len(testbed.retain_texts)} retain / "
        f"{len(testbed.heldout_people_texts)} held-out people at {testbed.root}")
    data = EvaluationSet.from_testbed(testbed, utility_data, el_prefix_stride=el_prefix_stride)
    reference = _reference_scores(testbed, tokenizer, data, resolve_device(device))
    limits, original, oracle = reference["thresholds"], reference["original"], reference["oracle"]
    log(f"Eq. 17 thresholds from held-out people: MA {limits['ma']:.3f}, EL10 {limits['el10']:.3f}")
    criterion = ForgettingCriterion(tokenizer, testbed.forget_texts, limits, target_fraction,
                                    el_prefix_stride=el_prefix_stride)
    return PeopleWorld("people", tokenizer, data, limits, original, oracle, criterion, testbed)


def _reference_scores(testbed: Testbed, tokenizer, data: EvaluationSet, device: torch.device) -> dict:
    """Thresholds and the original's and the oracle's scores, cached in the testbed directory."""
    def compute() -> dict:
        model = testbed.load_model().to(device)
        limits = thresholds(model, tokenizer, data)
        oracle = evaluate(testbed.load_oracle().to(device), tokenizer, data, limits)
        original = evaluate(model, tokenizer, data, limits, oracle["per_sample"]["forget_loss"])
        return {"thresholds": limits, "original": original, "oracle": oracle}

    return cached_reference_scores(testbed.root, data, device, compute)


def _demo_settings(size: str) -> dict:
    """MLM neighbours of every token (r = 1), the coefficient schedule until every forget person meets Eq. 17
    (Appendix B.4); tiny: the tests' size (well under two minutes on 2 cores)."""
    from ..methods.neumuter import CoefficientSchedule, NeuMuterConfig

    settings = {"neumuter": NeuMuterConfig(batch_size=8, neighbours_per_sample=1, replacement_ratio=1.0, progress=False),
                "schedule": CoefficientSchedule(), "target_fraction": 1.0, "attribution_baseline": False}
    if size == "tiny":
        settings["neumuter"].batch_size = 2
        settings.update(schedule=CoefficientSchedule(stage_epochs=25, max_stages=6, check_every=5), el_prefix_stride=8,
                        curve_points=3)
    return settings


def _layer_study(size: str) -> dict:
    """The testbed's Table 3: every single layer and adjacent pair of its 4, one fixed-coefficient stage of
    30 epochs (checked every 5) instead of the demo's schedule, EL10 over every other prefix."""
    from ..methods.neumuter import CoefficientSchedule, NeuMuterConfig

    return {"specs": "all;0-1;1-2;2-3;0;1;2;3",
            "demo": {"el_prefix_stride": 2, "schedule": CoefficientSchedule(stage_epochs=30, max_stages=1, check_every=5)},
            "neumuter": NeuMuterConfig(epochs=30, kl_weight=0.3, sparsity_weight=0.0, progress=False)}


def _comparison_settings(size: str) -> dict:
    from ..methods.registry import method_budgets

    if size == "tiny":
        return {"budgets": method_budgets(fine_tuning_epochs=20, ig_positions_per_sample=4, ig_max_neurons=100)}
    return {"budgets": method_budgets()}


SPEC = WorldSpec(
    name="people",
    title="the embedded people testbed",
    help="a tiny GPT-Neo trained here on fictitious people, with its retrain oracle",
    settings=lambda size: TestbedConfig.tiny() if size == "tiny" else TestbedConfig(),
    prepare=prepare_people_world,
    demo=_demo_settings,
    comparison=_comparison_settings,
    layer_study=_layer_study,
    targets={"forgotten_fraction_at_least": 0.9, "general_ppl_increase_at_most": 0.10,
             "neurons_muted_fraction_at_most": 0.02},
    retain_set="the retain people",
    seed_setting="seed",
)
