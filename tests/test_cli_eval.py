"""``neumuter eval``: scores a model with a saved intervention, shows its progress, and prints nothing else."""

import json

import pytest
from conftest import FORGET, HELDOUT, RETAIN

from neumuter_interv.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory, memorized_dir):
    root = tmp_path_factory.mktemp("eval")
    (root / "forget.txt").write_text("\n".join(FORGET) + "\n")
    (root / "heldout.txt").write_text("\n".join(HELDOUT) + "\n")
    (root / "retain.txt").write_text("\n".join(RETAIN) + "\n")
    run = root / "run"
    assert main(["unlearn", "--model", str(memorized_dir), "--forget", str(root / "forget.txt"), "--out", str(run),
                 "--epochs", "3", "--selection", "fraction", "--fraction", "0.02", "--neighbour-source", "random",
                 "--no-progress"]) == 0
    return root


def evaluate(memorized_dir, files, out, *extra):
    return main(["eval", "--model", str(memorized_dir), "--intervention", str(files / "run" / "intervention"),
                 "--forget", str(files / "forget.txt"), "--heldout", str(files / "heldout.txt"),
                 "--retain", str(files / "retain.txt"), "--out", str(out), *extra])


def test_eval_writes_strict_json_metrics_for_the_unlearned_model(memorized_dir, files, tmp_path, capsys):
    assert evaluate(memorized_dir, files, tmp_path / "scores", "--no-progress") == 0
    metrics = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert {"thresholds", "forget_ma", "forget_el10", "retain_ma", "forgotten_fraction"} <= set(metrics)
    assert len(metrics["per_sample"]["forget_ma"]) == len(FORGET)
    captured = capsys.readouterr()
    assert "forget_ma" in captured.out
    assert captured.err == ""  # no pyvene "WARNING:root:The key is provided in the config" when loading


def test_eval_shows_a_progress_bar_for_every_scoring_and_decoding_pass(memorized_dir, files, tmp_path, capsys,
                                                                     monkeypatch):
    import neumuter_interv.metrics as metrics

    monkeypatch.setattr(metrics.core, "tqdm", lambda iterable, desc, **kwargs: (print(f"BAR {desc}"), iterable)[1])
    assert evaluate(memorized_dir, files, tmp_path / "scores", "--no-progress") == 0
    assert "BAR" not in capsys.readouterr().out
    assert evaluate(memorized_dir, files, tmp_path / "scores-2") == 0
    bars = [line for line in capsys.readouterr().out.splitlines() if line.startswith("BAR")]
    assert any("greedy decoding" in bar for bar in bars) and any("scoring" in bar for bar in bars)
