"""``neumuter unlearn``: localize, select and freeze on a model and a forget file; write a run directory."""

from __future__ import annotations

import os
from pathlib import Path

from .. import distributed
from ..architectures import describe_layers, num_layers, parse_layers
from ..data import read_texts, texts_sha256
from ..errors import NeuMuterError
from ..evaluation import EvaluationSet, thresholds
from ..lm import resolve_device
from ..loading import load_causal_lm, model_fingerprint
from ..methods.neumuter import CoefficientSchedule, NeuMuter, NeuMuterConfig
from ..methods.neumuter.config import FORGET_LOSSES, PRESET_NAMES, SELECTION_RULES
from ..output import check_writable
from ..stopping import ForgettingCriterion
from ..validation import check_number

# flags that set a NeuMuterConfig field of the same name (over the preset, when one is chosen)
CONFIG_FLAGS = ("layers", "epochs", "batch_size", "learning_rate", "stop_loss", "forget_loss", "distill_tau",
                "sparsity_weight", "kl_weight",
                "selection", "threshold", "energy", "top_k", "fraction", "neighbour_source", "replacement_ratio",
                "seed", "device", "dtype")


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
    parser.add_argument("--preset", choices=PRESET_NAMES,
                        help="start from a preset (the flags below override it): official (the released code: batch 1, "
                             "200 epochs, layers 1-), paper (its text: energy readout, 5 neighbours at r = 1) or "
                             "real-model (the demo's settings for small real models: needs --heldout); without it, "
                             "the official coefficients at batch 8 on every layer")
    parser.add_argument("--heldout", help="texts of the forget set's kind that the model never saw: NeuMuter then "
                                          "trains until Eq. 17 holds against their MA and EL10 (Appendix B.4), "
                                          "checking every --check-every epochs, within --epochs")
    parser.add_argument("--target-fraction", type=float, default=1.0,
                        help="with --heldout: the share of forget samples that must meet Eq. 17 (the paper: all; "
                             "the demo: 0.9)")
    parser.add_argument("--check-every", type=int, default=2, help="with --heldout: epochs between checks")
    parser.add_argument("--el-prefix-stride", type=int, default=1,
                        help="with --heldout: EL10 over every stride-th prefix only, for the thresholds and the checks "
                             "(an estimate that costs 1/stride of the greedy decoding; the paper: 1, exact)")
    parser.add_argument("--layers", help="'all', '3', '1-7', '10-16,21', '1-' (0-based)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, dest="learning_rate")
    parser.add_argument("--stop-loss", type=float)
    parser.add_argument("--forget-loss", choices=FORGET_LOSSES,
                        help="the forget term: ascent (Eq. 13's bounded gradient ascent, default) or distill (a "
                             "departure from the paper: the KL from DI's teacher, the original with each true token "
                             "lowered by --distill-tau)")
    parser.add_argument("--distill-tau", type=float)
    parser.add_argument("--sparsity-weight", type=float)
    parser.add_argument("--kl-weight", type=float)
    parser.add_argument("--selection", choices=SELECTION_RULES,
                        help="'smallest' (the fewest lowest gates that meet Eq. 17) needs --heldout")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--energy", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--fraction", type=float)
    parser.add_argument("--neighbour-source", choices=["self", "random"],
                        help="self: the model rewrites a share of the forget tokens from its top-k (default); "
                             "random: random tokens")
    parser.add_argument("--replacement-ratio", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "auto"])
    parser.add_argument("--num-processes", type=int, default=1,
                        help="data-parallel localization over N processes on this machine (gloo on CPUs, NCCL on "
                             "GPUs: one GPU each); torchrun and accelerate launch work too")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    check_number("--num-processes", args.num_processes, minimum=1, integer=True)
    settings = {name: getattr(args, name) for name in CONFIG_FLAGS if getattr(args, name) is not None}
    settings["progress"] = not args.no_progress
    config = NeuMuterConfig.preset(args.preset, **settings) if args.preset else NeuMuterConfig(**settings)
    check_number("--target-fraction", args.target_fraction, above=0, maximum=1)
    check_number("--check-every", args.check_every, minimum=1, integer=True)
    check_number("--el-prefix-stride", args.el_prefix_stride, minimum=1, integer=True)
    if config.selection == "smallest" and not args.heldout:
        raise NeuMuterError("the 'smallest' readout (the real-model preset's) keeps the fewest neurons that meet Eq. 17: "
                            "give --heldout texts the model never saw, or choose --selection threshold, energy, top_k "
                            "or fraction")
    if args.heldout and args.num_processes > 1:
        raise NeuMuterError("--heldout (training until Eq. 17 holds) runs in one process: drop --num-processes")
    out = check_writable(args.out, args.overwrite, {"--model": args.model, "--forget": args.forget,
                                                    "--neighbours": args.neighbours, "--heldout": args.heldout})
    forget = read_texts(args.forget, args.column)
    neighbours = read_texts(args.neighbours, args.column, "neighbour") if args.neighbours else None
    heldout = read_texts(args.heldout, args.column, "held-out") if args.heldout else None
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
    stopping, limits = {}, None
    if heldout is not None:
        data = EvaluationSet(forget, heldout)
        data.settings.update(el_prefix_stride=args.el_prefix_stride, dtype=config.dtype)  # as the checks score
        limits = thresholds(model, tokenizer, data)
        log(f"Eq. 17 thresholds from {len(heldout)} held-out texts: MA {limits['ma']:.3f}, EL10 {limits['el10']:.3f}; "
            f"training until {args.target_fraction:.0%} of the forget samples are under both")
        stopping = {"stop_when": ForgettingCriterion(tokenizer, forget, limits, args.target_fraction,
                                                  el_prefix_stride=args.el_prefix_stride, dtype=config.dtype),
                    "schedule": CoefficientSchedule.fixed(config.epochs, args.check_every)}
    result = NeuMuter(config, log=log, **stopping).run(model, tokenizer, forget, neighbours)
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
        **({"heldout_file": str(Path(args.heldout)), "eq17_thresholds": limits, "target_fraction": args.target_fraction,
            "el_prefix_stride": args.el_prefix_stride}
           if heldout is not None else {}),
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
