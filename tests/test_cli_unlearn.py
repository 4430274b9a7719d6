"""``neumuter unlearn``: what it writes, and that it never overwrites silently (every other refusal: test_bad_input)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FORGET, HELDOUT

from neumuter_interv import NeuMuterConfig
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


def test_with_heldout_texts_unlearn_checks_eq17_along_the_training_and_records_the_path(memorized_dir, forget_txt,
                                                                                      tmp_path):
    """``--heldout`` gives the paper's stopping rule (Appendix B.4): the Eq. 17 thresholds come from texts
    the model never saw, the ``smallest`` readout is checked every ``--check-every`` epochs within
    ``--epochs``, and the run records the thresholds and every check. (This word-level memorizer keeps its
    texts under 5% of its neurons muted: the budget ends first, and the run says so.)"""
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n".join(HELDOUT) + "\n")
    out = tmp_path / "run"
    code = main(["unlearn", "--model", str(memorized_dir), "--forget", str(forget_txt), "--heldout", str(heldout),
                 "--layers", "0-1", "--epochs", "10", "--check-every", "5", "--kl-weight", "0.3",
                 "--sparsity-weight", "0", "--selection", "smallest", "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    checks = metrics["calibration"]["stages"][0]["checks"]
    assert [check["epoch"] for check in checks] == [5, 10]
    assert metrics["calibration"]["met"] is False and metrics["stopped_early"] is False
    assert all(0 < check["neurons_muted_fraction"] <= 0.05 + 1 / 512 and "forget_ma" in check for check in checks)
    config = json.loads((out / "config.json").read_text())
    assert config["heldout_file"] == str(heldout) and config["target_fraction"] == 1.0
    assert set(config["eq17_thresholds"]) == {"ma", "el10"}


def test_a_preset_sets_the_defaults_and_flags_override_it(memorized_dir, forget_txt, tmp_path):
    out = tmp_path / "run"
    code = main(["unlearn", "--model", str(memorized_dir), "--forget", str(forget_txt), "--preset", "official",
                 "--layers", "1", "--epochs", "1", "--batch-size", "4", "--out", str(out), "--no-progress"])
    assert code == 0
    recorded = json.loads((out / "config.json").read_text())["neumuter"]
    assert recorded == NeuMuterConfig.official(layers="1", epochs=1, batch_size=4, progress=False).to_dict()


def test_the_distillation_forget_term_is_one_flag_and_is_recorded(memorized_dir, forget_txt, tmp_path):
    out = tmp_path / "run"
    code = main(["unlearn", "--model", str(memorized_dir), "--forget", str(forget_txt), "--layers", "1", "--epochs", "2",
                 "--forget-loss", "distill", "--distill-tau", "12", "--out", str(out), "--no-progress"])
    assert code == 0
    recorded = json.loads((out / "config.json").read_text())["neumuter"]
    assert (recorded["forget_loss"], recorded["distill_tau"]) == ("distill", 12.0)
    history = json.loads((out / "history.json").read_text())
    assert history[1]["forget_ce"] < history[0]["forget_ce"], "the distillation term is minimized"


def test_the_real_model_preset_asks_for_heldout_texts_before_any_work(memorized_dir, forget_txt, tmp_path, capsys):
    code = main(["unlearn", "--model", str(memorized_dir), "--forget", str(forget_txt), "--preset", "real-model",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "give --heldout" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
