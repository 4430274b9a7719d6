"""The main job at a reduced size: every effect the demo reports points the right way."""

import json
import subprocess
import sys

import pytest
import torch

from neumuter_interv import lm
from neumuter_interv.cli import main
from neumuter_interv.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    summary = run_demo(out, DemoConfig.for_world("people", "tiny"), progress=False, log=lambda message: None)
    return out, summary


def test_the_original_model_memorized_the_forget_people_and_the_oracle_did_not(demo):
    _, summary = demo
    assert summary["before"]["forget_ma"] > summary["thresholds"]["ma"] + 0.1
    assert summary["before"]["forget_ma"] > summary["oracle"]["forget_ma"] + 0.1
    assert summary["oracle"]["forgotten_fraction"] >= 0.75


def test_neumuter_lowers_memorization_of_the_forget_people(demo):
    _, summary = demo
    before, after = summary["before"], summary["after"]
    assert after["forget_ma"] < before["forget_ma"]
    assert after["forget_loss"] > before["forget_loss"]
    assert after["forgotten_fraction"] >= before["forgotten_fraction"]
    assert after["mia_distance"] < before["mia_distance"]
    assert 0 < summary["neurons_muted_fraction"] < 0.5


def test_the_report_states_every_target_with_its_number(demo):
    out, summary = demo
    report = (out / "report.md").read_text()
    for name, target in summary["targets"].items():
        assert name in report
        assert isinstance(target["met"], bool)
    assert summary["calibration"]["stages"], "the coefficient schedule ran"


def test_the_demo_writes_metrics_report_plots_and_a_loadable_run(demo):
    out, _ = demo
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.md", "muted_per_layer.png", "forget_loss.png", "run"}
    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("before", "after", "oracle"):
        assert {"forget_ma", "forget_el10", "retain_ma", "heldout_ppl", "mia_distance"} <= set(metrics[name])
        assert all(0 <= metrics[name][key] <= 1 for key in ("forget_ma", "forget_el10", "retain_ma", "forgotten_fraction"))
    assert set(metrics["thresholds"]) == {"ma", "el10"}
    assert 0 <= metrics["neurons_muted_fraction"] <= 1
    assert (out / "run" / "intervention" / "interventions.safetensors").exists()


def test_the_demo_command_refuses_to_overwrite_its_output(demo, capsys):
    out, _ = demo
    assert main(["demo", "--world", "people", "--size", "tiny", "--out", str(out), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["tpu7", "cuda:0"])
def test_the_demo_command_names_a_device_it_cannot_use_and_writes_nothing(device, tmp_path, capsys):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["demo", "--world", "people", "--size", "tiny", "--device", device, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert repr(device) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_neumuter_program_runs_in_its_own_process_and_fails_in_one_line(tmp_path):
    """``python -m neumuter_interv.cli`` is the installed program (``console_main``: allocator tuned)."""
    result = subprocess.run([sys.executable, "-m", "neumuter_interv.cli", "demo", "--world", "people", "--size", "tiny", "--device", "tpu7",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["neumuter demo: error: unknown device 'tpu7': use cpu, cuda, cuda:N or auto"]
    assert not (tmp_path / "out").exists()


def test_a_warm_run_reads_the_thresholds_and_reference_scores_from_the_world_cache(demo, monkeypatch):
    from neumuter_interv.worlds import people

    tiny = DemoConfig.for_world("people", "tiny")
    settings = dict(el_prefix_stride=tiny.el_prefix_stride, progress=False, log=lambda message: None)
    first = people.prepare_people_world(tiny.world_settings, **settings)
    assert list((first.testbed.root / "scores").glob("reference-*.json"))

    def must_not_run(*args, **kwargs):
        raise AssertionError("reference scores recomputed on a warm run")

    monkeypatch.setattr(people, "evaluate", must_not_run)
    monkeypatch.setattr(people, "thresholds", must_not_run)
    second = people.prepare_people_world(tiny.world_settings, **settings)
    assert second.thresholds == first.thresholds
    assert second.original == first.original and second.oracle == first.oracle


def test_the_demo_refuses_a_missing_forget_document_before_any_work(tmp_path, capsys):
    code = main(["demo", "--forget", str(tmp_path / "no-such-licence.txt"), "--out", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == 2
    assert "no-such-licence.txt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_result_says_what_auto_computed_in_on_the_machine_that_ran_it(demo, monkeypatch):
    """dtype "auto" is bf16 only where the hardware runs it fast, so the same command scores in bf16 on one
    CPU and in fp32 on another: the demo records which, and a report says it beside "auto"."""
    _, summary = demo
    assert summary["precision"] == lm.auto_precision(torch.device("cpu"))
    assert json.loads((demo[0] / "metrics.json").read_text())["precision"] == summary["precision"]
    for fast, resolved in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(lm, "bfloat16_is_fast", lambda device, fast=fast: fast)
        precision = lm.auto_precision(torch.device("cpu"))
        assert precision["auto"] == resolved and precision["hardware"].startswith("CPU (")
        assert lm.describe_precision("auto", precision) == f"auto ({resolved} on {precision['hardware']})"
    assert lm.describe_precision("float32", precision) == "float32"
    assert lm.describe_precision("auto", None) == "auto"  # a result written before the record existed
