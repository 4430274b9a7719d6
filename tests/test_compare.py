"""``neumuter compare`` end to end on the tiny testbed: the result files, one entry per method, retain-set
methods flagged, a failing method recorded without ending the run, and bad arguments refused up front."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass

import pytest

from neumuter_interv.cli import main
from neumuter_interv.methods.base import UnlearningMethod
from neumuter_interv.methods.registry import METHODS, MethodEntry

METHODS_RUN = ["neumuter", "ga", "gd", "broken"]


@dataclass
class BrokenSettings:
    pass


class BrokenMethod(UnlearningMethod):
    """Stands in for a method that crashes mid-run."""

    name = "broken"

    def __init__(self, settings: BrokenSettings):
        self.settings = settings

    def unlearn(self, model, tokenizer, forget_texts, retain_texts=None):
        raise RuntimeError("this method always fails")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One tiny comparison through the CLI (with a broken method registered): output dir, JSON, stdout."""
    out = tmp_path_factory.mktemp("compare") / "out"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setitem(METHODS, "broken", MethodEntry(BrokenMethod, BrokenSettings))
        code = main(["compare", "--size", "tiny", "--methods", ",".join(METHODS_RUN), "--max-epochs", "10",
                     "--out", str(out), "--no-progress"])
    assert code == 0
    return out, json.loads((out / "comparison.json").read_text()), stdout.getvalue()


def test_writes_the_json_the_table_and_the_plot_with_every_method_keyed(compared):
    out, summary, _ = compared
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "comparison.md", "tradeoff.png"]
    assert list(summary["methods"]) == METHODS_RUN
    for name in ("neumuter", "ga", "gd"):
        entry = summary["methods"][name]
        assert {"forget_ma", "forget_el10", "forgotten_fraction", "retain_ma", "heldout_ppl", "mia_distance",
                "forget_quality"} <= set(entry["evaluation"])
        assert entry["record"]["method"] == name and entry["record"]["seconds"] > 0
        assert entry["settings"] and "stop_when" not in entry["settings"]
    assert summary["methods"]["ga"]["settings"]["max_epochs"] == 10
    assert summary["methods"]["ga"]["record"]["steps"] <= 10
    table = (out / "comparison.md").read_text()
    for row in ("| original |", "| retrain oracle |", "| NeuMuter |", "| GA |", "| GD† |", "| BROKEN |"):
        assert row in table
    assert "max_epochs=10" in table
    assert summary["precision"]["auto"] in ("bfloat16", "float32")  # what "auto" computed in on this machine


def test_methods_that_use_the_retain_set_are_flagged(compared):
    out, summary, _ = compared
    assert summary["methods"]["gd"]["uses_retain_set"] is True
    assert summary["methods"]["neumuter"]["uses_retain_set"] is False
    assert summary["methods"]["ga"]["uses_retain_set"] is False
    assert "† uses the retain set" in (out / "comparison.md").read_text()


def test_a_failing_method_is_recorded_and_the_others_still_run(compared):
    out, summary, stdout = compared
    broken = summary["methods"]["broken"]
    assert broken["error"] == "RuntimeError: this method always fails"
    assert "Traceback" in broken["traceback"] and "evaluation" not in broken
    assert "**failed** (RuntimeError: this method always fails)" in (out / "comparison.md").read_text()
    assert "[4/4] broken: FAILED (RuntimeError: this method always fails)" in stdout
    for index, name in enumerate(METHODS_RUN, start=1):
        assert f"[{index}/4] {name}:" in stdout


@pytest.mark.parametrize("methods, expected", [
    ("neumuter,nope", "unknown method(s) 'nope'"),
    ("ga,ga", "given twice: ga"),
    (",", "no methods given"),
])
def test_bad_method_names_get_one_clear_line_and_nothing_is_written(methods, expected, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compare", "--size", "tiny", "--methods", methods, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0]
    assert list(tmp_path.iterdir()) == []


def test_an_existing_result_is_not_overwritten_without_asking(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "comparison.json").write_text("{}")
    code = main(["compare", "--size", "tiny", "--methods", "ga", "--out", str(out), "--no-progress"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (out / "comparison.json").read_text() == "{}"


def test_neumuter_runs_under_the_same_criterion_as_every_other_method():
    from types import SimpleNamespace

    from neumuter_interv.comparison import ComparisonConfig, build_method

    world = SimpleNamespace(criterion=object(), neighbours=lambda *args: [], attribution_reference=[])
    for config in (ComparisonConfig.for_world("real"), ComparisonConfig.for_world("people", "tiny")):
        for name in ("neumuter", "ga", "npo", "kl"):
            method = build_method(name, world, config)
            stop = method.stop_when if name == "neumuter" else method.settings.stop_when
            assert stop is world.criterion, (name, config.demo.world)
    real = build_method("neumuter", world, ComparisonConfig.for_world("real"))
    assert real.config.selection == "smallest" and real.schedule.max_stages == 1  # the paper's fixed coefficients


def test_a_neumuter_run_with_anchors_is_marked_like_the_retain_set_methods_and_takes_its_options(tmp_path):
    out = tmp_path / "anchored"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["compare", "--size", "tiny", "--methods", "neumuter", "--anchors", "1", "--neumuter-epochs", "3",
                     "--forget-loss", "distill", "--kl-weight", "2.5", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["methods"]["neumuter"]["uses_retain_set"] and summary["settings"]["neumuter"]["anchors_per_sample"] == 1
    assert summary["settings"]["neumuter"]["forget_loss"] == "distill"
    assert summary["settings"]["neumuter"]["kl_weight"] == 2.5
    assert summary["settings"]["schedule"]["stage_epochs"] == 3
    assert "| NeuMuter† |" in (out / "comparison.md").read_text()


def test_an_interrupted_comparison_continues_after_its_last_finished_method(tmp_path, monkeypatch):
    """A comparison killed in its second method keeps the first in a journal (in the cache, never in the output);
    the same command then reads it instead of running it again, and the journal is gone once the results are
    written. A comparison with other settings does not read it."""
    from neumuter_interv.cache import default_cache_dir
    from neumuter_interv.methods.ga import GradientAscent

    journal_dir = default_cache_dir() / "journals" / "comparison"
    before = set(journal_dir.glob("*.json"))
    out = tmp_path / "out"
    command = ["compare", "--size", "tiny", "--methods", "neumuter,ga", "--max-epochs", "2", "--out", str(out),
               "--no-progress"]
    real_ga_unlearn = GradientAscent.unlearn

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(GradientAscent, "unlearn", killed)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(command) == 130
    assert not out.exists()
    journals = set(journal_dir.glob("*.json")) - before
    assert len(journals) == 1
    journal = journals.pop()
    kept = json.loads(journal.read_text())["data"]
    assert list(kept) == ["neumuter"]

    monkeypatch.setattr(GradientAscent, "unlearn", real_ga_unlearn)
    neumuter_runs = []
    monkeypatch.setattr(METHODS["neumuter"].method, "unlearn", lambda *args, **kwargs: neumuter_runs.append(1))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(command) == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert not neumuter_runs and "read from the interrupted run's journal" in stdout.getvalue()
    assert summary["methods"]["neumuter"] == kept["neumuter"] and summary["resumed_methods"] == ["neumuter"]
    assert "evaluation" in summary["methods"]["ga"] and not journal.exists()
    assert "read from its journal" in (out / "comparison.md").read_text()

    # another budget is another comparison: nothing is read from the first's journal (and a failed method, here
    # NeuMuter returning nothing, is not kept: a rerun runs it again)
    monkeypatch.setattr(GradientAscent, "unlearn", killed)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*command[:6], "3", "--out", str(tmp_path / "other"), "--no-progress"]) == 130
    assert neumuter_runs == [1] and set(journal_dir.glob("*.json")) == before
