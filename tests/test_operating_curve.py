"""The operating-point curve: log-spaced counts along the gates' ranking, each point what a separate
evaluation of the same mask gives."""

import pytest
import torch
from conftest import FORGET, HELDOUT, RETAIN

from neumuter_interv.evaluation import EvaluationSet, evaluate
from neumuter_interv.hard_concrete import HardConcreteParams
from neumuter_interv.methods.neumuter import freeze
from neumuter_interv.methods.neumuter.readout import GateRanking
from neumuter_interv.operating_curve import curve_counts, operating_curve


def test_counts_are_log_spaced_up_to_the_largest_and_include_the_kept_one():
    counts = curve_counts(2227, points=10, include=[411])
    assert counts[0] == 9 and counts[-1] == 2227 and 411 in counts
    assert counts == sorted(set(counts)) and len(counts) == 11
    ratios = [b / a for a, b in zip(counts, counts[1:]) if b != 411 and a != 411]
    assert max(ratios) / min(ratios) < 1.1  # evenly spaced on a log scale
    assert curve_counts(3, points=10) == [1, 2, 3]


def test_every_point_equals_a_separate_evaluation_of_the_same_mask(memorized):
    model, tokenizer = memorized
    data = EvaluationSet(FORGET, HELDOUT, general_texts=HELDOUT, retain_texts=RETAIN,
                         ma_groups={"heldout": HELDOUT}, settings={"el_n": 10, "el_prefix_stride": 1, "batch_size": 4})
    thresholds = {"ma": 0.6, "el10": 0.5}
    torch.manual_seed(0)
    # the memorized model: 2 layers x 256 neurons, nearly all gates closing (so that the curve reaches forgetting)
    log_alpha = {0: torch.randn(256) * 3 - 4, 1: torch.randn(256) * 3 - 4}
    params = HardConcreteParams()
    counts = [0, 16, 256, 512]
    curve = operating_curve(model, tokenizer, log_alpha, params, data, thresholds, counts, log=lambda m: None)
    ranking = GateRanking.of(model, log_alpha, params)
    assert [p["neurons_muted"] for p in curve] == [0, 16, 256, ranking.size]
    for count, point in zip(counts, curve):
        masked = model if count == 0 else freeze(model, ranking.selection(count))
        separate = evaluate(masked, tokenizer, data, thresholds)
        for key in ("forget_ma", "forgotten_fraction", "retain_ma", "heldout_ma", "heldout_ppl"):
            assert point[key] == pytest.approx(separate[key], rel=1e-5, abs=1e-6), (count, key)
    assert curve[0]["forget_ma"] > curve[-1]["forget_ma"]  # the curve moves: muting most neurons changes MA
    assert any(0 < p["forgotten_fraction"] for p in curve)  # and covers forgotten samples (EL10 decoded there)


def test_eval_draws_the_curve_of_a_saved_runs_gates_and_refuses_gates_that_are_not_finite(memorized_dir, tmp_path,
                                                                                         capsys):
    import json

    from safetensors.torch import load_file, save_file

    from neumuter_interv.cli import main

    forget, heldout = tmp_path / "forget.txt", tmp_path / "heldout.txt"
    forget.write_text("\n".join(FORGET))
    heldout.write_text("\n".join(HELDOUT))
    run = tmp_path / "run"
    assert main(["unlearn", "--model", str(memorized_dir), "--forget", str(forget), "--epochs", "3", "--out", str(run),
                 "--no-progress"]) == 0
    assert (run / "gates.safetensors").is_file()
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(memorized_dir), "--forget", str(forget), "--heldout", str(heldout),
                 "--curve", str(run), "--curve-points", "3", "--out", str(out), "--no-progress"]) == 0
    curve = json.loads((out / "curve.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert curve[0]["neurons_muted"] == 0 and curve[0]["forget_ma"] == pytest.approx(metrics["forget_ma"])
    assert [p["neurons_muted"] for p in curve] == sorted({p["neurons_muted"] for p in curve})

    gates = load_file(str(run / "gates.safetensors"))
    gates[next(iter(gates))][0] = float("nan")
    save_file(gates, str(run / "gates.safetensors"))
    capsys.readouterr()
    assert main(["eval", "--model", str(memorized_dir), "--forget", str(forget), "--heldout", str(heldout),
                 "--curve", str(run), "--out", str(tmp_path / "eval2"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "finite gate locations" in error[0]
    assert not (tmp_path / "eval2").exists()
