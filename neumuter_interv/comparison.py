"""``neumuter compare``: NeuMuter against the other unlearning methods on the embedded testbed, shaped
like the paper's Table 2 (Hou et al., ACL Findings 2025).

Every method gets a fresh copy of the original model, the same forget people, the same Eq. 17 stop rule
(one ``ForgettingCriterion``) and a step budget, and is scored by the same ``evaluate`` as the original
model and the retrain oracle. NeuMuter runs exactly as in ``neumuter demo`` (MLM neighbours, coefficient
schedule). A method that raises is recorded with its error and the comparison goes on.

Writes ``comparison.json`` (per method: evaluation, record, settings, or error), ``comparison.md``
(the table) and ``tradeoff.png`` (held-out PPL against forget MA).
"""

from __future__ import annotations

import copy
import gc
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .demo import DemoConfig
from .errors import NeuMuterError
from .methods.base import UnlearningMethod
from .methods.finetune import FineTuneSettings
from .methods.neumuter import NeuMuter
from .methods.registry import METHODS, make_method
from .output import check_writable, output_directory, write_json
from .report import markdown_table, plot_tradeoff
from .worlds import World, prepare_people_world, public_scores

DISPLAY_NAMES = {"neumuter": "NeuMuter", "grun": "GRUN-like", "lunar": "LUNAR-like"}
RETAIN_MARK = "†"
REDUCED_MARK = "‡"


def default_budgets(fine_tuning_epochs: int = 100, ig_positions_per_sample: int | None = 8,
                    ig_max_neurons: int = 500) -> dict[str, dict]:
    """``make_method`` overrides per method: one epoch budget for every fine-tuning method (full-batch,
    so one optimizer step per epoch; SGA one step on its most memorized sample), and IG's attribution
    reduced to ``ig_positions_per_sample`` target tokens per sample (``None``: all, the paper's setting,
    which costs one gradient pass per token and layer). NeuMuter's budget is its coefficient schedule."""
    budgets = {name: {"max_epochs": fine_tuning_epochs} for name, entry in METHODS.items()
               if issubclass(entry.settings, FineTuneSettings)}
    budgets["ig"] = {"positions_per_sample": ig_positions_per_sample, "max_neurons": ig_max_neurons}
    return budgets


@dataclass
class ComparisonConfig(DemoConfig):
    """The people demo's settings (testbed, NeuMuter, schedule, neighbours, Eq. 17 rule; ``people()`` and
    ``tiny()``, as ``DemoConfig``) plus which methods to compare and their step budgets (``make_method``
    overrides by method name). The comparison runs on the people world (its retrain oracle is the gold
    standard of the report)."""

    methods: tuple[str, ...] = tuple(METHODS)
    budgets: dict[str, dict] = field(default_factory=default_budgets)

    def check(self) -> None:
        """The demo's checks, the method names, and every budget built into its method's settings."""
        super().check()
        for name in parse_methods(self.methods):
            if name != "neumuter":
                make_method(name, **self.budgets.get(name, {}))

    @classmethod
    def tiny(cls) -> ComparisonConfig:
        """The tiny testbed with small budgets: what the tests run."""
        config = super().tiny()
        config.budgets = default_budgets(fine_tuning_epochs=20, ig_positions_per_sample=4, ig_max_neurons=100)
        return config


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
    """Run every method of ``config.methods``, evaluate each, write the result files to ``out``."""
    config = config or ComparisonConfig.people()
    if config.world != "people":
        raise NeuMuterError(f"compare runs on the people world (its retrain oracle is the report's gold standard), "
                            f"not {config.world!r}")
    config.check()
    methods = parse_methods(config.methods)
    check_writable(out, overwrite)
    start = time.perf_counter()
    world = prepare_people_world(config.testbed, target_fraction=config.target_fraction,
                                    el_prefix_stride=config.el_prefix_stride, progress=progress, log=log)
    setup_seconds = time.perf_counter() - start
    entries = {}
    for index, name in enumerate(methods, start=1):
        log(f"[{index}/{len(methods)}] {name}: unlearning {len(world.forget_texts)} forget samples ...")
        entries[name] = run_method(name, world, config, log)
        log(f"[{index}/{len(methods)}] {name}: {_progress_summary(entries[name])}")
    summary = {
        "thresholds": world.thresholds,
        "original": public_scores(world.original),
        "retrain_oracle": public_scores(world.oracle),
        "methods": entries,
        "settings": _settings(config),
        "setup_seconds": setup_seconds,  # testbed (building it when not cached), thresholds, reference scores
        "seconds": time.perf_counter() - start,
    }
    with output_directory(out, overwrite) as staging:
        write_json(staging / "comparison.json", summary)
        (staging / "comparison.md").write_text(comparison_report(summary))
        plot_tradeoff(_tradeoff_points(summary), staging / "tradeoff.png", "forget MA (lower = more forgotten)",
                      "held-out perplexity (lower = more useful)", "Utility vs forgetting on the testbed")
    log(f"wrote {out}/ (comparison.json, comparison.md, tradeoff.png) after {summary['seconds']:.0f} s")
    return summary


def build_method(name: str, world: World, config: ComparisonConfig,
                 log: Callable[[str], None] = print) -> UnlearningMethod:
    """The method with its budget and the world's stop criterion; NeuMuter as the demo runs it."""
    if name == "neumuter":
        neumuter_config = copy.deepcopy(config.neumuter)

        def mlm_neighbours(texts):
            return world.neighbours(texts, config.neighbours_per_sample, config.replacement_ratio, neumuter_config.seed)

        return NeuMuter(neumuter_config, log=log, stop_when=world.criterion, schedule=config.schedule,
                        make_neighbours=mlm_neighbours)
    overrides = dict(config.budgets.get(name, {}))
    if "stop_when" in {f.name for f in fields(METHODS[name].settings)}:
        overrides["stop_when"] = world.criterion
    return make_method(name, **overrides)


def run_method(name: str, world: World, config: ComparisonConfig,
               log: Callable[[str], None] = print) -> dict:
    """One method on a fresh copy of the model, evaluated; any exception is recorded, not raised."""
    entry: dict = {"uses_retain_set": METHODS[name].method.needs_retain, "budget": budget_text(name, config)}
    try:
        method = build_method(name, world, config, log)
        entry["settings"] = method_settings(method)
        retain = world.retain_texts if method.needs_retain else None
        result = method.unlearn(world.load_model(), world.tokenizer, world.forget_texts, retain)
        scores = world.evaluate(result.model)
        entry.update(evaluation=public_scores(scores), record=result.record.to_dict(),
                     eq17_met=scores["forgotten_fraction"] >= config.target_fraction,
                     per_sample=scores["per_sample"])
        del result
    except Exception as error:  # noqa: BLE001 - one broken method must not end the comparison
        entry.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    gc.collect()
    return entry


def method_settings(method: UnlearningMethod) -> dict:
    """A method's settings as JSON-able values (the stop criterion is the world's, not a setting)."""
    if isinstance(method, NeuMuter):
        return {"neumuter": method.config.to_dict(), "schedule": method.schedule.to_dict()}
    settings = method.settings
    return {f.name: getattr(settings, f.name) for f in fields(settings) if f.name != "stop_when"}


def budget_text(name: str, config: ComparisonConfig) -> str:
    if name == "neumuter":
        return f"≤ {config.schedule.max_stages} stages × {config.schedule.stage_epochs} epochs"
    budget = config.budgets.get(name, {})
    return ", ".join(f"{key}={value}" for key, value in budget.items()) or "method defaults"


def display_name(name: str, entry: dict) -> str:
    marks = (RETAIN_MARK if entry.get("uses_retain_set") else "") + (REDUCED_MARK if entry.get("reduced") else "")
    return DISPLAY_NAMES.get(name, name.upper()) + marks


TABLE_COLUMNS = ["method", "forget MA", "forget EL10", "forgotten", "retain MA", "held-out PPL", "MIA distance",
                 "forget quality", "Eq. 17 met", "time (s)", "peak mem (MiB)", "trainable %", "steps", "budget"]
SCORE_KEYS = ["forget_ma", "forget_el10", "forgotten_fraction", "retain_ma", "heldout_ppl", "mia_distance", "forget_quality"]


def comparison_report(summary: dict) -> str:
    """The Table-2-shaped markdown report, with footnotes for retain-set methods, reduced settings and
    failures."""
    settings = summary["settings"]
    rows = [["original", *(summary["original"].get(key) for key in SCORE_KEYS), *[None] * 6],
            ["retrain oracle", *(summary["retrain_oracle"].get(key) for key in SCORE_KEYS), *[None] * 6]]
    failures = []
    for name, entry in summary["methods"].items():
        entry = {**entry, "reduced": name in settings["reduced"]}
        if "error" in entry:
            rows.append([display_name(name, entry), f"**failed** ({entry['error'].splitlines()[0][:80]})",
                         *[None] * (len(TABLE_COLUMNS) - 3), entry["budget"]])
            failures.append(f"- {display_name(name, entry)}: `{entry['error'].splitlines()[0]}` "
                            "(traceback in comparison.json)")
            continue
        record, scores = entry["record"], entry["evaluation"]
        rows.append([display_name(name, entry), *(scores.get(key) for key in SCORE_KEYS),
                     "yes" if entry["eq17_met"] else "**no**", round(record["seconds"], 1),
                     round(record["peak_memory_bytes"] / 2**20, 1), 100 * record["trainable_fraction"],
                     record["steps"], entry["budget"]])
    testbed = settings["testbed"]
    notes = [
        f"{RETAIN_MARK} uses the retain set (the other methods see only the forget set).",
        *(f"{REDUCED_MARK} reduced setting: {text}" for text in settings["reduced"].values()),
        "Rates are fractions in [0, 1]. `forgotten` is the share of forget samples meeting Eq. 17 (MA and EL10 at "
        "or under the held-out thresholds); `Eq. 17 met` is whether that share reached the target "
        f"({settings['target_fraction']}), the stop rule every method ran under. `forget quality` is the KS-test "
        "p-value between the per-sample forget losses of the model and of the retrain oracle (higher = closer). "
        "`MIA distance` is the loss-based MIA's mean distance of forget losses to held-out losses.",
        "`time` is the unlearning alone (evaluation excluded); `peak mem` is the growth of the process's resident "
        "memory during unlearning on the CPU (CUDA-allocated bytes on a GPU), so small and noisy here; "
        "`trainable %` counts the parameters the method trains (IG and LUNAR edit weights without training: "
        "0% and one projection respectively); `steps` are optimizer steps (IG: gradient passes; LUNAR: one solve).",
    ]
    parts = [
        "# Unlearning methods compared on the embedded testbed (cf. Table 2 of Hou et al., 2025)",
        f"Testbed: GPT-Neo {testbed['n_layers']} layers × {testbed['hidden_size']} wide (FFN {testbed['ffn_size']}), "
        f"{testbed['n_forget']} forget / {testbed['n_retain']} retain / {testbed['n_heldout']} held-out people. "
        f"Eq. 17 thresholds (held-out people, original model): MA {summary['thresholds']['ma']:.4f}, "
        f"EL10 {summary['thresholds']['el10']:.4f}; EL10 prefix stride {settings['el_prefix_stride']}. "
        f"Every method stops at the first check where the stop rule holds, or when its budget is spent. "
        f"Wall time {summary['seconds']:.0f} s in all, {summary['setup_seconds']:.0f} s of it the setup (testbed, "
        "thresholds, scoring the original and the oracle).",
        markdown_table(TABLE_COLUMNS, rows),
        "\n\n".join(notes),
    ]
    if failures:
        parts += ["## Failed methods", "\n".join(failures)]
    return "\n\n".join(parts) + "\n"


def _reduced_settings(config: ComparisonConfig) -> dict[str, str]:
    """Which methods run below the paper's setting, and how."""
    reduced = {}
    ig = config.budgets.get("ig", {})
    if "ig" in config.methods and ig.get("positions_per_sample") is not None:
        reduced["ig"] = (f"IG attributes {ig['positions_per_sample']} evenly spaced target tokens per forget sample "
                         "(the paper: every token), then zeroes neurons 10 per round up to "
                         f"{ig.get('max_neurons', 500)}.")
    return reduced


def _settings(config: ComparisonConfig) -> dict:
    return {"testbed": asdict(config.testbed), "methods": list(config.methods), "budgets": config.budgets,
            "neumuter": config.neumuter.to_dict(), "schedule": config.schedule.to_dict(),
            "neighbours_per_sample": config.neighbours_per_sample, "replacement_ratio": config.replacement_ratio,
            "target_fraction": config.target_fraction, "el_prefix_stride": config.el_prefix_stride,
            "reduced": _reduced_settings(config)}


def _tradeoff_points(summary: dict) -> dict[str, tuple[float, float]]:
    points = {"original": summary["original"], "retrain oracle": summary["retrain_oracle"]}
    points.update({display_name(name, entry): entry["evaluation"] for name, entry in summary["methods"].items()
                   if "evaluation" in entry})
    return {name: (scores["forget_ma"], scores["heldout_ppl"]) for name, scores in points.items()}


def _progress_summary(entry: dict) -> str:
    if "error" in entry:
        return f"FAILED ({entry['error'].splitlines()[0]}); recorded, going on"
    scores, record = entry["evaluation"], entry["record"]
    return (f"{record['seconds']:.1f} s, {record['steps']} steps, forget MA {scores['forget_ma']:.3f}, "
            f"EL10 {scores['forget_el10']:.3f}, forgotten {scores['forgotten_fraction']:.2f}, "
            f"retain MA {scores.get('retain_ma', float('nan')):.3f}, held-out PPL {scores.get('heldout_ppl', float('nan')):.2f}")
