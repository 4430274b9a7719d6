"""``neumuter unlearn``: localize, select and freeze on a model and a forget file; write a run directory."""

from __future__ import annotations

import os
from pathlib import Path

from .. import distributed
from ..architectures import describe_layers, num_layers, parse_layers
from ..data import read_texts, texts_sha256
from ..lm import resolve_device
from ..loading import load_causal_lm, model_fingerprint
from ..methods.neumuter import NeuMuter, NeuMuterConfig
from ..output import check_writable
from ..validation import check_number


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "unlearn", help="unlearn a forget set with NeuMuter and save the frozen intervention",
        description="Layers are 0-based: the paper's blocks 2-8 are --layers 1-7; '1-' is the official start_mask_layer=1.",
    )
    parser.add_argument("--model", required=True, help="local directory or Hub id of a causal LM")
    parser.add_argument("--gguf-file", help="a GGUF file inside --model to load (dequantized)")
    parser.add_argument("--forget", required=True, help=".txt (one sample per line), .jsonl or .csv with a 'text' column")
    parser.add_argument("--neighbours", help="k neighbour texts per forget sample, sample-major (same formats); "
                                             "without it the model writes its own (--neighbour-source)")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--column", default="text", help="text column of .csv/.jsonl files")
    defaults = NeuMuterConfig()
    parser.add_argument("--layers", default="all", help="'all', '3', '1-7', '10-16,21', '1-' (0-based)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--stop-loss", type=float, default=defaults.stop_loss)
    parser.add_argument("--sparsity-weight", type=float, default=defaults.sparsity_weight)
    parser.add_argument("--kl-weight", type=float, default=defaults.kl_weight)
    parser.add_argument("--selection", default=defaults.selection, choices=["threshold", "energy", "top_k", "fraction"])
    parser.add_argument("--threshold", type=float, default=defaults.threshold)
    parser.add_argument("--energy", type=float, default=defaults.energy)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--fraction", type=float)
    parser.add_argument("--neighbour-source", default=defaults.neighbour_source, choices=["self", "random"],
                        help="self: the model rewrites a share of the forget tokens from its top-k (default); "
                             "random: random tokens")
    parser.add_argument("--replacement-ratio", type=float, default=defaults.replacement_ratio)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--dtype", default=defaults.dtype, choices=["float32", "bfloat16", "float16", "auto"])
    parser.add_argument("--num-processes", type=int, default=1,
                        help="data-parallel localization over N processes on this machine (gloo on CPUs, NCCL on "
                             "GPUs: one GPU each); torchrun and accelerate launch work too")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    check_number("--num-processes", args.num_processes, minimum=1, integer=True)
    config = NeuMuterConfig(
        layers=args.layers, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        stop_loss=args.stop_loss, sparsity_weight=args.sparsity_weight, kl_weight=args.kl_weight,
        selection=args.selection, threshold=args.threshold, energy=args.energy, top_k=args.top_k,
        fraction=args.fraction, neighbour_source=args.neighbour_source,
        replacement_ratio=args.replacement_ratio, seed=args.seed, device=args.device, dtype=args.dtype, progress=not args.no_progress,
    )
    out = check_writable(args.out, args.overwrite, {"--model": args.model, "--forget": args.forget,
                                                    "--neighbours": args.neighbours})
    forget = read_texts(args.forget, args.column)
    neighbours = read_texts(args.neighbours, args.column, "neighbour") if args.neighbours else None
    launched = distributed.launched()  # a stray WORLD_SIZE is refused here
    model, tokenizer = load_causal_lm(args.model, gguf_file=args.gguf_file)  # before a launch: fail once
    layers = parse_layers(config.layers, num_layers(model))
    if args.num_processes > 1 and not launched:
        del model
        return distributed.launch(args.num_processes, _without_num_processes(args.argv))
    distributed.init_from_environment(resolve_device(config.device))
    main_process = distributed.is_main_process()
    config.progress = config.progress and main_process
    log = print if main_process else (lambda message: None)
    log(f"forget set: {len(forget)} samples from {args.forget}; layers {describe_layers(layers)}")
    fingerprint = model_fingerprint(model) if main_process else None  # before the run moves it to a device
    result = NeuMuter(config, log=log).run(model, tokenizer, forget, neighbours)
    if not main_process:
        return 0
    run_info = {
        # a local model by its absolute path (the run may be exported from anywhere), a Hub id as given
        "model": str(Path(args.model).resolve()) if os.path.lexists(args.model) else args.model,
        "model_fingerprint": fingerprint,
        "forget_file": str(Path(args.forget)),
        "forget_samples": len(forget),
        "forget_sha256": texts_sha256(forget),
        "processes": distributed.rank_and_size()[1],
    }
    result.save(out, overwrite=args.overwrite, run_info=run_info)
    print(f"wrote {out}/ (intervention/, selection.json, metrics.json, history.json, config.json)")
    return 0


def _without_num_processes(argv: list[str]) -> list[str]:
    """The command line without ``--num-processes N`` (each launched process is one of the N)."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--num-processes":
            skip = True
        elif not token.startswith("--num-processes="):
            kept.append(token)
    return kept
