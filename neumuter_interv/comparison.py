"""``neumuter compare``: NeuMuter against the other unlearning methods on a world, shaped like the paper's
Table 2 (Hou et al., ACL Findings 2025).

Every method gets a fresh copy of the world's original model, the same forget set, the same Eq. 17 stop
rule (the world's ``ForgettingCriterion``) and a step budget, and is scored by the same ``world.evaluate``
as the original model (and, on the people world, the retrain oracle). NeuMuter runs exactly as in
``neumuter demo`` on that world; the attribution baseline follows it at NeuMuter's muted share. Methods
that need a retain set get the world's (``World.retain_texts``) and are marked. A method that raises is
recorded with its error and the comparison goes on.

Writes ``comparison.json`` (per method: evaluation, record, settings, or error), ``comparison.md`` (the
table) and ``tradeoff.png`` (utility and retain MA against forget MA).
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .cache import Journal
from .demo import DemoConfig, demo_inputs, prepare_world
from .errors import NeuMuterError
from .lm import auto_precision, describe_precision, resolve_device
from .methods.base import MatchedTo, UnlearningMethod
from .methods.registry import METHODS, make_method, method_budgets
from .output import check_writable, output_directory, write_json, write_text
from .paper_results import PAPER_COLUMNS
from .report import markdown_table, plot_tradeoff
from .utility import UTILITY_COLUMNS, UtilityConfig
from .worlds import World, public_scores

DISPLAY_NAMES = {"neumuter": "NeuMuter", "grun": "GRUN-like", "lunar": "LUNAR-like", "attribution": "attribution baseline"}
RETAIN_MARK = "†"
REDUCED_MARK = "‡"


@dataclass
class ComparisonConfig:
    """A comparison: the demo's settings for a world (``demo``: the world, NeuMuter's settings and schedule, the
    Eq. 17 target) plus which methods to compare and their budgets (``make_method`` overrides by name).
    ``for_world`` gives each registered world's preset."""

    demo: DemoConfig = field(default_factory=DemoConfig)
    methods: tuple[str, ...] = field(default_factory=lambda: tuple(METHODS))  # the registry at construction
    budgets: dict[str, dict] = field(default_factory=method_budgets)

    @classmethod
    def for_world(cls, world: str = "people", size: str = "default", settings: Any = None,
                  utility: UtilityConfig | None = None) -> ComparisonConfig:
        """The registered world's comparison at ``size``: its demo settings (the same world, scored the same way,
        so the demo's NeuMuter row is the comparison's) and its budgets (``WorldSpec.comparison``)."""
        demo = DemoConfig.for_world(world, size, settings, utility=utility)
        return cls(demo=demo, budgets=demo.spec.comparison(size).get("budgets", method_budgets()))

    def check(self) -> None:
        """The demo's checks, the method names, every budget built into its method's settings, and every setting
        taken from another method (``MatchedTo``) taken from one that runs before."""
        self.demo.check()
        names = parse_methods(self.methods)
        for index, name in enumerate(names):
            overrides = self.method_overrides(name)
            for key, value in overrides.items():
                if isinstance(value, MatchedTo) and value.method not in names[:index]:
                    raise NeuMuterError(f"{name} takes its {key} from {value.method}'s run: list {value.method} "
                                        f"before {name} in the methods")
            make_method(name, **{key: value for key, value in overrides.items() if not isinstance(value, MatchedTo)})

    def method_overrides(self, name: str) -> dict:
        """``make_method`` overrides of ``name``: the demo's settings for it (NeuMuter's), then its budget."""
        return {**self.demo.method_overrides().get(name, {}), **self.budgets.get(name, {})}


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """Method names from ``"neumuter,ga,..."``, checked against the registry before any work starts."""
    names = [name.strip() for name in text.split(",")] if isinstance(text, str) else [n.strip() for n in text]
    names = [name for name in names if name]
    if not names:
        raise NeuMuterError("no methods given: pass e.g. --methods neumuter,ga")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise NeuMuterError(f"unknown method(s) {', '.join(map(repr, unknown))}: choose from {', '.join(METHODS)}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise NeuMuterError(f"method(s) given twice: {', '.join(duplicates)}")
    return tuple(names)


def run_comparison(out: str | Path, config: ComparisonConfig | None = None, overwrite: bool = False,
                   progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run every method of ``config.methods`` on ``config.world``, evaluate each, write the result files."""
    config = config or ComparisonConfig.for_world("people")
    config.check()
    methods = parse_methods(config.methods)
    check_writable(out, overwrite, demo_inputs(config.demo))
    start = time.perf_counter()
    world = prepare_world(config.demo, progress, log)
    setup_seconds = time.perf_counter() - start
    # a killed comparison, run again with the same world, settings and code, continues after its last method
    journal = Journal("comparison", {"settings": _settings(config), "world": world.provenance(),
                                     "thresholds": world.thresholds, "original": public_scores(world.original)})
    entries: dict[str, dict] = {}
    resumed = [name for name in methods if name in journal.entries]
    log(f"each method's result is kept in {journal.path} until the results are written: after an interruption "
        "the same command continues with the next method")
    for index, name in enumerate(methods, start=1):
        if name in resumed:
            entries[name] = journal.entries[name]
            log(f"[{index}/{len(methods)}] {name}: read from the interrupted run's journal ({journal.path}): "
                f"{_progress_summary(entries[name])}")
            continue
        log(f"[{index}/{len(methods)}] {name}: unlearning {len(world.forget_texts)} forget samples ...")
        entries[name] = run_method(name, world, config, entries, log)
        if "error" not in entries[name]:  # a failed method runs again in a rerun
            entries[name] = journal.record(name, entries[name])
        log(f"[{index}/{len(methods)}] {name}: {_progress_summary(entries[name])}")
    summary = {
        "world": config.demo.world,
        "world_description": world.describe(),
        "retain_set": config.demo.spec.retain_set,
        "provenance": world.provenance(),
        "thresholds": world.thresholds,
        "original": public_scores(world.original),
        "retrain_oracle": public_scores(world.oracle) if world.oracle else None,
        "methods": entries,
        "paper_rows": config.demo.spec.paper_rows.to_dict() if config.demo.spec.paper_rows else None,
        "settings": _settings(config),
        "precision": auto_precision(resolve_device(config.demo.device)),  # what "auto" computed in here
        "setup_seconds": setup_seconds,  # the world (building it when not cached), thresholds, reference scores
        "seconds": time.perf_counter() - start,  # this invocation's (methods read from a journal excluded)
        "resumed_methods": resumed,
    }
    with output_directory(out, overwrite) as staging:
        write_json(staging / "comparison.json", summary)
        write_text(staging / "comparison.md", comparison_report(summary))
        plot_tradeoff_panels(_tradeoff_points(summary), staging / "tradeoff.png",
                             f"Utility and retained memorization vs forgetting ({world.name} world)")
    journal.finish()
    log(f"wrote {out}/ (comparison.json, comparison.md, tradeoff.png) after {summary['seconds']:.0f} s")
    return summary


def build_method(name: str, world: World, config: ComparisonConfig, earlier: dict[str, dict] | None = None,
                 log: Callable[[str], None] = print) -> UnlearningMethod:
    """The method with its overrides (``ComparisonConfig.method_overrides``; a ``MatchedTo`` read from the
    ``earlier`` entries of this comparison) on the world (``UnlearningMethod.on_world``)."""
    overrides = {key: _resolve(value, earlier or {}) for key, value in config.method_overrides(name).items()}
    return make_method(name, **overrides).on_world(world)


def _resolve(value, earlier: dict[str, dict]):
    """A setting, or the value a ``MatchedTo`` names in an earlier method's record."""
    if not isinstance(value, MatchedTo):
        return value
    entry = earlier.get(value.method, {})
    if "record" not in entry or value.key not in entry["record"]["extra"]:
        raise NeuMuterError(f"{value} is not known: {value.method} did not run to the end before this method")
    return entry["record"]["extra"][value.key]


def run_method(name: str, world: World, config: ComparisonConfig, earlier: dict[str, dict] | None = None,
               log: Callable[[str], None] = print) -> dict:
    """One method on a fresh copy of the model, evaluated; any exception is recorded, not raised."""
    entry: dict = {"uses_retain_set": METHODS[name].method.needs_retain, "budget": budget_text(name, config)}
    try:
        method = build_method(name, world, config, earlier, log)
        entry["settings"] = method.settings_dict()
        matched = [str(value) for value in config.method_overrides(name).values() if isinstance(value, MatchedTo)]
        budget = method.budget()
        if budget:
            entry["budget"] = budget + (f" ({', '.join(matched)})" if matched else "")
        retain = world.retain_texts if method.needs_retain else None
        result = method.unlearn(world.load_model(), world.tokenizer, world.forget_texts, retain)
        scores = world.evaluate(result.model)
        entry.update(evaluation=public_scores(scores), record=result.record.to_dict(),
                     eq17_met=scores["forgotten_fraction"] >= config.demo.target_fraction,
                     per_sample=scores["per_sample"],
                     uses_retain_set=entry["uses_retain_set"] or result.record.uses_retain_set)
        del result
    except Exception as error:  # noqa: BLE001 - one broken method must not end the comparison
        entry.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    gc.collect()
    return entry


def budget_text(name: str, config: ComparisonConfig) -> str:
    """A method's budget in words: its budget overrides (a matched one as what it is matched to)."""
    budget = config.budgets.get(name, {})
    return ", ".join(f"{key}={value}" for key, value in budget.items()) or "method defaults"


def display_name(name: str, entry: dict) -> str:
    marks = (RETAIN_MARK if entry.get("uses_retain_set") else "") + (REDUCED_MARK if entry.get("reduced") else "")
    return DISPLAY_NAMES.get(name, name.upper()) + marks


SCORE_COLUMNS = [("forget_ma", "forget MA"), ("forget_el10", "forget EL10"), ("forgotten_fraction", "forgotten"),
                 ("other_copies_ma", "other copies MA"), ("retain_ma", "retain MA"),
                 ("retain_licences_ma", "retain: licences"), ("retain_other_ma", "retain: other"),
                 ("heldout_ma", "held-out MA"), ("heldout_ppl", "general PPL"), *UTILITY_COLUMNS, ("mia_distance", "MIA distance"),
                 ("forget_quality", "forget quality"), ("log10_forget_quality", "log10 forget quality (TOFU)"),
                 ("model_utility", "model utility (TOFU)")]
RECORD_COLUMNS = ["Eq. 17 met", "time (s)", "peak mem (MiB)", "trainable %", "steps", "budget"]


def comparison_report(summary: dict) -> str:
    """The Table-2-shaped markdown report, with footnotes for retain-set methods, reduced settings and
    failures. Score columns appear when the original model has them (utility where its files were given,
    forget quality where an oracle exists)."""
    settings = summary["settings"]
    scores_shown = [(key, header) for key, header in SCORE_COLUMNS if key in summary["original"]]
    header = ["method", *(h for _, h in scores_shown), *RECORD_COLUMNS]
    references = [("original", summary["original"]), ("retrain oracle", summary.get("retrain_oracle"))]
    rows = [[label, *(scores.get(key) for key, _ in scores_shown), *[None] * len(RECORD_COLUMNS)]
            for label, scores in references if scores]
    failures = []
    for name, entry in summary["methods"].items():
        entry = {**entry, "reduced": name in settings["reduced"]}
        if "error" in entry:
            rows.append([display_name(name, entry), f"**failed** ({entry['error'].splitlines()[0][:80]})",
                         *[None] * (len(header) - 3), entry["budget"]])
            failures.append(f"- {display_name(name, entry)}: `{entry['error'].splitlines()[0]}` "
                            "(traceback in comparison.json)")
            continue
        record, scores = entry["record"], entry["evaluation"]
        rows.append([display_name(name, entry), *(scores.get(key) for key, _ in scores_shown),
                     "yes" if entry["eq17_met"] else "**no**", round(record["seconds"], 1),
                     round(record["peak_memory_bytes"] / 2**20, 1), 100 * record["trainable_fraction"],
                     record["steps"], entry["budget"]])
    notes = [
        f"{RETAIN_MARK} uses the retain set (the other methods see only the forget set): "
        + summary["retain_set"] + ".",
        *(f"{REDUCED_MARK} reduced setting: {text}" for text in settings["reduced"].values()),
        "Rates are fractions in [0, 1]. `forgotten` is the share of forget samples meeting Eq. 17 (MA and EL10 at "
        "or under the held-out thresholds); `Eq. 17 met` is whether that share reached the target "
        f"({settings['target_fraction']}), the stop rule every fine-tuning method ran under. "
        "`MIA distance` is the loss-based MIA's mean distance of forget losses to held-out losses."
        + (" `forget quality` is the KS-test p-value between the per-sample forget losses of the model and of the "
           "retrain oracle (higher = closer)." if "forget_quality" in summary["original"]
           and "model_utility" not in summary["original"] else "")
        + (" `forget quality` is TOFU's: the KS-test p-value between the forget questions' truth ratios (Eq. 19) of "
           "the model and of the retrain oracle; `model utility` the harmonic mean of the retain people's answer "
           "probability, ROUGE-L recall and truth-ratio score and the general-text perplexity of the pretrained base "
           "over the model's (capped at 1)." if "model_utility" in summary["original"] else ""),
        "`time` is the unlearning alone (evaluation excluded); `peak mem` is the growth of the process's resident "
        "memory during unlearning on the CPU (CUDA-allocated bytes on a GPU), so small and noisy here; "
        "`trainable %` counts the parameters the method trains (IG, LUNAR and the attribution baseline edit weights "
        "or masks without training them: 0%, one projection, 0%); `steps` are optimizer steps (IG: gradient passes; "
        "LUNAR: one solve; attribution: two attribution passes).",
    ]
    if any(key in summary["original"] for key, _ in UTILITY_COLUMNS):
        utility = settings.get("utility") or {}
        notes.append(
            "Utility (Appendix B, `neumuter_interv.utility`): ACC is the mean of LAMBADA last-word and PubMedQA "
            "accuracy (the paper averages nine tasks), F1 / CE the mean over the four dialogue sets of the greedy "
            "reply's unigram F1 and the reference reply's cross-entropy, PPL over Pile and WikiText texts; on the "
            f"first {utility.get('lambada_samples')} LAMBADA, {utility.get('pubmedqa_samples')} PubMedQA, "
            f"{utility.get('dialogues_per_set')} dialogues per set and {utility.get('ppl_texts')} texts x "
            f"{utility.get('ppl_tokens')} tokens of each PPL file.")
    precision = describe_precision(settings.get(summary["world"], {}).get("dtype", "float32"), summary.get("precision"))
    parts = [
        f"# Unlearning methods compared on the {summary['world']} world (cf. Table 2 of Hou et al., 2025)",
        f"World: {summary['world_description']}. Eq. 17 thresholds (held-out text, original model): MA "
        f"{summary['thresholds']['ma']:.4f}, EL10 {summary['thresholds']['el10']:.4f}; EL10 prefix stride "
        f"{settings['el_prefix_stride']}; scoring and fine-tuning forwards in {precision}. Every fine-tuning method "
        "stops at the first check where the stop rule holds, or when its budget is spent. "
        f"Wall time {summary['seconds']:.0f} s in all, {summary['setup_seconds']:.0f} s of it the setup (world, "
        "thresholds, scoring the original" + (" and the oracle)." if summary.get("retrain_oracle") else ").")
        + (f" {', '.join(display_name(name, summary['methods'][name]) for name in summary['resumed_methods'])} ran in "
           "an earlier, interrupted "
           "invocation of the same command (same world, settings and code) and are read from its journal: their "
           "time is not in the wall time." if summary.get("resumed_methods") else ""),
        markdown_table(header, rows),
        "\n\n".join(notes),
    ]
    if summary.get("paper_rows"):
        parts += paper_rows_section(summary)
    if failures:
        parts += ["## Failed methods", "\n".join(failures)]
    return "\n\n".join(parts) + "\n"


def paper_rows_section(summary: dict) -> list[str]:
    """Our rows beside the paper's (``WorldSpec.paper_rows``) for every method both have, in the paper's columns
    (``PAPER_COLUMNS``; our PPL the mean of our Pile and WikiText PPL, where the utility files were given)."""
    paper = summary["paper_rows"]
    ours = {"original": summary["original"],
            **{name: entry["evaluation"] for name, entry in summary["methods"].items() if "evaluation" in entry}}
    shown = [name for name in paper["rows"] if name in ours]
    rows = []
    for name in shown:
        scores = dict(ours[name])
        if "pile_ppl" in scores and "wikitext_ppl" in scores:
            scores["ppl"] = (scores["pile_ppl"] + scores["wikitext_ppl"]) / 2
        label = "original" if name == "original" else display_name(name, summary["methods"][name])
        rows.append([label, *(scores.get(key) for key, _ in PAPER_COLUMNS),
                     *(paper["rows"][name].get(key) for key, _ in PAPER_COLUMNS)])
    header = ["method", *(f"ours: {title}" for _, title in PAPER_COLUMNS),
              *(f"paper: {title}" for _, title in PAPER_COLUMNS)]
    return ["## Beside the paper's rows",
            f"The paper's rows are quoted, not measured here: {paper['source']}. What differs: "
            f"{paper['differences']} Empty cells: not measured in this run (utility needs `--utility`).",
            markdown_table(header, rows)]


def _reduced_settings(config: ComparisonConfig) -> dict[str, str]:
    """Which methods run below the paper's setting, and how."""
    reduced = {}
    ig = config.budgets.get("ig", {})
    if "ig" in config.methods and ig.get("positions_per_sample") is not None:
        reduced["ig"] = (f"IG attributes {ig['positions_per_sample']} evenly spaced target tokens per forget sample "
                         f"(the paper: every token) with {ig.get('steps', 20)} integration steps, then zeroes neurons "
                         f"{ig.get('neurons_per_round', 10)} per round up to {ig.get('max_neurons', 500)}.")
    return reduced


def _settings(config: ComparisonConfig) -> dict:
    demo = config.demo
    return {demo.world: asdict(demo.world_settings), "methods": list(config.methods),
            "budgets": {name: {key: str(value) if isinstance(value, MatchedTo) else value for key, value in budget.items()}
                        for name, budget in config.budgets.items()},
            "neumuter": demo.neumuter.to_dict(), "schedule": demo.schedule.to_dict(),
            "target_fraction": demo.target_fraction,
            "el_prefix_stride": getattr(demo.world_settings, "el_prefix_stride", demo.el_prefix_stride),
            "utility": asdict(demo.utility) if demo.utility else None, "reduced": _reduced_settings(config)}


def _tradeoff_points(summary: dict) -> dict[str, dict]:
    points = {"original": summary["original"]}
    if summary.get("retrain_oracle"):
        points["retrain oracle"] = summary["retrain_oracle"]
    points.update({display_name(name, entry): entry["evaluation"] for name, entry in summary["methods"].items()
                   if "evaluation" in entry})
    return points


def plot_tradeoff_panels(points: dict[str, dict], path: Path, title: str) -> None:
    """Forget MA on x against, per panel, the utility (Pile PPL where the utility files were given, else the
    general-text PPL), the dialogue F1 where given, and the retain-memorized MA."""
    ppl_key = "pile_ppl" if all("pile_ppl" in p for p in points.values()) else "heldout_ppl"
    panels = [(ppl_key, f"{'Pile' if ppl_key == 'pile_ppl' else 'general-text'} perplexity (lower = more useful)")]
    if all("dialogue_f1" in p for p in points.values()):
        panels.append(("dialogue_f1", "dialogue F1 (higher = more useful)"))
    if all("retain_ma" in p for p in points.values()):
        panels.append(("retain_ma", "retain MA (higher = more kept)"))
    plot_tradeoff({name: {key: p[key] for key, _ in panels} | {"forget_ma": p["forget_ma"]}
                   for name, p in points.items()}, path, "forget MA (lower = more forgotten)", panels, title)


def _progress_summary(entry: dict) -> str:
    if "error" in entry:
        return f"FAILED ({entry['error'].splitlines()[0]}); recorded, going on"
    scores, record = entry["evaluation"], entry["record"]
    return (f"{record['seconds']:.1f} s, {record['steps']} steps, forget MA {scores['forget_ma']:.3f}, "
            f"EL10 {scores['forget_el10']:.3f}, forgotten {scores['forgotten_fraction']:.2f}, "
            f"retain MA {scores.get('retain_ma', float('nan')):.3f}, held-out PPL {scores.get('heldout_ppl', float('nan')):.2f}")
