"""``neumuter unlearn``: what it writes, and that it never overwrites silently (every other refusal: test_bad_input)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
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
    assert {p.name for p in out.iterdir()} == {"intervention", "gates.safetensors", "selection.json", "metrics.json",
                                              "history.json", "config.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["neurons_muted_fraction"] == pytest.approx(11 / 512)  # ceil(0.02 x 512 gated neurons)
    selection = json.loads((out / "selection.json").read_text())
    assert sum(len(layer["indices"]) for layer in selection["layers"].values()) == 11
    assert len(json.loads((out / "history.json").read_text())) == 3
    config = json.loads((out / "config.json").read_text())
    assert config["forget_samples"] == len(FORGET)
    assert config["model"] == str(Path(memorized_dir).resolve())  # by an absolute path, whatever was typed
    assert set(config["model_fingerprint"]["weights_sha256"]) == {"float32", "bfloat16", "float16"}


def test_an_existing_output_is_never_overwritten_silently(memorized_dir, forget_txt, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = main(["unlearn", "--model", str(memorized_dir), "--forget", str(forget_txt), "--out", str(out)])
    assert code != 0
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
