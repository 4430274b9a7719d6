"""The main job: NeuMuter on the embedded testbed, evaluated before, after, and against the retrain oracle.

Steps: build (or load) the testbed world; generate MLM neighbours for the forget people (the MLM never
saw them); compute the Eq. 17 thresholds on held-out people with the original model; run NeuMuter until
the frozen mask forgets (``ForgettingCriterion`` + ``CoefficientSchedule``); evaluate the original
model, the unlearned one and the oracle with the same metrics; write ``metrics.json``, ``report.md``,
the plots and the run directory (the frozen intervention, loadable with pyvene).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .data import texts_sha256
from .experiment import prepare_experiment, public_scores
from .methods.neumuter import CoefficientSchedule, NeuMuter, NeuMuterConfig
from .output import check_writable, output_directory, write_json
from .report import markdown_table, plot_distributions, plot_muted_per_layer
from .testbed import TestbedConfig

# The success criteria for the demo; the report states each one with its numbers.
TARGETS = {"forgotten_fraction_at_least": 0.9, "heldout_ppl_increase_at_most": 0.10, "neurons_muted_fraction_at_most": 0.02}


@dataclass
class DemoConfig:
    testbed: TestbedConfig = field(default_factory=TestbedConfig)
    neumuter: NeuMuterConfig = field(default_factory=lambda: NeuMuterConfig(batch_size=8, progress=False))
    schedule: CoefficientSchedule = field(default_factory=CoefficientSchedule)
    neighbours_per_sample: int = 1  # the official code's K (the paper's B.4 says 5)
    replacement_ratio: float = 1.0  # the paper's r: every token replaced
    target_fraction: float = 1.0  # B.4: stop when every forget sample meets Eq. 17
    el_prefix_stride: int = 4  # EL10 averaged over every 4th prefix: exact EL10 is O(T^2) greedy decoding
    device: str = "cpu"  # where the world is built and scored and NeuMuter runs ("auto": GPU if any)

    @classmethod
    def tiny(cls) -> DemoConfig:
        """The reduced size the tests run (well under two minutes on 2 cores)."""
        return cls(testbed=TestbedConfig.tiny(), neumuter=NeuMuterConfig(batch_size=2, progress=False),
                   schedule=CoefficientSchedule(stage_epochs=25, max_stages=6, check_every=5), el_prefix_stride=8)


def run_demo(out: str | Path, config: DemoConfig | None = None, overwrite: bool = False, progress: bool = True,
             log=print) -> dict:
    config = config or DemoConfig()
    check_writable(out, overwrite)
    experiment = prepare_experiment(config.testbed, target_fraction=config.target_fraction,
                                    el_prefix_stride=config.el_prefix_stride, progress=progress, log=log,
                                    device=config.device)
    testbed, limits = experiment.testbed, experiment.thresholds
    before, oracle_scores = experiment.original, experiment.oracle
    neighbours = experiment.neighbours(testbed.forget_texts, config.neighbours_per_sample, config.replacement_ratio,
                                       config.neumuter.seed)
    neumuter_config = copy.deepcopy(config.neumuter)
    neumuter_config.progress, neumuter_config.device = progress, config.device
    run = NeuMuter(neumuter_config, stop_when=experiment.criterion, schedule=config.schedule, log=log).run(
        testbed.load_model(), experiment.tokenizer, testbed.forget_texts, neighbours)
    after = experiment.evaluate(run.frozen)

    summary = {
        "before": public_scores(before), "after": public_scores(after), "oracle": public_scores(oracle_scores),
        "neurons_muted_fraction": run.selection.neurons_muted_fraction,
        "neurons_muted": run.selection.neurons_muted,
        "thresholds": {"ma": limits["ma"], "el10": limits["el10"]},
        "calibration": run.calibration,
        "unlearning_seconds": run.record.seconds,
        "targets": _targets(before, after, run.selection.neurons_muted_fraction),
        "settings": {"testbed": asdict(config.testbed), "neumuter": neumuter_config.to_dict(),
                     "neighbours_per_sample": config.neighbours_per_sample,
                     "replacement_ratio": config.replacement_ratio, "target_fraction": config.target_fraction,
                     "el_prefix_stride": config.el_prefix_stride},
        "per_sample": {"before": before["per_sample"], "after": after["per_sample"], "oracle": oracle_scores["per_sample"]},
    }
    with output_directory(out, overwrite) as staging:
        write_json(staging / "metrics.json", summary)
        (staging / "report.md").write_text(demo_report(summary))
        plot_muted_per_layer(run.selection.per_layer_counts(), run.selection.ffn_width, staging / "muted_per_layer.png")
        plot_distributions({name: summary["per_sample"][name]["forget_loss"] for name in ("before", "after", "oracle")},
                           staging / "forget_loss.png", "per-sample loss on the forget people (nats/token)",
                           "Forget-set losses: original, NeuMuter, retrained oracle")
        run.save(staging / "run", extra_metrics={"before": summary["before"], "after": summary["after"]},
                 run_info={"model": str(testbed.model_dir), "forget_file": "testbed forget people",
                           "forget_samples": len(testbed.forget_texts),
                           "forget_sha256": texts_sha256(testbed.forget_texts)})
    log(f"wrote {out}/ (metrics.json, report.md, muted_per_layer.png, forget_loss.png, run/)")
    return summary


def _targets(before: dict, after: dict, muted_fraction: float) -> dict:
    ppl_increase = after["heldout_ppl"] / before["heldout_ppl"] - 1
    return {
        "forgotten_fraction": {"value": after["forgotten_fraction"], "target": f">= {TARGETS['forgotten_fraction_at_least']}",
                               "met": after["forgotten_fraction"] >= TARGETS["forgotten_fraction_at_least"]},
        "heldout_ppl_increase": {"value": ppl_increase, "target": f"<= {TARGETS['heldout_ppl_increase_at_most']}",
                                 "met": ppl_increase <= TARGETS["heldout_ppl_increase_at_most"]},
        "neurons_muted_fraction": {"value": muted_fraction, "target": f"<= {TARGETS['neurons_muted_fraction_at_most']}",
                                   "met": muted_fraction <= TARGETS["neurons_muted_fraction_at_most"]},
    }


def demo_report(summary: dict) -> str:
    rows = []
    keys = ["forget_ma", "forget_el10", "forgotten_fraction", "retain_ma", "heldout_ppl", "mia_distance",
            "forget_quality", "forget_qa_exposed", "retain_qa_exposed"]
    for key in keys:
        rows.append([key, *(summary[name].get(key) for name in ("before", "after", "oracle"))])
    targets = [[name, f"{t['value']:.4g}", t["target"], "yes" if t["met"] else "**no**"]
               for name, t in summary["targets"].items()]
    calibration = summary.get("calibration") or {}
    return "\n\n".join([
        "# NeuMuter on the embedded testbed",
        f"Eq. 17 thresholds (held-out people, original model): MA {summary['thresholds']['ma']:.4f}, "
        f"EL10 {summary['thresholds']['el10']:.4f} (EL10 over every {summary['settings']['el_prefix_stride']}th "
        f"prefix). Muted {summary['neurons_muted']} FFN neurons "
        f"({100 * summary['neurons_muted_fraction']:.2f}%) in {summary['unlearning_seconds']:.1f} s.",
        markdown_table(["metric", "original", "NeuMuter", "retrain oracle"], rows),
        "## Targets",
        markdown_table(["criterion", "value", "target", "met"], targets),
        "## Coefficient schedule",
        f"Stopping criterion met: {calibration.get('met')}; ended with kl_weight={calibration.get('final_kl_weight')}, "
        f"sparsity_weight={calibration.get('final_sparsity_weight')} after "
        f"{sum(s['epochs'] for s in calibration.get('stages', []))} epochs.",
        "Rates are fractions in [0, 1]. forget_quality is the KS-test p-value between the per-sample forget "
        "losses of the model and of the retrained oracle (higher = closer to the oracle).",
    ]) + "\n"
