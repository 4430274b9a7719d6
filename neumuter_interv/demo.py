"""The main job: NeuMuter on a world, evaluated before and after, against the attribution baseline at the
same muted fraction and, where the world has one, the retrain oracle.

Steps: build (or load) the world (``worlds``: ``real``, the default, is SmolLM2-135M and a licence it
memorized; ``people`` is the embedded testbed); write neighbours for the forget set; run NeuMuter (on
until the frozen mask meets Eq. 17, on the people world with the coefficient schedule); mute the same
number of neurons by attribution as a baseline; evaluate everything with the same metrics; write
``metrics.json``, ``report.md``, the plots, generation examples and the run directory (the frozen
intervention, loadable with pyvene).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import metrics
from .errors import NeuMuterError
from .lm import auto_precision, describe_precision, resolve_device
from .methods.neumuter import CoefficientSchedule, NeuMuter, NeuMuterConfig
from .methods.registry import make_method
from .operating_curve import gate_curve_counts, operating_curve
from .output import check_writable, output_directory, write_json, write_text
from .report import (
    markdown_table,
    plot_distributions,
    plot_grouped_bars,
    plot_muted_per_layer,
    plot_operating_curve,
)
from .utility import UtilityConfig
from .validation import check_number
from .worlds import World, WorldSpec, public_scores, world_spec
from .worlds.base import SIZES


@dataclass
class DemoConfig:
    """The demo on one world: the world's settings, NeuMuter's (``NeuMuterConfig``, its neighbours and anchors
    included) and how long it may train under the world's Eq. 17 criterion (``schedule``). ``for_world``
    gives each registered world's preset; the defaults are the real world's."""

    world: str = "real"
    world_settings: Any = None  # the settings of the world ``world`` names; None: its default size
    # NeuMuter's settings, its neighbours' included (K, r, anchors): the real-model preset
    neumuter: NeuMuterConfig = field(default_factory=lambda: NeuMuterConfig.real_model(progress=False))
    # NeuMuter trains until the world's Eq. 17 criterion holds (Appendix B.4), within this budget, as every
    # other method of ``compare`` does: the preset's epochs, the readout checked every 2
    schedule: CoefficientSchedule = field(
        default_factory=lambda: CoefficientSchedule.fixed(NeuMuterConfig.real_model().epochs, check_every=2))
    target_fraction: float = 0.9  # Eq. 17: the share of forget samples that must be forgotten
    el_prefix_stride: int = 4  # EL10 over every 4th prefix, where the world's settings have no stride of their own
    attribution_baseline: bool = True
    curve_points: int = 6  # the operating-point curve's log-spaced counts (``operating_curve``); 0: none
    device: str = "cpu"  # where the world is built and scored and NeuMuter runs ("auto": GPU if any)
    utility: UtilityConfig | None = None  # the paper's utility benchmarks (``utility``), where their files are given

    def __post_init__(self):
        if self.world_settings is None:
            self.world_settings = world_spec(self.world).settings("default")
        self.check()

    @classmethod
    def for_world(cls, world: str = "real", size: str = "default", settings: Any = None, **fields) -> DemoConfig:
        """The registered world's demo at ``size`` (``SIZES``): its settings (or ``settings``), its NeuMuter
        preset and schedule, and ``fields`` on top."""
        if size not in SIZES:
            raise NeuMuterError(f"unknown size {size!r}: choose from {', '.join(SIZES)}")
        spec = world_spec(world)
        return cls(world=world, world_settings=settings if settings is not None else spec.settings(size),
                   **{**spec.demo(size), **fields})

    @property
    def spec(self) -> WorldSpec:
        return world_spec(self.world)

    def check(self) -> None:
        """Refuse a bad setting in one line; run again before work, since commands set fields after building."""
        spec = world_spec(self.world)
        if self.utility is not None and not spec.takes_utility:
            raise NeuMuterError(f"--utility does not apply to the {self.world} world: it scores model utility its own way")
        check_number("el_prefix_stride", self.el_prefix_stride, minimum=1, integer=True)
        check_number("target_fraction", self.target_fraction, above=0, maximum=1)
        check_number("curve_points", self.curve_points, minimum=0, integer=True)
        NeuMuterConfig.from_dict(self.neumuter.to_dict())

    def method_overrides(self) -> dict[str, dict]:
        """``make_method`` overrides that the demo's settings give methods in a comparison: NeuMuter's."""
        return {"neumuter": {**self.neumuter.to_dict(), "device": self.device, "schedule": self.schedule}}


def prepare_world(config: DemoConfig, progress: bool = True, log: Callable[[str], None] = print) -> World:
    """The world ``config.world`` names, built or read from the cache."""
    return config.spec.prepare(config.world_settings, target_fraction=config.target_fraction,
                               el_prefix_stride=config.el_prefix_stride, progress=progress, log=log,
                               device=config.device, utility=config.utility)


def demo_inputs(config: DemoConfig) -> dict[str, str]:
    """The files a run on ``config`` reads, which its output must never replace or lie inside."""
    inputs = dict(config.spec.inputs(config.world_settings))
    if config.utility is not None:
        inputs["--utility"] = config.utility.directory
    return inputs


def run_demo(out: str | Path, config: DemoConfig | None = None, overwrite: bool = False, progress: bool = True,
             log=print) -> dict:
    config = config or DemoConfig()
    config.check()
    check_writable(out, overwrite, demo_inputs(config))
    resolve_device(config.device)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    world = prepare_world(config, progress, log)
    seconds["world"] = time.perf_counter() - start

    method = neumuter_method(world, config, log, progress)
    neumuter_config = method.config
    start = time.perf_counter()
    neighbours = method.make_neighbours(world.forget_texts)
    seconds["neighbours"] = time.perf_counter() - start
    run = method.run(world.load_model(), world.tokenizer, world.forget_texts, neighbours)
    seconds["neumuter"] = run.record.seconds

    start = time.perf_counter()
    after = world.evaluate(run.frozen)
    seconds["evaluation"] = time.perf_counter() - start
    start = time.perf_counter()
    curve = _curve(world, run, config.curve_points, log)
    seconds["curve"] = time.perf_counter() - start
    summary = {
        "world": config.world,
        "before": public_scores(world.original), "after": public_scores(after),
        "neurons_muted_fraction": run.selection.neurons_muted_fraction,
        "neurons_muted": run.selection.neurons_muted,
        "uses_retained_text": run.record.uses_retain_set,
        "thresholds": {"ma": world.thresholds["ma"], "el10": world.thresholds["el10"]},
        "calibration": run.calibration,
        "curve": curve,
        "unlearning_seconds": run.record.seconds,
        "neighbour_example": {"forget": world.forget_texts[0], "neighbour": neighbours[0]},
        "per_sample": {"before": world.original["per_sample"], "after": after["per_sample"]},
    }
    if world.oracle is not None:
        summary["oracle"] = public_scores(world.oracle)
        summary["per_sample"]["oracle"] = world.oracle["per_sample"]
    if config.attribution_baseline:
        start = time.perf_counter()
        baseline = make_method("attribution", layers=neumuter_config.layers,
                               fraction=run.selection.neurons_muted_fraction).on_world(world)
        result = baseline.unlearn(world.load_model(), world.tokenizer, world.forget_texts)
        log(f"attribution baseline: {result.record.extra['neurons_muted']} neurons zeroed (forget/other ratio over "
            f"{result.record.extra['reference_texts']} other memorized texts)")
        summary["attribution"] = public_scores(world.evaluate(result.model))
        seconds["attribution_baseline"] = time.perf_counter() - start
    start = time.perf_counter()
    summary["generation_examples"] = _generation_examples(world, run.frozen)
    seconds["generation_examples"] = time.perf_counter() - start
    summary["title"] = config.spec.title
    summary["targets"] = check_targets(config.spec.targets, summary)
    summary["seconds"] = seconds
    summary["settings"] = {"world": asdict(config.world_settings),
                           "neumuter": neumuter_config.to_dict(),
                           "schedule": config.schedule.to_dict(), "target_fraction": config.target_fraction,
                           "el_prefix_stride": world.data.settings["el_prefix_stride"]}
    summary["precision"] = auto_precision(resolve_device(config.device))  # what "auto" computed in here
    with output_directory(out, overwrite) as staging:
        write_json(staging / "metrics.json", summary)
        write_text(staging / "report.md", demo_report(summary))
        plot_muted_per_layer(run.selection.per_layer_counts(), run.selection.ffn_width, staging / "muted_per_layer.png")
        if curve:
            write_json(staging / "curve.json", curve)
        if any(point["neurons_muted"] for point in curve):
            plot_operating_curve(curve, staging / "curve.png", "NeuMuter's operating points along the gates' ranking",
                                 world.thresholds["ma"], run.selection.neurons_muted_fraction)
        plot_distributions({name: summary["per_sample"][name]["forget_loss"] for name in summary["per_sample"]},
                           staging / "forget_loss.png", "per-sample loss on the forget set (nats/token)",
                           "Forget-set losses before and after")
        plot_grouped_bars({label: {name: summary[column][key] for column, name in _columns(summary).items()}
                           for key, label in _ma_rows(summary)}, staging / "memorization.png",
                          "memorization accuracy (Eq. 15)", "What was forgotten and what was kept")
        run.save(staging / "run", extra_metrics={"before": summary["before"], "after": summary["after"]},
                 run_info=world.provenance())
    log(f"wrote {out}/ (metrics.json, report.md, muted_per_layer.png, forget_loss.png, memorization.png, run/)")
    return summary


def neumuter_method(world: World, config: DemoConfig, log: Callable[[str], None] = print,
                    progress: bool = False) -> NeuMuter:
    """NeuMuter as the demo runs it on ``world`` (``NeuMuter.on_world``), with the demo's settings, schedule
    and device."""
    neumuter_config = copy.deepcopy(config.neumuter)
    neumuter_config.progress, neumuter_config.device = progress, config.device
    return NeuMuter(neumuter_config, schedule=config.schedule, log=log).on_world(world)


def _curve(world: World, run, points: int, log) -> list[dict]:
    """The operating-point curve of the run's gates (``operating_curve``): ``points`` log-spaced counts up
    to the readout's cap (``max_fraction`` of the gated neurons) or the kept count if larger, and the kept
    count itself."""
    if not points:
        return []
    counts = gate_curve_counts(run.localization.log_alpha, run.config.max_fraction, points,
                               include=[run.selection.neurons_muted])
    return operating_curve(run.frozen.model, world.tokenizer, run.localization.log_alpha, run.localization.params,
                           world.data, world.thresholds, counts, log, ranking=run.config.ranking,
                           discount=run.ranking_discount)


def _generation_examples(world: World, unlearned, count: int = 2) -> list[dict]:
    """Table 14: greedy continuations of the first 32 tokens of forget samples, before and after."""
    texts = world.example_texts[:count]
    settings = dict(prefix_length=32, max_new_tokens=48, batch_size=count)
    before = metrics.generation_examples(world.load_model(), world.tokenizer, texts, **settings)
    after = metrics.generation_examples(unlearned, world.tokenizer, texts, **settings)
    return [{"prefix": b["prefix"], "true_suffix": b["true_suffix"], "before": b["generation"],
             "after": a["generation"], "before_matches": b["token_matches"], "after_matches": a["token_matches"]}
            for b, a in zip(before, after)]


def check_targets(goals: Mapping[str, float], summary: dict) -> dict:
    """Each of the world's targets (``WorldSpec.targets``) with the demo's value and whether it was met."""
    before, after = summary["before"], summary["after"]
    checks = {
        "forgotten_fraction": (after["forgotten_fraction"], "forgotten_fraction_at_least", ">="),
        "general_ppl_increase": (after["heldout_ppl"] / before["heldout_ppl"] - 1, "general_ppl_increase_at_most", "<="),
        "neurons_muted_fraction": (summary["neurons_muted_fraction"], "neurons_muted_fraction_at_most", "<="),
    }
    for group in ("retain", "retain_licences", "retain_other", "heldout"):
        goal = f"{group}_ma_drop_at_most"
        if goal in goals and f"{group}_ma" in before:
            checks[f"{group}_ma_drop"] = (before[f"{group}_ma"] - after[f"{group}_ma"], goal, "<=")
    targets = {name: {"value": value, "target": f"{op} {goals[goal]}",
                      "met": value >= goals[goal] if op == ">=" else value <= goals[goal]}
               for name, (value, goal, op) in checks.items() if goal in goals}
    if "attribution" in summary:
        base = summary["attribution"]
        beats = (after["forget_ma"] < base["forget_ma"] and after["retain_ma"] >= base["retain_ma"]
                 and after["heldout_ppl"] <= base["heldout_ppl"])
        targets["beats_attribution_baseline"] = {
            "value": f"forget MA {after['forget_ma']:.3f} vs {base['forget_ma']:.3f}, retain MA "
                     f"{after['retain_ma']:.3f} vs {base['retain_ma']:.3f}, PPL {after['heldout_ppl']:.2f} vs "
                     f"{base['heldout_ppl']:.2f}",
            "target": "lower forget MA at no worse retain MA and PPL", "met": beats}
    return targets


_ROWS = [("forget_ma", "forget MA (Eq. 15)"), ("forget_el10", "forget EL10 (Eq. 16)"),
         ("forgotten_fraction", "forget samples meeting Eq. 17"), ("other_copies_ma", "other copies MA"),
         ("retain_ma", "retain MA"), ("retain_licences_ma", "retain MA: licence windows (look-alike)"),
         ("retain_other_ma", "retain MA: other windows (unrelated)"), ("heldout_ma", "held-out MA"), ("heldout_ppl", "general-text PPL"),
         ("classification_acc", "ACC (LAMBADA, PubMedQA)"), ("dialogue_f1", "dialogue F1"),
         ("dialogue_ce", "dialogue CE"), ("pile_ppl", "Pile PPL"), ("wikitext_ppl", "WikiText PPL"),
         ("mia_distance", "loss-MIA distance"), ("forget_quality", "forget quality (KS p vs oracle)"),
         ("forget_qa_exposed", "forget QA exposed"), ("retain_qa_exposed", "retain QA exposed")]


_CURVE_COLUMNS = [("forget_ma", "forget MA"), ("forgotten_fraction", "forgotten"),
                  ("other_copies_ma", "other copies MA"), ("retain_ma", "retain MA"),
                  ("retain_licences_ma", "retain: licences"), ("retain_other_ma", "retain: other"),
                  ("heldout_ma", "held-out MA"), ("heldout_ppl", "general PPL")]


def _columns(summary: dict) -> dict[str, str]:
    names = {"before": "original", "after": "NeuMuter" + ("†" if summary.get("uses_retained_text") else ""),
             "attribution": "attribution baseline†",
             "oracle": "retrain oracle"}
    return {key: label for key, label in names.items() if key in summary}


def _ma_rows(summary: dict) -> list[tuple[str, str]]:
    return [(key, label) for key, label in _ROWS if key.endswith("_ma") and key in summary["before"]]


def _precision(summary: dict) -> str:
    """The compute dtype of the world's scoring and of NeuMuter's training, as the run resolved "auto"."""
    dtypes = {summary["settings"]["world"].get("dtype", "float32"), summary["settings"]["neumuter"].get("dtype", "float32")}
    return " and ".join(describe_precision(dtype, summary.get("precision")) for dtype in sorted(dtypes))


def _objective(neumuter: dict) -> str:
    """NeuMuter's loss in one sentence: which forget term (the paper's ascent or the distillation), and its weights."""
    term = ("Eq. 13's bounded gradient ascent" if neumuter["forget_loss"] == "ascent" else
            f"the KL from DI's teacher (the original with each true token's logit lowered by {neumuter['distill_tau']:g}; "
            "a departure from Eq. 13, docs/specificity.md)")
    return (f"Forget term: {term}; KL weight {neumuter['kl_weight']:g}, L0 weight {neumuter['sparsity_weight']:g}, "
            f"learning rate {neumuter['learning_rate']:g}, batch {neumuter['batch_size']}.")


def demo_report(summary: dict) -> str:
    columns = _columns(summary)
    rows = [[label, *(summary[column].get(key) for column in columns)]
            for key, label in _ROWS if key in summary["before"]]
    rows.append(["FFN neurons muted", "-", f"{100 * summary['neurons_muted_fraction']:.2f}%",
                 *(f"{100 * summary['neurons_muted_fraction']:.2f}%" for c in columns if c == "attribution"),
                 *("-" for c in columns if c == "oracle")])
    targets = [[name, t["value"] if isinstance(t["value"], str) else f"{t['value']:.4g}", t["target"],
                "yes" if t["met"] else "**no**"] for name, t in summary["targets"].items()]
    parts = [
        f"# NeuMuter on {summary['title']}",
        f"Eq. 17 thresholds (held-out text, original model): MA {summary['thresholds']['ma']:.4f}, "
        f"EL10 {summary['thresholds']['el10']:.4f} (EL10 over every {summary['settings']['el_prefix_stride']}th "
        f"prefix). Muted {summary['neurons_muted']} FFN neurons ({100 * summary['neurons_muted_fraction']:.2f}%) "
        f"in {summary['unlearning_seconds']:.1f} s. {_objective(summary['settings']['neumuter'])} Scoring and "
        f"NeuMuter's forwards in {_precision(summary)}.",
        markdown_table(["metric", *columns.values()], rows),
        "## Targets",
        markdown_table(["criterion", "value", "target", "met"], targets),
        "## Generation examples (Table 14 style: greedy, 32-token prompt)",
    ]
    for example in summary["generation_examples"]:
        parts.append("\n".join([f"- **prompt**: {_quote(example['prefix'])}",
                                f"- **true continuation**: {_quote(example['true_suffix'])}",
                                f"- **original** ({100 * example['before_matches']:.0f}% of tokens match): "
                                f"{_quote(example['before'])}",
                                f"- **NeuMuter** ({100 * example['after_matches']:.0f}% match): {_quote(example['after'])}"]))
    calibration = summary.get("calibration")
    if calibration:
        checks = [check for stage in calibration.get("stages", []) for check in stage["checks"]]
        probes = sum(len(check.get("probes", [])) for check in checks)
        parts += ["## Stopping rule (Appendix B.4)",
                  f"Eq. 17 for {summary['settings']['target_fraction']:.0%} of the forget samples "
                  f"{'**met**' if calibration.get('met') else '**not met** within the budget'}: trained "
                  f"{sum(s['epochs'] for s in calibration.get('stages', []))} epochs "
                  f"({len(calibration.get('stages', []))} stage(s), ending with kl_weight="
                  f"{calibration.get('final_kl_weight')}, sparsity_weight={calibration.get('final_sparsity_weight')}), "
                  f"checked {len(checks)} times ({probes} masks probed by the readout); kept the mask of epoch "
                  f"{calibration.get('kept_epoch')} with {calibration.get('kept_neurons')} neurons."]
    if summary.get("curve"):
        parts += ["## Operating-point curve (curve.json, curve.png)",
                  "The first c neurons of the trained gates' ranking muted (trained values kept), scored with "
                  "teacher-forced MA and EL10 where MA passes; the readout's mask is marked.",
                  markdown_table(["muted", *(label for key, label in _CURVE_COLUMNS if key in summary["curve"][0])],
                                 [[f"{p['neurons_muted']} ({100 * p['neurons_muted_fraction']:.2f}%)"
                                   + (" ←" if p["neurons_muted"] == summary["neurons_muted"] else ""),
                                   *(p[key] for key, _ in _CURVE_COLUMNS if key in p)] for p in summary["curve"]])]
    parts += ["## Time per stage (s)",
              markdown_table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in summary["seconds"].items()]),
              "Rates are fractions in [0, 1]. The attribution baseline zeroes as many neurons as NeuMuter muted: "
              "those with the highest forget/other |activation x gradient| share ratio. † uses retained text: other "
              "memorized windows (the world's anchor texts, never the scored retain windows), as the attribution "
              "baseline's reference or as NeuMuter's KL anchors."]
    return "\n\n".join(parts) + "\n"


def _quote(text: str, keep: int = 240) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return "`" + (flat if len(flat) <= keep else flat[:keep - 3] + "...").replace("`", "'") + "`"
