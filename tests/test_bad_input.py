"""The README's promise, one row per bad input: the command ends with exit code 2 and ONE line on stderr that
names the problem, no traceback, and nothing is written (no output, no staging directory, no input touched).

The rows cover every command (``unlearn``, ``eval``, ``export``, ``compare``, ``scan``, ``demo``): bad
numbers, bad masks, bad files, outputs that cannot be written or that would replace an input. The behaviour
tests below the table cover what is not a refusal: a CSV with a byte-order mark, the umask, two writers
racing for one target, staging left by a killed process.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
from conftest import FORGET, HELDOUT, RETAIN, tiny_config
from safetensors.torch import load_file, save_file

from neumuter_interv.cli import main
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.export.runs import read_run
from neumuter_interv.output import output_directory, write_json

TRAIN = ["--epochs", "3", "--kl-weight", "0.3", "--sparsity-weight", "0", "--selection", "fraction",
         "--fraction", "0.02", "--neighbour-source", "random", "--no-progress"]


def _unlearn(model: Path, forget: Path, out: Path) -> Path:
    assert main(["unlearn", "--model", str(model), "--forget", str(forget), "--out", str(out), *TRAIN]) == 0
    return out


def _tampered_run(run: Path, where: Path, change) -> Path:
    """A copy of ``run`` whose selection.json went through ``change(dict)``."""
    shutil.copytree(run, where)
    selection = json.loads((where / "selection.json").read_text())
    change(selection)
    (where / "selection.json").write_text(json.dumps(selection))  # json writes NaN as NaN, and reads it back
    return where


def _tampered_intervention(run: Path, where: Path, change) -> Path:
    """A copy of ``run``'s intervention whose tensors went through ``change(dict of tensors)``."""
    shutil.copytree(run / "intervention", where)
    tensors = load_file(where / "interventions.safetensors")
    change(tensors)
    save_file(tensors, where / "interventions.safetensors")
    return where


def _first_layer(selection: dict) -> dict:
    return next(layer for layer in selection["layers"].values() if layer["indices"])


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, memorized_dir) -> dict[str, Path]:
    """Every input the rows need, in one directory whose contents no row may change."""
    root = tmp_path_factory.mktemp("bad-input")
    paths = {"root": root, "model": memorized_dir}
    (root / "forget.txt").write_text("\n".join(FORGET) + "\n")
    (root / "heldout.txt").write_text("\n".join(HELDOUT + RETAIN) + "\n")
    (root / "latin1.txt").write_bytes("alice smith lives in the caf\xe9 on twelve oak road\n".encode("latin-1"))
    (root / "one-token.txt").write_text("alice smith was born\nalice\n")
    (root / "short.txt").write_text("alice smith was born on may third\n")  # 7 tokens: EL10 needs 11
    (root / "huge.txt").write_text(" ".join(["alice"] * 2_000_000) + "\n")  # a 12 MB line
    (root / "empty.txt").write_text("\n\n")
    (root / "no-column.csv").write_text("doc_id,body\n1,hello world\n")
    (root / "a-directory").mkdir()
    (root / "empty-dir").mkdir()
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "full").mkdir()
    (root / "full" / "keep.txt").write_text("precious")
    (root / "forget-dir").mkdir()
    (root / "forget-dir" / "forget.txt").write_text("\n".join(FORGET) + "\n")
    (root / "read-only").mkdir(mode=0o500)
    (root / "cache").mkdir()  # the cache ($NEUMUTER_CACHE) of the rows that name it
    (root / "cache" / "entry.json").write_text("{}")
    (root / "validation").mkdir()  # a knowledge-unlearning validation_data directory that lacks pile.csv
    (root / "validation" / "lambada.csv").write_text("id,token_length,text,task\n0,3,alice smith,lambada\n")

    truncated = root / "truncated-model"
    shutil.copytree(memorized_dir, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    bert = root / "bert"
    transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                          num_attention_heads=1, intermediate_size=8)).save_pretrained(bert)
    transformers.AutoTokenizer.from_pretrained(memorized_dir).save_pretrained(bert)

    small = root / "small-vocab"  # a model embedding 8 tokens, with the full tokenizer
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(tiny_config("gpt_neo", 8)).save_pretrained(small)
    transformers.AutoTokenizer.from_pretrained(memorized_dir).save_pretrained(small)
    small_llama = root / "small-vocab-llama"  # an oracle with its own 8-token vocabulary
    transformers.AutoModelForCausalLM.from_config(tiny_config("llama", 8)).save_pretrained(small_llama)
    shutil.copytree(memorized_dir, small_llama, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors",
                                                                                                   "config.json"))

    llama = root / "llama"
    tokenizer = transformers.AutoTokenizer.from_pretrained(memorized_dir)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer))).save_pretrained(llama)
    tokenizer.save_pretrained(llama)

    run = _unlearn(memorized_dir, root / "forget.txt", root / "run")
    paths["run"] = run
    paths["llama-run"] = _unlearn(llama, root / "forget.txt", root / "llama-run")
    number_run = root / "run-model-number"
    shutil.copytree(run, number_run)
    (number_run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "model": 42}))
    hub_run = root / "hub-run"
    shutil.copytree(run, hub_run)
    (hub_run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()),
                                                     "model": "some-org/some-model"}))

    def set_index(value):
        return lambda s: _first_layer(s)["indices"].__setitem__(0, value)

    def set_scale(value):
        return lambda s: _first_layer(s)["scales"].__setitem__(0, value)

    selection_changes = {
        "index-out-of-range": set_index(10_000),
        "negative-index": set_index(-1),
        "duplicate-index": lambda s: _first_layer(s)["indices"].__setitem__(1, _first_layer(s)["indices"][0]),
        "fractional-index": set_index(1.5),
        "string-index": set_index("a"),
        "unknown-layer": lambda s: s["layers"].__setitem__("7", _first_layer(s)),
        "short-scales": lambda s: _first_layer(s)["scales"].pop(),
        "nan-scale": set_scale(math.nan),
        "infinite-scale": set_scale(math.inf),
        "scale-above-one": set_scale(1.5),
        "negative-scale": set_scale(-0.2),
        "layers-not-an-object": lambda s: s.__setitem__("layers", [1, 2]),
        "other-width": lambda s: s.__setitem__("ffn_width", 128),
        "arabic-digit-layer": lambda s: s["layers"].__setitem__("\u0660", s["layers"].pop(next(iter(s["layers"])))),
    }
    for name, change in selection_changes.items():
        paths[f"run-{name}"] = _tampered_run(run, root / f"run-{name}", change)

    def scales(value):
        def change(tensors):
            key = next(k for k in tensors if k.endswith("neuron_scales") and tensors[k].numel())
            tensors[key][0] = value
        return change

    def float_indices(tensors):
        key = next(k for k in tensors if k.endswith("neuron_indices"))
        tensors[key] = tensors[key].float()

    for name, change in {"nan": scales(math.nan), "above-one": scales(1.5), "float-indices": float_indices}.items():
        paths[f"intervention-{name}"] = _tampered_intervention(run, root / f"intervention-{name}", change)
    return paths


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]  # "{name}" is a sandbox path, "{out}" the output the command must not write
    expected: str  # in the one line on stderr
    cwd: str | None = None  # sandbox directory to run in
    env: tuple[tuple[str, str], ...] = ()  # environment variables to set ("{name}" expanded as in argv)


def unlearn(*extra, forget="{root}/forget.txt", model="{model}", out="{out}"):
    return ("unlearn", "--model", model, "--forget", forget, "--out", out, "--epochs", "1", "--no-progress", *extra)


def evaluate(*extra, forget="{root}/forget.txt", out="{out}"):
    return ("eval", "--model", "{model}", "--forget", forget, "--heldout", "{root}/heldout.txt", "--out", out,
            "--no-progress", *extra)


def export(run="{run}", *extra, out="{out}"):
    return ("export", run, "--to", "merged", "--out", out, *extra)


CACHE = (("NEUMUTER_CACHE", "{root}/cache"),)

CASES = {
    # numeric settings
    "unlearn --lr nan": Case(unlearn("--lr", "nan"), "learning_rate must be a finite number, got nan"),
    "unlearn --lr=-1": Case(unlearn("--lr=-1"), "learning_rate must be greater than 0"),
    "unlearn --threshold=-5": Case(unlearn("--threshold=-5"), "threshold must be greater than 0"),
    "unlearn --epochs 0": Case(unlearn("--epochs", "0"), "epochs must be at least 1"),
    "unlearn --batch-size 0": Case(unlearn("--batch-size", "0"), "batch_size must be at least 1"),
    "unlearn --kl-weight inf": Case(unlearn("--kl-weight", "inf"), "kl_weight must be a finite number"),
    "unlearn --sparsity-weight=-1": Case(unlearn("--sparsity-weight=-1"), "sparsity_weight must be at least 0"),
    "unlearn --fraction 2": Case(unlearn("--selection", "fraction", "--fraction", "2"), "fraction"),
    "unlearn --top-k 0": Case(unlearn("--selection", "top_k", "--top-k", "0"), "top_k"),
    "unlearn --replacement-ratio 0": Case(unlearn("--replacement-ratio", "0"), "replacement_ratio must be greater"),
    "unlearn --layers=-1": Case(unlearn("--layers=-1"), "'-1' is not a layer"),
    "unlearn --layers 9-": Case(unlearn("--layers", "9-"), "layer 9 is out of range"),
    "unlearn --layers 0-5": Case(unlearn("--layers", "0-5"), "out of range"),
    "unlearn --layers ² (not an ASCII digit)": Case(unlearn("--layers", "²"), "cannot read layer spec"),
    "unlearn --epochs 1 and 400 zeros": Case(unlearn("--epochs", "1" + "0" * 400), "epochs must be at most"),
    "unlearn --seed 2**64": Case(unlearn("--seed", str(2**64)), "seed must be at most"),
    "unlearn --el-prefix-stride 0": Case(unlearn("--el-prefix-stride", "0"), "--el-prefix-stride must be at least 1"),
    "unlearn --device meta": Case(unlearn("--device", "meta"), "is not one this library runs on; devices here: cpu"),
    "a forget path with a newline": Case(unlearn(forget="{root}/two\nlines.txt"), "two\\nlines.txt' does not exist"),
    "compare --max-epochs=-3": Case(("compare", "--size", "tiny", "--max-epochs=-3", "--out", "{out}"),
                                    "max_epochs must be at least 1"),
    "compare --el-prefix-stride 0": Case(("compare", "--size", "tiny", "--el-prefix-stride", "0", "--out", "{out}"),
                                         "el_prefix_stride must be at least 1"),
    "eval --el-prefix-stride 0": Case(evaluate("--el-prefix-stride", "0"), "--el-prefix-stride must be at least 1"),
    "scan --margin nan": Case(("scan", "--model", "{model}", "--candidates", "{root}/forget.txt", "--margin", "nan",
                               "--out", "{out}"), "margin must be a finite number"),
    "scan --el-n past --min-tokens": Case(("scan", "--model", "{model}", "--candidates", "{root}/forget.txt", "--min-tokens",
                                           "8", "--el-n", "10", "--out", "{out}"), "el_n must be at most 7"),
    "scan --dtype fp8": Case(("scan", "--model", "{model}", "--candidates", "{root}/forget.txt", "--dtype", "fp8",
                              "--out", "{out}"), "fp8"),
    "scan --window past the model's context": Case(("scan", "--model", "{model}", "--candidates", "{root}/forget.txt",
                                                    "--window", "100", "--out", "{out}"), "longer than the model's context of 64"),
    # input files
    "a Latin-1 forget file": Case(unlearn(forget="{root}/latin1.txt"), "is not UTF-8 text (byte 0xe9"),
    "a directory as --forget": Case(unlearn(forget="{root}/a-directory"), "is a directory"),
    "/dev/zero as --forget": Case(unlearn(forget="/dev/zero"), "is not a regular file"),
    "a missing forget file": Case(unlearn(forget="{root}/nope.txt"), "does not exist"),
    "an empty forget file": Case(unlearn(forget="{root}/empty.txt"), "the forget set is empty"),
    "a CSV without the text column": Case(unlearn(forget="{root}/no-column.csv"), "missing 'text' column"),
    "a 12 MB line": Case(unlearn(forget="{root}/huge.txt"), "longer than the model's context"),
    "a one-token sample names its file": Case(unlearn(forget="{root}/one-token.txt"),
                                              "forget sample 1 of {root}/one-token.txt has fewer than 2 tokens"),
    "a sample too short for EL10 names its file": Case(evaluate(forget="{root}/short.txt"),
                                                       "of {root}/short.txt (first indices [0]) have fewer than 11"),
    "a Latin-1 held-out file": Case(("eval", "--model", "{model}", "--forget", "{root}/forget.txt", "--heldout",
                                     "{root}/latin1.txt", "--out", "{out}"), "held-out file"),
    "eval --utility without its files": Case(evaluate("--utility", "{root}/validation"),
                                             "pile utility file '{root}/validation/pile.csv' does not exist"),
    "eval --utility a missing directory": Case(evaluate("--utility", "{root}/nope"), "does not exist or is not a directory"),
    "eval --utility-samples without --utility": Case(evaluate("--utility-samples", "4"),
                                                     "--utility-samples needs --utility DIR"),
    "eval --utility-samples 0": Case(evaluate("--utility", "{root}/validation", "--utility-samples", "0"),
                                     "ppl_texts must be at least 1"),
    "compare --world real --utility without its files": Case(
        ("compare", "--world", "real", "--size", "tiny", "--utility", "{root}/validation", "--out", "{out}"),
        "does not exist"),
    "demo --utility a missing directory": Case(("demo", "--size", "tiny", "--utility", "{root}/nope", "--out", "{out}"),
                                               "does not exist or is not a directory"),
    # models
    "a truncated model.safetensors": Case(unlearn(model="{root}/truncated-model"), "cannot load a causal LM"),
    "a missing model": Case(unlearn(model="{root}/no-model"), "cannot load a causal LM"),
    "an unknown architecture": Case(unlearn(model="{root}/bert"), "no known FFN activation"),
    "a tokenizer of another vocabulary": Case(unlearn(model="{root}/small-vocab"), "they are not a pair"),
    "an oracle of another vocabulary": Case(evaluate("--oracle", "{root}/small-vocab-llama"), "they are not a pair"),
    "a Hub id offline": Case(unlearn(model="some-org/some-model"), "the Hub cannot be reached"),
    "a run whose base model is a Hub id, offline": Case(export("{root}/hub-run"), "the Hub cannot be reached"),
    # masks: selection.json (export) and saved interventions (eval)
    **{f"selection.json: {name}": Case(export(f"{{root}}/run-{name}"), expected) for name, expected in {
        "index-out-of-range": "neuron index 10000 is outside the FFN width 256",
        "negative-index": "neuron index -1 is outside",
        "duplicate-index": "is listed twice",
        "fractional-index": "neuron indices must be a list of integers",
        "string-index": "neuron indices must be a list of integers",
        "unknown-layer": "names layer '7', which a 2-layer model does not have",
        "short-scales": "neuron indices but",
        "nan-scale": "scale nan is not a finite number in [0, 1]",
        "infinite-scale": "scale inf is not a finite number in [0, 1]",
        "scale-above-one": "scale 1.5 is not a finite number in [0, 1]",
        "negative-scale": "scale -0.2 is not a finite number in [0, 1]",
        "layers-not-an-object": "is not a NeuMuter selection",
        "other-width": "FFN width 128",
        "arabic-digit-layer": "names layer '\u0660'",
    }.items()},
    "an intervention with a NaN scale": Case(evaluate("--intervention", "{root}/intervention-nan"),
                                             "neuron_scales holds NaN or infinite values; refused"),
    "an intervention with a scale above 1": Case(evaluate("--intervention", "{root}/intervention-above-one"),
                                                 "scale 1.5 is not a finite number in [0, 1]"),
    "an intervention with float indices": Case(evaluate("--intervention", "{root}/intervention-float-indices"),
                                               "must be a 1-D integer tensor"),
    "an intervention of another architecture": Case(evaluate("--intervention", "{llama-run}/intervention"),
                                                    "was made on other weights than the model loaded from"),
    # outputs
    "unlearn --out MODEL --overwrite": Case(unlearn("--overwrite", out="{model}"), "is the input"),
    "unlearn --out MODEL/run": Case(unlearn(out="{model}/run"), "lies inside the input"),
    "unlearn --out DIR-OF-FORGET --overwrite": Case(unlearn("--overwrite", forget="{root}/forget-dir/forget.txt",
                                                            out="{root}/forget-dir"), "holds the input"),
    "export RUN --out RUN --overwrite": Case(export("{run}", "--overwrite", out="{run}"), "is the input"),
    "export RUN --out RUN/export": Case(export("{run}", out="{run}/export"), "lies inside the input"),
    "eval --out RUN --overwrite (holds the intervention)": Case(
        evaluate("--intervention", "{run}/intervention", "--overwrite", out="{run}"), "holds the input"),
    "eval --out inside the utility directory": Case(evaluate("--utility", "{root}/validation",
                                                             out="{root}/validation/out"), "lies inside the input"),
    "a non-empty output": Case(unlearn(out="{root}/full"), "not empty (pass --overwrite"),
    "an output under a file": Case(unlearn(out="{root}/latin1.txt/run"), "is not a directory"),
    "an output in /proc": Case(unlearn(out="/proc/neumuter-out"), "cannot create entries in '/proc'"),
    "--out . (the current directory)": Case(unlearn(out="."), "is the current directory", cwd="empty-dir"),
    "--out a 240-byte name": Case(unlearn(out="{root}/" + "o" * 240), "choose a shorter name"),
    "--out a 300-byte directory on the way": Case(unlearn(out="{root}/" + "d" * 300 + "/run"), "choose a shorter name"),
    "--out a dangling symlink": Case(unlearn(out="{root}/dangling"), "is a symbolic link"),
    "export RUN RUN (the same run twice)": Case(("export", "{run}", "{run}/.", "--to", "merged", "--out", "{out}"),
                                               "is given twice"),
    "a run whose config names no model as a string": Case(export("{root}/run-model-number"), "'model' must name"),
    "export --push an invalid repo id": Case(export("{run}", "--push", "a/b/c"), "is not a Hub repo id"),
    "export --out a dangling symlink": Case(export(out="{root}/dangling"), "is a symbolic link"),
    "--out the cache --overwrite": Case(unlearn("--overwrite", out="{root}/cache"), "is the input", env=CACHE),
    "--out inside the cache": Case(unlearn(out="{root}/cache/run"), "lies inside the input", env=CACHE),
    "scan --candidates 'DIR/*' --out DIR/out": Case(
        ("scan", "--model", "{model}", "--candidates", "{root}/forget-dir/*", "--out", "{root}/forget-dir/out"),
        "lies where the glob"),
    "scan --candidates 'DIR/**/*.txt' --out DIR/a/b": Case(
        ("scan", "--model", "{model}", "--candidates", "{root}/**/*.txt", "--out", "{root}/a/b"), "lies where the glob"),
    "scan --candidates installed --out STDLIB/x": Case(
        ("scan", "--model", "{model}", "--candidates", "installed", "--out", "{stdlib}/neumuter-out"),
        "lies inside the input"),
    "demo --forget 'DIR/*' --out DIR/out": Case(
        ("demo", "--forget", "{root}/forget-dir/*", "--out", "{root}/forget-dir/out"), "lies where the glob"),
    # the environment
    "WORLD_SIZE=abc": Case(unlearn(), "WORLD_SIZE='abc' is not an integer", env=(("WORLD_SIZE", "abc"),)),
    "WORLD_SIZE=2 alone": Case(unlearn(), "RANK, MASTER_ADDR, MASTER_PORT are not", env=(("WORLD_SIZE", "2"),)),
    "demo --forget with the people world": Case(("demo", "--world", "people", "--forget", "x", "--out", "{out}"),
                                                "--forget applies to the real world, not the people world"),
    "demo --neumuter-epochs 0": Case(("demo", "--size", "tiny", "--neumuter-epochs", "0", "--out", "{out}"),
                                     "stage_epochs must be at least 1"),
    "compare --neumuter-epochs 0": Case(("compare", "--size", "tiny", "--neumuter-epochs", "0", "--out", "{out}"),
                                        "stage_epochs must be at least 1"),
    "demo --kl-weight -1": Case(("demo", "--size", "tiny", "--kl-weight", "-1", "--out", "{out}"),
                                "--kl-weight must be at least 0"),
    "compare --kl-weight nan": Case(("compare", "--size", "tiny", "--kl-weight", "nan", "--out", "{out}"),
                                    "--kl-weight must be a finite number"),
}
if os.geteuid() != 0:  # root may create entries in a directory of mode 0500
    CASES["an output in a read-only directory"] = Case(unlearn(out="{root}/read-only/run"), "cannot create entries")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (hidden ones included) with its size and modification time."""
    return {str(path.relative_to(root)): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_in_one_line_with_exit_code_2_and_writes_nothing(name, sandbox, memorized_dir, capsys,
                                                                       monkeypatch):
    case = CASES[name]
    out = sandbox["root"] / "out"
    values = {**{key: str(value) for key, value in sandbox.items()}, "out": str(out),
              "stdlib": sysconfig.get_paths()["stdlib"]}
    argv = [part.format(**values) for part in case.argv]
    for name, value in case.env:
        monkeypatch.setenv(name, value.format(**values))
    if case.cwd:
        monkeypatch.chdir(sandbox["root"] / case.cwd)
    before, model_before = snapshot(sandbox["root"]), snapshot(memorized_dir)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert case.expected.format(**values) in lines[0]
    assert "Traceback" not in captured.err
    assert snapshot(sandbox["root"]) == before  # no output, no staging directory, no input touched
    assert snapshot(memorized_dir) == model_before


def test_an_unknown_choice_is_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--world", "nowhere"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1
    assert "invalid choice: 'nowhere'" in lines[0] and "--help" in lines[0]


def test_a_repeated_key_in_selection_json_is_refused(sandbox, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sandbox["run"], run)
    text = (run / "selection.json").read_text()
    layer = next(iter(json.loads(text)["layers"]))  # the run's first layer, named a second time (muting nothing)
    assert text.count('"layers": {') == 1
    (run / "selection.json").write_text(text.replace('"layers": {', f'"layers": {{"{layer}": {{"indices": [], '
                                                                     '"scales": []}, ', 1))
    with pytest.raises(NeuMuterError, match=f"the key '{layer}' appears twice"):
        read_run(run)


def test_the_table_covers_every_command():
    assert {case.argv[0] for case in CASES.values()} == {"unlearn", "eval", "export", "compare", "scan", "demo"}


# --- what is not a refusal ---------------------------------------------------------------------------------


def test_a_csv_with_a_byte_order_mark_is_read(memorized_dir, tmp_path):
    forget = tmp_path / "forget.csv"
    forget.write_bytes("\ufefftext\n".encode() + "\n".join(f'"{text}"' for text in FORGET).encode() + b"\n")
    run = _unlearn(memorized_dir, forget, tmp_path / "run")
    assert json.loads((run / "config.json").read_text())["forget_samples"] == len(FORGET)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with output_directory(tmp_path / "nested" / "out") as staging:
            (staging / "sub").mkdir()
    finally:
        os.umask(previous)
    for path in (tmp_path / "nested", tmp_path / "nested" / "out", tmp_path / "nested" / "out" / "sub"):
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask


def test_an_overwrite_whose_target_another_overwrite_retired_first_still_commits(tmp_path, monkeypatch):
    from neumuter_interv import output

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    fresh_sibling = output._fresh_sibling

    def retired_by_the_other_run_first(path, kind):
        if kind == "old":  # between this run's check and its rename, the other run moves the target away
            os.rename(target, tmp_path / "moved-by-the-other-run")
        return fresh_sibling(path, kind)

    monkeypatch.setattr(output, "_fresh_sibling", retired_by_the_other_run_first)
    with output_directory(target, overwrite=True) as staging:
        (staging / "mine.txt").write_text("mine")
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]
    assert not list(tmp_path.glob(".out.*"))


def test_of_two_writers_racing_for_one_target_the_second_is_refused(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(NeuMuterError, match="written by someone else"):
        with output_directory(target) as second:
            (second / "mine.txt").write_text("second")
            with output_directory(target) as first:  # starts later, finishes first
                (first / "mine.txt").write_text("first")
    assert (target / "mine.txt").read_text() == "first"
    assert [path.name for path in tmp_path.iterdir()] == ["out"]


def test_staging_left_by_a_killed_process_is_removed_by_the_next_write(tmp_path):
    dead_pid = 2 ** 22 + 12345  # above the kernel's pid_max: no such process
    leftovers = [tmp_path / f".out.partial-{dead_pid}-abcd", tmp_path / f".out.old-{dead_pid}-abcd"]
    alive = tmp_path / f".out.partial-{os.getpid()}-beef"  # a writer still at work
    for directory in (*leftovers, alive):
        directory.mkdir()
    with output_directory(tmp_path / "out") as staging:
        (staging / "result.txt").write_text("done")
    assert not any(path.exists() for path in leftovers)
    assert alive.exists()


def test_values_that_are_not_numbers_are_written_as_json_null(tmp_path):
    write_json(tmp_path / "metrics.json", {"forget_quality": math.nan, "ppl": [1.5, math.inf], "ok": 2})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"forget_quality": None, "ppl": [1.5, None], "ok": 2}


def test_a_huge_line_is_judged_on_a_prefix_not_tokenized_whole(memorized):
    from neumuter_interv.data import tokenize

    model, tokenizer = memorized
    seen = []

    def spy(text, **kwargs):
        seen.append(len(text))
        return tokenizer(text, **kwargs)

    with pytest.raises(NeuMuterError, match="longer than the model's context of 64"):
        tokenize(spy, ["alice " * 1_000_000], max_length=64)
    assert max(seen) <= 16 * 64
