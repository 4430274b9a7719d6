"""``neumuter unlearn``: what it writes, and how it refuses bad input (one line, exit != 0, nothing written)."""

import json
import subprocess
import sys

import pytest
import transformers
from conftest import FORGET

from neumuter_interv.cli import main


@pytest.fixture
def forget_txt(tmp_path):
    path = tmp_path / "forget.txt"
    path.write_text("\n".join(FORGET) + "\n")
    return path


def test_unlearn_writes_the_frozen_intervention_selection_and_metrics(memorized_dir, forget_txt, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "neumuter_interv.cli", "unlearn", "--model", str(memorized_dir), "--forget", str(forget_txt),
         "--layers", "0-1", "--epochs", "3", "--kl-weight", "0.3", "--sparsity-weight", "0", "--selection", "fraction",
         "--fraction", "0.02", "--out", str(out), "--no-progress"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "0-based 0-1 (paper blocks 1-2)" in result.stdout
    assert {p.name for p in out.iterdir()} == {"intervention", "selection.json", "metrics.json", "history.json", "config.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["neurons_muted_fraction"] == pytest.approx(11 / 512)  # ceil(0.02 x 512 gated neurons)
    selection = json.loads((out / "selection.json").read_text())
    assert sum(len(layer["indices"]) for layer in selection["layers"].values()) == 11
    assert len(json.loads((out / "history.json").read_text())) == 3
    assert json.loads((out / "config.json").read_text())["forget_samples"] == len(FORGET)


def test_an_existing_output_is_never_overwritten_silently(memorized_dir, forget_txt, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = main(["unlearn", "--model", str(memorized_dir), "--forget", str(forget_txt), "--out", str(out)])
    assert code != 0
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"


def bad_input_cases(tmp_path, memorized_dir, forget_txt):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    no_column = tmp_path / "forget.csv"
    no_column.write_text("doc_id,body\n1,hello world\n")
    bert_dir = tmp_path / "bert"
    transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                          num_attention_heads=1, intermediate_size=8)).save_pretrained(bert_dir)
    transformers.AutoTokenizer.from_pretrained(memorized_dir).save_pretrained(bert_dir)
    long_text = tmp_path / "long.txt"
    long_text.write_text(" ".join(["alice"] * 80) + "\n")
    return {
        "empty forget file": (["--forget", str(empty)], "empty"),
        "layer out of range": (["--forget", str(forget_txt), "--layers", "0-5"], "out of range"),
        "unknown architecture": (["--forget", str(forget_txt), "--model", str(bert_dir)], "no known FFN activation"),
        "missing text column": (["--forget", str(no_column)], "missing 'text' column"),
        "missing forget file": (["--forget", str(tmp_path / "nope.txt")], "does not exist"),
        "text longer than the context": (["--forget", str(long_text)], "longer than the model's context"),
        "missing model": (["--forget", str(forget_txt), "--model", str(tmp_path / "no-model")], "cannot load"),
    }


CASES = ["empty forget file", "layer out of range", "unknown architecture", "missing text column",
         "missing forget file", "text longer than the context", "missing model"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_clear_line_and_writes_nothing(case, memorized_dir, forget_txt, tmp_path, capsys):
    extra, expected = bad_input_cases(tmp_path, memorized_dir, forget_txt)[case]
    capsys.readouterr()
    out = tmp_path / "out"
    args = ["unlearn", "--model", str(memorized_dir), "--out", str(out), "--epochs", "1", "--no-progress", *extra]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
