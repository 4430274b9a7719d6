"""``neumuter export``: turn one or more run directories into a deployable artefact.

Several run directories are composed into one mask (per-neuron product of scales, union of layers,
order-independent), e.g. successive deletion requests shipped as one adapter.
"""

from __future__ import annotations

from ..errors import NeuMuterError
from ..export import FORMATS, export


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export NeuMuter run(s) as a pyvene package, a PEFT IA3 adapter or a merged checkpoint",
        description="Several RUN_DIRs compose into one mask: scales multiply per neuron (order-independent), "
                    "layers are the union of the runs' layers.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directory written by 'neumuter unlearn'")
    parser.add_argument("--to", required=True, dest="export_format", metavar="|".join(FORMATS),
                        help="pyvene: intervention directory; peft-ia3: PEFT adapter; merged: full checkpoint")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--model", help="base model path or Hub id (default: the runs' config.json 'model')")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype the base model is loaded (and a merged checkpoint saved) in")
    parser.add_argument("--push", metavar="REPO_ID", help="also upload the output directory to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private (with --push)")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.private and not args.push:
        raise NeuMuterError("--private only applies with --push REPO_ID")
    out = export(args.run_dirs, args.export_format, args.out, model=args.model, dtype=args.dtype,
                 overwrite=args.overwrite, push=args.push, private=args.private)
    where = f" and pushed to {args.push}" if args.push else ""
    print(f"wrote {out}/ ({args.export_format}, {len(args.run_dirs)} run(s)){where}")
    return 0
