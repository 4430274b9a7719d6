"""TOFU's Table 13 on the tofu-real world: model utility and forget quality for each split and method.

Hou et al. (2025) report NeuMuter on TOFU (Table 13, LLaMA-2-7B; Figure 5, Phi-1.5) as one table of model
utility and log10 forget quality for the original model, the retrained one and each method, at forget 1%,
5% and 10%. This recipe assembles that table from one ``neumuter compare --world tofu-real`` run per split,
which must all be of the same fine-tuned world, and draws TOFU's picture: per split, each model's forget
quality (log10 KS p-value against the oracle; 0 is indistinguishable from it) against its model utility.

    for split in 01 05 10; do neumuter compare --world tofu-real --forget-percent ${split#0} \\
        --methods neumuter,attribution,ga,gd,kl,npo --out results/tofu-smollm2-forget$split; done
    python recipes/tofu_table13.py results/tofu-smollm2-forget01 results/tofu-smollm2-forget05 \\
        results/tofu-smollm2-forget10 --out results/tofu-smollm2

Writes ``table13.json``, ``table13.md`` and ``forget_quality.png``. Reads only the comparisons' JSON:
seconds, whatever the runs cost.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from scipy.stats import ks_2samp

from neumuter_interv.comparison import display_name
from neumuter_interv.errors import NeuMuterError, run_script
from neumuter_interv.output import check_writable, output_directory, write_json
from neumuter_interv.report import markdown_table, plot_scatter_panels
from neumuter_interv.worlds import TofuWorldConfig

COLUMNS = [("model_utility", "model utility ↑"), ("log10_forget_quality", "log10 forget quality ↑"),
           ("forget_truth_ratio", "forget truth-ratio score"), ("forget_ma", "forget MA"),
           ("forgotten_fraction", "forgotten (Eq. 17)"), ("retain_ma", "retain MA"),
           ("retain_probability", "retain answer probability"), ("retain_rouge_l", "retain ROUGE-L"),
           ("general_ppl_ratio", "general PPL score")]
SPLIT_SETTINGS_IGNORED = ("forget_percent",)  # what may differ between the splits of one world


def read_split(directory: str) -> tuple[int, dict]:
    """One comparison run's split and summary, or a ``NeuMuterError`` naming what makes it unusable."""
    path = Path(directory) / "comparison.json"
    try:
        summary = json.loads(path.read_text())
    except OSError as error:
        raise NeuMuterError(f"{directory!r} holds no readable comparison.json ({error.strerror or error}): "
                            "pass the --out directories of neumuter compare --world tofu-real") from None
    except ValueError:
        raise NeuMuterError(f"{str(path)!r} is not JSON") from None
    world = summary.get("settings", {}).get("tofu-real") if isinstance(summary, dict) else None
    if not world or not summary.get("retrain_oracle"):
        raise NeuMuterError(f"{str(path)!r} is not a comparison on the tofu-real world (no tofu-real settings "
                            "or no retrain oracle)")
    if "build" not in summary.get("provenance", {}):
        raise NeuMuterError(f"{str(path)!r} does not record which build of the world it ran on (a compare run of "
                            "an older neumuter_interv): run its compare again")
    return world["forget_percent"], summary


def check_one_world(splits: dict[int, dict]) -> dict:
    """The shared world: its ``build`` (the cache key its compare runs recorded) and its ``settings``;
    refuses runs of different worlds (other people, epochs or base model, or a world built another way)."""
    def world(summary: dict) -> dict:
        settings = summary["settings"]["tofu-real"]
        return {"build": summary["provenance"]["build"],
                **{key: value for key, value in settings.items() if key not in SPLIT_SETTINGS_IGNORED}}

    first_percent, first = next(iter(splits.items()))
    for percent, summary in splits.items():
        differing = sorted(key for key, value in world(summary).items() if world(first).get(key) != value)
        if differing:
            raise NeuMuterError(f"the forget{percent:02d} and forget{first_percent:02d} runs are of different worlds "
                                f"(they differ in {', '.join(differing)}): compare splits of one world")
    shared = world(first)
    return {"build": shared.pop("build"), "settings": shared}


def models_of(summary: dict) -> dict[str, dict]:
    """Per model of one run (the original, the oracle, each method in the run's order): its ``COLUMNS``
    scores and, for a method, whether it met Eq. 17 and its unlearning time, or the first line of its error."""
    oracle = {**summary["retrain_oracle"], "log10_forget_quality": 0.0}  # the oracle against itself: p = 1
    models = {label: {key: scores.get(key) for key, _ in COLUMNS}
              for label, scores in (("original", summary["original"]), ("retrain oracle", oracle))}
    for name, entry in summary["methods"].items():
        models[display_name(name, entry)] = (
            {"error": entry["error"].splitlines()[0]} if "error" in entry else
            {**{key: entry["evaluation"].get(key) for key, _ in COLUMNS}, "eq17_met": entry["eq17_met"],
             "seconds": entry["record"]["seconds"]})
    return models


def neumuter_protocol(summary: dict) -> str | None:
    """How the split's run trained and read out NeuMuter (its budget and readout), None where it did not run it:
    runs made before NeuMuter ran to the stopping rule used a fixed budget and share, and the table says which."""
    entry = summary["methods"].get("neumuter")
    if entry is None:
        return None
    return f"{entry['budget']}, readout {summary['settings']['neumuter']['selection']}"


def forget_questions(summary: dict) -> int:
    """How many forget questions the split's truth ratios were computed on (from a method's per-sample scores)."""
    counts = {len(entry["per_sample"]["forget_truth_ratio"]) for entry in summary["methods"].values()
              if "forget_truth_ratio" in entry.get("per_sample", {})}
    if len(counts) != 1:
        raise NeuMuterError("a comparison run has no method with per-sample truth ratios (or disagreeing counts)")
    return counts.pop()


def log10_quality_floor(n: int) -> float:
    """The lowest log10 forget quality n questions allow: the KS p-value of two fully separated samples."""
    return math.log10(ks_2samp(list(range(n)), list(range(n, 2 * n))).pvalue)


def report(table: dict[str, dict], world: dict) -> str:
    header = ["split", "model", *(label for _, label in COLUMNS), "Eq. 17 met", "time (s)"]
    rows = []
    for split in table.values():
        for label, model in split["models"].items():
            if "error" in model:
                rows.append([f"{split['percent']}%", label, f"**failed** ({model['error'][:80]})",
                             *[None] * (len(header) - 3)])
                continue
            record = ["yes" if model["eq17_met"] else "**no**", round(model["seconds"], 1)] if "seconds" in model \
                else [None, None]
            rows.append([f"{split['percent']}%", label, *(model[key] for key, _ in COLUMNS), *record])
    config = TofuWorldConfig(**world["settings"])
    return "\n\n".join([
        "# TOFU's Table 13 on the tofu-real world",
        f"World: {config.base or 'the packaged SmolLM2-135M'} fully fine-tuned on {config.n_people} fictitious people "
        f"({config.epochs} epochs, lr {config.learning_rate}), {config.eval_retain_people} retain people scored, "
        f"{config.n_heldout} held-out people (world build {world['build']}). Each split is its own `neumuter "
        "compare` run: "
        + "; ".join(f"{name}: {config.forget_count(split['percent'])} people, {split['forget_questions']} forget "
                    f"questions (log10 forget quality floor {split['log10_forget_quality_floor']:.2f}), "
                    f"{split['minutes']:.0f} min"
                    + (f", NeuMuter {split['neumuter']}" if split.get("neumuter") else "") for name, split in table.items())
        + ".",
        markdown_table(header, rows),
        "Model utility (TOFU) is the harmonic mean of the retain people's answer probability, ROUGE-L recall of the "
        "greedy answer, truth-ratio score, and the general-text perplexity of the pretrained base over the model's "
        "(capped at 1); forget quality is the KS-test p-value between the forget questions' truth ratios (Eq. 19) "
        "of the model and of the oracle, shown as log10 (0 = indistinguishable from the oracle; the oracle's own "
        "0 is by definition, as Table 13's Retrain row) as Table 13 does. "
        "With n forget questions the two-sample KS p-value cannot go below the floor given per split (the exact "
        "test at D = 1), so a value at the floor says \"fully distinguishable\", not how far. The forget truth-ratio score is TOFU's "
        "forget-set form, mean min(R, 1/R), where R is the perturbed answers' probability over the paraphrase's. "
        "`forgotten` is Eq. 17 (MA and EL10 of the biographies at or under the held-out people's); every "
        "fine-tuning method stops when 90% are, or at its budget (comparison.md of each run).",
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparisons", nargs="+", help="--out directories of neumuter compare --world tofu-real")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    check_writable(args.out, args.overwrite, {f"comparison {d}": d for d in args.comparisons})
    splits: dict[int, dict] = {}
    sources: dict[int, str] = {}
    for directory in args.comparisons:
        percent, summary = read_split(directory)
        if percent in splits:
            raise NeuMuterError(f"two runs of the forget{percent:02d} split: pass one per split")
        splits[percent], sources[percent] = summary, directory
    splits = dict(sorted(splits.items()))
    world = check_one_world(splits)
    table = {f"forget{p:02d}": {"percent": p, "source": sources[p], "minutes": s["seconds"] / 60,
                                "forget_questions": forget_questions(s),
                                "log10_forget_quality_floor": log10_quality_floor(forget_questions(s)),
                                "neumuter": neumuter_protocol(s), "models": models_of(s)} for p, s in splits.items()}
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "table13.json", {"world": world, "splits": table})
        (staging / "table13.md").write_text(report(table, world))
        plot_scatter_panels([(f"forget {split['percent']}%", "log10 forget quality (0 = the oracle)",
                              {label: (model["model_utility"], model["log10_forget_quality"])
                               for label, model in split["models"].items() if "error" not in model}, False)
                             for split in table.values()],
                            staging / "forget_quality.png", "model utility (higher = more kept)",
                            "Forget quality against model utility (cf. TOFU; Hou et al. 2025, Figure 5)")
    print(report(table, world))


if __name__ == "__main__":
    run_script(main)
