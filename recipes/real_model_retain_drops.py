"""Which retain-memorized windows does the demo's mask take down with the MIT licence? (README, "Where it
stands")

Loads the demo's saved run, scores each retain-memorized window's MA before and after, and sets the drop
beside the share of the window's token 4-grams that also occur in the forget windows.

    python recipes/real_model_retain_drops.py --run results/demo-smollm2/run --out results/demo-smollm2-retain-drops
"""

from __future__ import annotations

import argparse

import numpy as np

from neumuter_interv import intervenable, metrics
from neumuter_interv.errors import run_script
from neumuter_interv.output import output_directory, write_json
from neumuter_interv.report import markdown_table
from neumuter_interv.worlds import prepare_real_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="results/demo-smollm2/run")
    parser.add_argument("--out", required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    world = prepare_real_world(progress=False, log=lambda message: None)
    tokenizer = world.tokenizer
    frozen = intervenable.load(f"{args.run}/intervention", world.load_model())
    retain = world.groups["retain_memorized"]
    texts = [record["text"] for record in retain]
    before = metrics.memorization_accuracy(world.load_model(), tokenizer, texts).tolist()
    after = metrics.memorization_accuracy(frozen, tokenizer, texts).tolist()

    def grams(text: str) -> set:
        return set(metrics.ngrams(tokenizer(text, add_special_tokens=False)["input_ids"], 4))

    forget_grams = set().union(*(grams(text) for text in world.forget_texts))
    rows = sorted(({"source": record["source"], "text": record["text"][:60], "ma_before": b, "ma_after": a,
                    "drop": b - a, "shared_4grams": len(grams(record["text"]) & forget_grams) / len(grams(record["text"]))}
                   for record, b, a in zip(retain, before, after)), key=lambda row: -row["drop"])
    drops, shares = np.array([r["drop"] for r in rows]), np.array([r["shared_4grams"] for r in rows])
    summary = {"windows": len(rows), "mean_drop": float(drops.mean()),
               "correlation_drop_shared_4grams": float(np.corrcoef(drops, shares)[0, 1]), "rows": rows}
    table = markdown_table(["drop", "MA before", "after", "shared 4-grams", "source", "text"],
                           [[f"{r['drop']:.3f}", f"{r['ma_before']:.3f}", f"{r['ma_after']:.3f}",
                             f"{r['shared_4grams']:.2f}", f"`{r['source'].split('site-packages/')[-1]}`",
                             " ".join(r["text"].split()).replace("|", "\\|")] for r in rows])
    with output_directory(args.out, args.overwrite) as staging:
        write_json(staging / "retain_drops.json", summary)
        (staging / "retain_drops.md").write_text(
            f"# Retain-memorized windows under the demo's mask\n\nMean MA drop {summary['mean_drop']:.3f}; "
            f"correlation of the drop with the share of 4-grams shared with the forget windows: "
            f"{summary['correlation_drop_shared_4grams']:.2f}.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    run_script(main)
