"""Greedy generation latency of the base model, the frozen pyvene intervention and the merged checkpoint.

All variants run in ONE process on the same randomly initialised GPT-Neo, interleaved (the order
rotates every repeat, so drift from other load on the machine hits every variant alike); the
median of the repeats is reported with its ratio to the base model. The merged variant is the real
``neumuter export --to merged`` artefact, reloaded with ``from_pretrained``.

    .venv/bin/python benchmarks/generation_latency.py [--repeats 7] [--new-tokens 64] [--large]

Writes benchmarks/results/generation_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models

from neumuter_interv.export import ExportJob, write_export
from neumuter_interv.intervenable import intervened_generate
from neumuter_interv.methods.neumuter import NeuronSet, Selection, freeze

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = {  # name: (layers, hidden, FFN width, heads)
    "gpt-neo-4x256": (4, 256, 1024, 4),
    "gpt-neo-12x768 (125M-shaped)": (12, 768, 3072, 12),
}
VOCAB = 2048
PROMPT_TOKENS = 16
MUTED_FRACTION = 0.01


def build_model(layers: int, hidden: int, ffn: int, heads: int, device: str) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    config = transformers.GPTNeoConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, num_heads=heads, intermediate_size=ffn,
        attention_types=[[["global", "local"], layers // 2]], max_position_embeddings=256, window_size=128,
        pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )
    return transformers.GPTNeoForCausalLM(config).to(device).eval()


def random_mask(model) -> Selection:
    """1% of every layer's FFN neurons muted to scales in [0, 0.1), as a NeuMuter run would."""
    generator = torch.Generator().manual_seed(0)
    width, layers = model.config.intermediate_size, model.config.num_layers
    count = max(1, int(MUTED_FRACTION * width))
    return Selection({layer: NeuronSet(sorted(torch.randperm(width, generator=generator)[:count].tolist()),
                                       (torch.rand(count, generator=generator) * 0.1).tolist())
                      for layer in range(layers)}, width, layers, "gpt_neo")


def placeholder_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """The merged export saves a tokenizer next to the weights; generation here uses token ids only."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                                pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def seconds(run, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def generation_calls(model, frozen, merged, prompt: torch.Tensor, greedy: dict) -> dict:
    """One zero-argument call per variant, all on the same prompt."""
    attention = torch.ones_like(prompt)
    return {
        "base": lambda: model.generate(input_ids=prompt, attention_mask=attention, **greedy),
        "frozen pyvene": lambda: intervened_generate(frozen, prompt, attention, **greedy),
        "merged": lambda: merged.generate(input_ids=prompt, attention_mask=attention, **greedy),
    }


def measure_shape(name: str, shape: tuple[int, int, int, int], device: str, batch_sizes: list[int],
                  new_tokens: int, repeats: int) -> list[dict]:
    model = build_model(*shape, device)
    mask = random_mask(model)
    with tempfile.TemporaryDirectory() as scratch:
        write_export(ExportJob(model, placeholder_tokenizer(), mask, name), "merged", Path(scratch) / "merged",
                     runs=[], location="(benchmark)")
        merged = transformers.AutoModelForCausalLM.from_pretrained(Path(scratch) / "merged").to(device).eval()
    frozen = freeze(model, mask)
    greedy = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    rows = []
    for batch in batch_sizes:
        prompt = torch.randint(3, VOCAB, (batch, PROMPT_TOKENS), generator=torch.Generator().manual_seed(batch)).to(device)
        variants = generation_calls(model, frozen, merged, prompt, greedy)
        times: dict[str, list[float]] = {variant: [] for variant in variants}
        with torch.no_grad():
            for run in variants.values():  # warm-up
                run()
            for repeat in range(repeats):
                order = list(variants)[repeat % len(variants):] + list(variants)[:repeat % len(variants)]
                for variant in order:
                    times[variant].append(seconds(variants[variant], device))
        base = statistics.median(times["base"])
        for variant, samples in times.items():
            median = statistics.median(samples)
            rows.append({"model": name, "batch": batch, "variant": variant, "median_s": median,
                         "ms_per_token": 1000 * median / new_tokens, "ratio_vs_base": median / base,
                         "samples_s": samples})
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Greedy generation latency: base vs frozen pyvene intervention vs merged checkpoint",
        "",
        f"{meta['new_tokens']} new tokens after a {PROMPT_TOKENS}-token prompt, median of {meta['repeats']} "
        f"interleaved repeats; {meta['device']} ({meta['torch_threads']} torch threads, {meta['platform']}). "
        f"Mask: {MUTED_FRACTION:.0%} of the FFN neurons of every layer.",
        "",
        "| model | batch | variant | median s | ms/token | vs base |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['batch']} | {r['variant']} | {r['median_s']:.3f} | {r['ms_per_token']:.2f} "
              f"| {r['ratio_vs_base']:.2f}x |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--large", action="store_true", help="also the 125M-shaped model (meant for a GPU)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = SHAPES if args.large else dict(list(SHAPES.items())[:1])
    rows = [row for name, shape in shapes.items()
            for row in measure_shape(name, shape, device, args.batch_sizes, args.new_tokens, args.repeats)]
    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})",
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(terse=True),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "new_tokens": args.new_tokens, "repeats": args.repeats}
    table = markdown(rows, meta)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generation_latency.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "generation_latency.md").write_text(table)


if __name__ == "__main__":
    main()
