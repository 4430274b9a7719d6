"""EL_n (Eq. 16): ours (every prefix of every sample decoded together, left-padded batches with the KV cache)
against the reference definition (knowledge-unlearning's ``validation_el``: one ``generate`` call per
prefix), side by side in one process, with the values compared sample by sample.

    python benchmarks/extraction_likelihood.py                       # GPT-Neo small shape, 32 x 200 tokens
    python benchmarks/extraction_likelihood.py --model smollm2 --samples 8 --tokens 128

GPT-Neo shapes have random weights (their greedy continuations are as deterministic as a trained model's);
``smollm2`` is the packaged SmolLM2-135M on its memorized MIT-licence windows. ``--prefix-stride k`` scores
every k-th prefix in BOTH implementations (the reference at stride 1 costs T - n ``generate`` calls per
sample). Writes ``benchmarks/results/extraction_likelihood_<model>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import transformers

from neumuter_interv import metrics
from neumuter_interv.data import read_texts
from neumuter_interv.lm import resolve_device

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SHAPES = {"small": dict(hidden_size=64, num_layers=4, num_heads=4), "125m": dict(hidden_size=768, num_layers=12, num_heads=12)}


@torch.no_grad()
def reference_el(model, sequences: list[list[int]], n: int, prefix_stride: int, device) -> list[float]:
    """knowledge-unlearning's definition: for each prefix x_<t, ``generate`` greedily up to length T, one call
    per prefix, and average Overlap_n against the true suffix."""
    values = []
    for sequence in sequences:
        total, count = 0.0, 0
        for t in range(1, len(sequence) - n + 1, prefix_stride):
            prompt = torch.tensor([sequence[:t]], device=device)
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_length=len(sequence),
                                 min_length=len(sequence), do_sample=False, pad_token_id=0)
            total += metrics.ngram_overlap(out[0, t:].tolist(), sequence[t:], n)
            count += 1
        values.append(total / count)
    return values


def problem(args, device):
    if args.model == "smollm2":
        from neumuter_interv.worlds import prepare_real_world

        world = prepare_real_world(progress=False, log=lambda s: None, device=str(device))
        tokenizer, model = world.tokenizer, world.load_model()
        sequences = [tokenizer(t, add_special_tokens=False)["input_ids"][:args.tokens] for t in world.forget_texts]
        return model.eval().to(device), sequences[:args.samples]
    tokenizer = transformers.AutoTokenizer.from_pretrained(SHARED / "gpt2-tokenizer")
    texts = read_texts(SHARED / "knowledge-unlearning" / "main" / "lm_extraction_128_0.csv")[:args.samples]
    torch.manual_seed(0)
    config = transformers.GPTNeoConfig(vocab_size=len(tokenizer), max_position_embeddings=2048,
                                       attention_types=[[["global", "local"], SHAPES[args.model]["num_layers"] // 2]],
                                       **SHAPES[args.model])
    model = transformers.GPTNeoForCausalLM(config).eval().to(device)
    return model, [tokenizer(t)["input_ids"][:args.tokens] for t in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["small", "125m", "smollm2"], default="small")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--prefix-stride", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    model, sequences = problem(args, device)
    prefixes = sum(len(range(1, len(s) - args.n + 1, args.prefix_stride)) for s in sequences)
    print(f"{args.model}: {len(sequences)} samples of {max(map(len, sequences))} tokens, {prefixes} prefixes", flush=True)

    start = time.perf_counter()
    ours = metrics.extraction_likelihood(model, None, sequences, args.n, batch_size=args.batch_size,
                                         prefix_stride=args.prefix_stride).tolist()
    ours_seconds = time.perf_counter() - start
    print(f"ours: {ours_seconds:.1f} s", flush=True)
    start = time.perf_counter()
    reference = reference_el(model, sequences, args.n, args.prefix_stride, device)
    reference_seconds = time.perf_counter() - start
    print(f"reference: {reference_seconds:.1f} s", flush=True)

    reference = torch.tensor(reference).float().tolist()  # ours is float32: compare at its precision
    differences = [abs(a - b) for a, b in zip(ours, reference)]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    result = {
        "meta": {"model": args.model, "samples": len(sequences), "tokens": max(map(len, sequences)), "n": args.n,
                 "prefix_stride": args.prefix_stride, "prefixes": prefixes, "batch_size": args.batch_size,
                 "device": device_name, "threads": torch.get_num_threads(), "torch": torch.__version__,
                 "command": "python benchmarks/extraction_likelihood.py " + " ".join(sys.argv[1:])},
        "ours_seconds": ours_seconds, "reference_seconds": reference_seconds,
        "speedup": reference_seconds / ours_seconds,
        "identical_samples": sum(d == 0 for d in differences), "max_difference": max(differences),
        "ours": ours, "reference": reference,
    }
    meta = result["meta"]
    text = (f"# EL{args.n}: batched with the KV cache vs one generate call per prefix ({args.model}, {len(sequences)} x "
            f"{meta['tokens']} tokens, every {args.prefix_stride}th prefix: {prefixes} prefixes; {device_name}, "
            f"{meta['threads']} threads)\n\n`{meta['command']}`\n\n"
            f"| implementation | seconds | speed-up |\n|---|---|---|\n"
            f"| reference (one generate per prefix) | {reference_seconds:.1f} | 1 |\n"
            f"| ours (batched, KV cache) | {ours_seconds:.1f} | {result['speedup']:.1f}x |\n\n"
            f"Values: {result['identical_samples']} of {len(sequences)} samples identical; largest difference "
            f"{result['max_difference']:.2e} (mean EL{args.n}: ours {sum(ours) / len(ours):.4f}, reference "
            f"{sum(reference) / len(reference):.4f}).\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"extraction_likelihood_{args.model}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"extraction_likelihood_{args.model}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
