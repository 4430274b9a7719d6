"""Localization speed and memory: the official NeuMuter loop versus ours, side by side in one run.

The official code (SPHelixLab/NeuMuter; see shared notes/performance-anchor.md) masks the FFN output
projection's WEIGHT (a masked copy of the weight per layer per forward), keeps a deep copy of the
model as the KL reference, runs one sample per step and recomputes the reference every step. Ours
gates the activation through a pyvene intervention, uses the un-intervened model as the reference
(no copy), caches the reference log-probabilities, and batches forget + neighbour samples in one
forward. Both minimise the same loss (Eq. 13 as coded).

Data: the first 32 memorized Pile samples of the paper's forget set (200 GPT-Neo tokens each), random
replacement neighbours; GPT-Neo-shaped models with random weights (no weights can be downloaded here).

    python benchmarks/localization_step.py [--shape small|125m] [--samples 32] [--device cpu]

Writes benchmarks/results/localization_step.{json,md}. Compare the ratios, not the seconds: shared
machines are noisy.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

from neumuter_interv.data import batches, pad_id_of, read_texts
from neumuter_interv.hard_concrete import HardConcreteParams, l0_penalty, sample_gate
from neumuter_interv.methods.base import UnlearningRecord, measured
from neumuter_interv.methods.neumuter import NeuMuterConfig, localize
from neumuter_interv.methods.neumuter.localize import causal_lm_loss, kl_to_reference
from neumuter_interv.neighbours import random_replacement_neighbours
from neumuter_interv.report import markdown_table

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SHAPES = {
    "small": dict(hidden_size=64, num_layers=4, num_heads=4),  # the CPU comparison of the performance note
    "125m": dict(hidden_size=768, num_layers=12, num_heads=12),  # GPT-Neo 125M
}


class OfficialMaskedProjection(torch.nn.Module):
    """The official code's mask: the output projection's weight columns scaled by a fresh gate sample."""

    def __init__(self, projection: torch.nn.Linear, params: HardConcreteParams):
        super().__init__()
        self.projection, self.params = projection, params
        self.log_alpha = torch.nn.Parameter(torch.full((projection.in_features,), params.initial_log_alpha(),
                                                       device=projection.weight.device))

    def forward(self, x):
        mask = sample_gate(self.log_alpha, self.params)
        return F.linear(x, self.projection.weight * mask[None, :], self.projection.bias)


def official_epoch(model, forget, neighbours, pad_id, config: NeuMuterConfig) -> int:
    """One epoch of the official loop: batch 1, deep-copied reference recomputed every step."""
    reference = copy.deepcopy(model).eval()
    params = config.hard_concrete
    masks = []
    for block in model.transformer.h:
        block.mlp.c_proj = OfficialMaskedProjection(block.mlp.c_proj, params)
        masks.append(block.mlp.c_proj.log_alpha)
    for p in model.parameters():
        p.requires_grad_(False)
    for m in masks:
        m.requires_grad_(True)
    optimizer = torch.optim.Adam(masks, lr=config.learning_rate)
    steps = 0
    device = next(model.parameters()).device
    for forget_batch, neighbour_batch in zip(batches(forget, 1, pad_id), batches(neighbours, 1, pad_id)):
        forget_batch, neighbour_batch = forget_batch.to(device), neighbour_batch.to(device)
        optimizer.zero_grad()
        forget_ce = causal_lm_loss(model(input_ids=forget_batch.input_ids).logits, forget_batch.labels)
        with torch.no_grad():
            ref = F.log_softmax(reference(input_ids=neighbour_batch.input_ids).logits.float(), -1)
        kl = kl_to_reference(model(input_ids=neighbour_batch.input_ids).logits, ref, neighbour_batch.attention_mask)
        l0 = torch.stack([l0_penalty(m, params) for m in masks]).mean()
        c = -1.0 if forget_ce.item() <= config.stop_loss else 5.0
        (c * forget_ce + config.sparsity_weight * l0 + config.kl_weight * kl).backward()
        optimizer.step()
        steps += 1
    return steps


def make_model(shape: str, vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPTNeoConfig(vocab_size=vocab, max_position_embeddings=2048,
                                       attention_types=[[["global", "local"], SHAPES[shape]["num_layers"] // 2]],
                                       **SHAPES[shape])
    return transformers.GPTNeoForCausalLM(config).eval()


def measure(name, fn, device) -> dict:
    record = UnlearningRecord(method=name)
    with measured(record, device):
        steps = fn()
    return {"variant": name, "seconds": record.seconds, "steps": steps, "peak_memory_bytes": record.peak_memory_bytes,
            "memory_kind": record.memory_kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()
    tokenizer = transformers.AutoTokenizer.from_pretrained(SHARED / "gpt2-tokenizer")
    texts = read_texts(SHARED / "knowledge-unlearning" / "main" / "lm_extraction_128_0.csv")[: args.samples]
    forget = [tokenizer(t)["input_ids"][:200] for t in texts]
    neighbours = [n for group in random_replacement_neighbours(forget, len(tokenizer), 0.5, 1, 0, tokenizer.all_special_ids)
                  for n in group]
    pad = pad_id_of(tokenizer)
    device = torch.device(args.device)
    config = NeuMuterConfig(epochs=1, progress=False, device=str(device))

    def official():
        return official_epoch(make_model(args.shape, len(tokenizer)).to(device), [torch.tensor(f).tolist() for f in forget],
                              neighbours, pad, config)

    def ours(batch_size, dtype="float32", reference_cache_bytes=NeuMuterConfig.reference_cache_bytes):
        def run():
            cfg = NeuMuterConfig(epochs=1, progress=False, device=str(device), batch_size=batch_size, dtype=dtype,
                                 reference_cache_bytes=reference_cache_bytes)
            _, result = localize(make_model(args.shape, len(tokenizer)), forget, neighbours, cfg, pad, log=lambda s: None)
            return result.steps
        return run

    variants = [("official (batch 1, weight mask, model copy)", official),
                ("ours, batch 1", ours(1)), ("ours, batch 1, no reference cache", ours(1, reference_cache_bytes=0)),
                ("ours, batch 8", ours(8)), ("ours, batch 8, no reference cache", ours(8, reference_cache_bytes=0)),
                ("ours, batch 32", ours(32))]
    if device.type == "cuda":
        variants.append(("ours, batch 32, bf16 autocast", ours(32, "bfloat16")))
    rows = []
    for name, fn in variants:
        fn_result = measure(name, fn, device)
        fn_result["seconds_per_sample"] = fn_result["seconds"] / len(forget)
        rows.append(fn_result)
        print(f"{name}: {fn_result['seconds']:.2f} s for {len(forget)} samples, peak {fn_result['peak_memory_bytes'] / 2**20:.0f} MiB")
    official_row = rows[0]
    for row in rows:
        row["speedup_vs_official"] = official_row["seconds"] / row["seconds"]
        row["memory_ratio_vs_official"] = row["peak_memory_bytes"] / max(official_row["peak_memory_bytes"], 1)
    meta = {"shape": args.shape, "samples": len(forget), "tokens_per_sample": 200, "device": str(device),
            "torch": torch.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
            "threads": torch.get_num_threads()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"localization_step_{args.shape}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = markdown_table(
        ["variant", "s / epoch", "s / sample", "speed-up", f"peak memory (MiB, {rows[0]['memory_kind']})", "memory ratio"],
        [[r["variant"], r["seconds"], r["seconds_per_sample"], r["speedup_vs_official"],
          r["peak_memory_bytes"] / 2**20, r["memory_ratio_vs_official"]] for r in rows])
    (out / f"localization_step_{args.shape}.md").write_text(
        f"# Localization epoch: official loop vs ours ({args.shape}, {len(forget)} x 200 tokens, {device})\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
