"""Do the forget people get neurons of their own? The separability study of issues 3 and 15 over worlds of people.

NeuMuter (Hou et al., 2025) assumes that a few FFN neurons hold the forget samples' memory specifically;
TOFU (Maini et al., 2024) that forget and retain authors can be unlearned apart. For each world variant
(a small base world with one setting changed: FFN width, depth, share of general text, templated vs
unique biographies, memorization depth, TOFU's pretrain-then-inject) and for the TOFU-style world on the
real SmolLM2-135M (``tofu-smollm2``: fine-tuned on 60 fictitious people, forget10's 6 people forgotten), this
recipe measures:

- before unlearning: the per-neuron forget/retain attribution(-share) ratio on the original model
  (``methods.attribution.attribution_ratio``), next to a null ratio between two halves of the retain people,
  i.e. what the ratio looks like when no neuron can be specific;
- after one NeuMuter run with the same fixed setting in every world (no schedule, so the worlds are
  compared at equal effort): which masks forget whom. The trained gates are read out twice: by the
  official threshold rule (its muted share varies) and as the ``BUDGET`` share of neurons with the
  lowest gates (equal mask size in every world). Two attribution masks of the same size put this in
  context: the neurons with the highest forget attribution (like NeuMuter, no retain data) and those
  with the highest forget/retain ratio (uses the retain people: if forget-specific neurons exist and
  matter, this mask forgets the forget people more than the retain people). For each mask: forget and
  retain MA drops, their ratio (``separability.specificity``), the held-out PPL change, the forgotten
  share (Eq. 17), and the drops of the two retain halves (how far groups of people differ by chance).

    OMP_NUM_THREADS=1 python recipes/separability_study.py --out results/separability/ [--variants base,inject]
        [--keep results/separability/separability.json]

``--keep`` reports the variants of an earlier run next to the new ones without running them again (the new
report goes to a new directory: an output never replaces the results it reads). The
``pile-documents`` variant reads the paper's forget samples from ``../shared/data``. Each testbed world builds in about one to three minutes on 2 shared CPU cores (one torch thread: two threads
on two busy cores are many times slower) and is cached; ``tofu-smollm2`` reuses the cache of
``neumuter compare --world tofu-real --forget-percent 10`` (cold: the model and the forget10 oracle, about 40-55 minutes of fine-tuning on 2 cores).
Writes ``separability.json``, ``separability.md`` and ``specificity.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from neumuter_interv.errors import run_script
from neumuter_interv.methods.attribution import attribution_ratio, neuron_attribution, top_fraction_selection
from neumuter_interv.methods.neumuter import NeuMuter, NeuMuterConfig
from neumuter_interv.methods.neumuter.selection import freeze, select_neurons
from neumuter_interv.metrics import memorization_accuracy
from neumuter_interv.output import check_writable, output_directory, read_kept_results, write_json
from neumuter_interv.report import markdown_table, plot_grouped_bars
from neumuter_interv.separability import specificity
from neumuter_interv.testbed import TestbedConfig
from neumuter_interv.worlds import (
    TofuWorldConfig,
    World,
    prepare_people_world,
    prepare_tofu_world,
    public_scores,
)

PILE_DOCUMENTS = (Path(__file__).resolve().parents[2] / "shared" / "data" / "knowledge-unlearning" / "main"
                  / "lm_extraction_128_0.csv")
BASE = TestbedConfig.tiny(n_forget=16, n_retain=32, n_heldout=16)  # 2 x 64, FFN 256, 8 epochs x 10 repeats
VARIANTS = {
    "base": {},
    "wide-ffn": {"ffn_size": 1024},
    "deeper": {"n_layers": 4},
    "general-0.1": {"general_share": 0.1},
    "general-0.6": {"general_share": 0.6},
    "unique-bios": {"bio_style": "unique", "max_seq_len": 512},  # 180-250 tokens: 128 would cut them
    "epochs-x2": {"epochs": 16},
    "inject": {"inject_epochs": 8},  # TOFU: pretrain without the forget people, then fine-tune them in
    # The paper's own kind of forget content: memorized Pile samples (code, licences, web text) instead of
    # people, split 16 / 32 / 16 like the people; up to ~560 tokens each with the 1,000-token vocabulary.
    "pile-documents": {"documents": str(PILE_DOCUMENTS), "max_seq_len": 640},
    # The base model memorizes them only shallowly (MA 0.23 vs 0.15 unseen): the default model size, 16 epochs.
    "pile-documents-4x128": {"documents": str(PILE_DOCUMENTS), "max_seq_len": 640, "hidden_size": 128,
                             "n_layers": 4, "n_heads": 4, "ffn_size": 512, "epochs": 16},
    # Issue 15: not the tiny base but the TOFU-style world on the pretrained SmolLM2-135M (TofuWorldConfig's
    # defaults: 60 people, unique biographies, 8 epochs), forget10 split; the other keys are TofuWorldConfig's.
    "tofu-smollm2": {"world": "tofu-real", "forget_percent": 10},
}
# Sparsity 0 and KL 0.2 with 120 steps: past the point where gates move on the base world (with the
# official L0 pull, or 60 steps, no gate moves; see the testbed findings), so the gates rank neurons.
NEUMUTER = dict(batch_size=4, epochs=30, kl_weight=0.2, sparsity_weight=0.0, progress=False)
BUDGET = 0.05  # share of all FFN neurons muted by the equal-size masks
EL_PREFIX_STRIDE = 8  # EL10 over every 8th prefix: exact EL10 is O(T^2) greedy decoding


def prepare_variant(name: str, overrides: dict) -> tuple[World, dict]:
    """The variant's world (a testbed world: ``BASE`` with ``overrides``; or, with ``"world": "tofu-real"``,
    the TOFU-style world) and what the results record about how it was built."""
    settings = dict(overrides)
    log = lambda message: print(f"  [{name}] {message}", flush=True)  # noqa: E731
    if settings.pop("world", "people") == "tofu-real":
        world = prepare_tofu_world(TofuWorldConfig(**settings), progress=False, log=log)
        trained = [json.loads((path / "training.json").read_text()) for path in (world.model_dir, world.oracle_dir())]
        return world, {"tofu": asdict(world.config), "cache_key": world.root.name,
                       "build_seconds": sum(record["seconds"] for record in trained)}
    world = prepare_people_world(BASE.with_(**settings), el_prefix_stride=EL_PREFIX_STRIDE, progress=False, log=log)
    return world, {"testbed": asdict(world.testbed.config), "cache_key": world.testbed.config.cache_key(),
                   "build_seconds": world.testbed.manifest["build_seconds"]}


def study_variant(name: str, overrides: dict) -> dict:
    start = time.perf_counter()
    world, built = prepare_variant(name, overrides)
    tokenizer, model = world.tokenizer, world.load_model()
    forget, retain = world.forget_texts, list(world.data.retain_texts)  # the scored retain people's biographies
    forget_attr = neuron_attribution(model, tokenizer, forget)
    ratio = attribution_ratio(forget_attr, neuron_attribution(model, tokenizer, retain))
    halves = (retain[:len(retain) // 2], retain[len(retain) // 2:])
    null = attribution_ratio(*(neuron_attribution(model, tokenizer, texts) for texts in halves))

    def halves_ma(lm) -> list[float]:
        return [float(memorization_accuracy(lm, tokenizer, texts, batch_size=32).mean()) for texts in halves]

    halves_before = halves_ma(model)
    config = NeuMuterConfig(**NEUMUTER)
    run = NeuMuter(config, log=lambda message: None).run(model, tokenizer, forget, world.neighbours(forget, 1, 1.0, 0))
    selections = {
        "neumuter_threshold": run.selection,
        "neumuter_budget": select_neurons(model, run.localization.log_alpha, run.localization.params,
                                          replace(config, selection="fraction", fraction=BUDGET)),
        "forget_attribution_budget": top_fraction_selection(model, forget_attr, BUDGET),
        "ratio_budget": top_fraction_selection(model, ratio.per_layer, BUDGET),
    }
    masks = {}
    for mask, selection in selections.items():
        if selection.neurons_muted:
            masked = freeze(world.load_model(), selection)
            after, halves_after = world.evaluate(masked), halves_ma(masked)
        else:
            after, halves_after = world.original, halves_before
        ratios = sorted(float(ratio.per_layer[layer][index]) for layer, neurons in selection.layers.items()
                        for index in neurons.indices)
        masks[mask] = {**specificity(world.original, after), "neurons_muted_fraction": selection.neurons_muted_fraction,
                       "forgotten_fraction": after["forgotten_fraction"], "after": public_scores(after),
                       "retain_half_drops": [b - a for a, b in zip(halves_after, halves_before)],
                       "median_attribution_ratio": ratios[len(ratios) // 2] if ratios else None}
    return {
        "overrides": overrides,
        **built,
        "unseen_ma": world.thresholds["ma"],  # Eq. 17's MA threshold: the original model on unseen people
        "before": public_scores(world.original),
        "oracle": public_scores(world.oracle),
        "oracle_specificity": specificity(world.original, world.oracle),
        "attribution_ratio": ratio.summary(),
        "null_attribution_ratio": null.summary(),
        "masks": masks,
        "seconds": round(time.perf_counter() - start, 1),
    }


MASK_LABELS = {"neumuter_budget": f"NeuMuter {BUDGET:.0%}", "forget_attribution_budget": f"forget attribution {BUDGET:.0%}",
               "ratio_budget": f"forget/retain ratio {BUDGET:.0%}"}


def _drops(mask: dict) -> str:
    return f"{mask['forget_ma_drop']:.3f} / {mask['retain_ma_drop']:.3f} ({mask['specificity']:.2f})"


def report(results: dict) -> str:
    rows = []
    for name, r in results.items():
        before, oracle, masks = r["before"], r["oracle"], r["masks"]
        threshold = masks["neumuter_threshold"]
        rows.append([
            name, ", ".join(f"{key}={Path(value).name if key == 'documents' else value}"
                            for key, value in r["overrides"].items()) or "base",
            f"{before['forget_ma']:.3f} / {before['retain_ma']:.3f} / {r['unseen_ma']:.3f}",
            f"{oracle['forget_ma']:.3f} / {oracle['retain_ma']:.3f}",
            f"{100 * threshold['neurons_muted_fraction']:.1f}%: {_drops(threshold)}",
            *(_drops(masks[mask]) for mask in MASK_LABELS),
            "{:.3f} / {:.3f}".format(*masks["neumuter_budget"]["retain_half_drops"]),
            f"{100 * masks['neumuter_budget']['heldout_ppl_change']:+.1f}%",
            f"{r['attribution_ratio']['q99.9']:.2f} / {r['attribution_ratio']['max']:.2f}",
            f"{r['null_attribution_ratio']['q99.9']:.2f} / {r['null_attribution_ratio']['max']:.2f}",
        ])
    header = ["variant", "settings", "MA before: forget / retain / unseen", "oracle MA: forget / retain",
              "NeuMuter threshold rule: muted, drops", *MASK_LABELS.values(),
              f"NeuMuter {BUDGET:.0%}: drops of the two retain halves", f"PPL change, NeuMuter {BUDGET:.0%}",
              "attribution ratio q99.9 / max", "null ratio q99.9 / max"]
    base = ", ".join(f"{key}={value}" for key, value in asdict(BASE).items()
                     if key in ("n_forget", "n_retain", "n_layers", "hidden_size", "ffn_size", "epochs", "repeats",
                                "general_share", "bio_style"))
    neumuter = ", ".join(f"{key}={value}" for key, value in NEUMUTER.items() if key != "progress")
    return "\n\n".join([
        "# Separability study: are there forget-specific neurons?",
        f"Base world of the testbed variants: {base}. The tofu-smollm2 row is the TOFU-style world instead (the "
        "pretrained SmolLM2-135M fully fine-tuned on 60 fictitious people, forget10 split: 6 forget people, 12 "
        "scored retain people, 12 held-out people; its oracle is fine-tuned without the forget people). One "
        f"NeuMuter training setting for every world: {neumuter}, the world's neighbours (k=1, r=1: MLM-written "
        "in the testbed worlds, the model's own in tofu-smollm2), no schedule. "
        f"{sum(r['seconds'] for r in results.values()) / 60:.1f} minutes in all, plus "
        f"{sum(r['build_seconds'] for r in results.values()) / 60:.1f} minutes of world builds (cached).",
        markdown_table(header, rows),
        "Mask cells: forget MA drop / retain MA drop (specificity), drops absolute (before - after); specificity = "
        "forget drop / retain drop, retain drops under 0.01 counting as 0.01; 1 means both sets were forgotten "
        f"alike. The {BUDGET:.0%} masks mute the same share of all FFN neurons in every world: NeuMuter's lowest "
        "trained gates; the highest forget attribution |activation x gradient| (no retain data, like NeuMuter); "
        "the highest forget/retain attribution ratio (uses the retain people). Attribution ratio: per neuron, "
        "its share of the forget people's total attribution over its share of the retain people's (original "
        "model); the null ratio compares two halves of the retain "
        "people, where no neuron can be specific by design; likewise the drops of the two retain halves show how "
        "far two groups of people the mask was not trained on can differ by chance. The oracle is the model retrained without the forget "
        "people: how far forgetting can go while keeping the retain people. In the pile-documents world the "
        "\"people\" are the paper's memorized Pile samples (knowledge-unlearning lm_extraction_128_0.csv) in "
        "the same numbers.",
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--keep", help="separability.json of an earlier run: its variants are reported too, "
                                       "not run again (a variant named in --variants is run again)")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    check_writable(args.out, args.overwrite, {"--keep": args.keep})  # never replace the results it reads
    results = read_kept_results(args.keep, "variants")
    for number, name in enumerate(names, start=1):
        print(f"[{number}/{len(names)}] {name}: {VARIANTS[name] or 'base world'}", flush=True)
        results[name] = result = study_variant(name, VARIANTS[name])
        masks = result["masks"]
        print(f"  [{name}] forget / retain MA drop (specificity): threshold rule "
              f"({100 * masks['neumuter_threshold']['neurons_muted_fraction']:.1f}% muted) "
              f"{_drops(masks['neumuter_threshold'])}; "
              + "; ".join(f"{label} {_drops(masks[mask])}" for mask, label in MASK_LABELS.items())
              + f"; attribution ratio q99.9 {result['attribution_ratio']['q99.9']:.2f} "
              f"(null {result['null_attribution_ratio']['q99.9']:.2f}); {result['seconds']:.0f} s", flush=True)
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "separability.json", {
            "base": asdict(BASE), "neumuter": NEUMUTER, "budget": BUDGET, "el_prefix_stride": EL_PREFIX_STRIDE,
            "seconds": round(sum(r["seconds"] for r in results.values()), 1), "variants": results})
        (staging / "separability.md").write_text(report(results))
        plot_grouped_bars({name: {label: r["masks"][mask]["specificity"] for mask, label in MASK_LABELS.items()}
                           for name, r in results.items()},
                          staging / "specificity.png", "forget MA drop / retain MA drop",
                          f"Specificity of {BUDGET:.0%} masks per world (1 = no separation)", line=1.0)
    print(report(results))


if __name__ == "__main__":
    run_script(main)
