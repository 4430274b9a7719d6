"""The TOFU-style world at the reduced size: a tiny pretrained model (the tiny testbed's GPT-Neo, saved
with its tokenizer as a local checkpoint) fine-tuned on fictitious people, with its retrain oracle."""

import importlib.util
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from neumuter_interv.cli import main
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.worlds.tofu import TofuWorldConfig, prepare_tofu_world

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tofu-cache")


@pytest.fixture(scope="module")
def world(base_dir, cache):
    return prepare_tofu_world(TofuWorldConfig.tiny(base_dir), cache_dir=cache, progress=False, log=lambda _: None)


def test_splits_are_tofus_percentages_with_at_least_two_people():
    config = TofuWorldConfig(n_people=60)
    assert [config.forget_count(p) for p in (1, 5, 10)] == [2, 3, 6]
    assert TofuWorldConfig(n_people=200).forget_count(5) == 10


def test_the_model_learned_the_people_and_the_oracle_did_not_learn_the_forget_people(world):
    original, oracle = world.original, world.oracle
    assert len(world.forget_texts) == 2  # 10% of 20 people
    assert original["forget_ma"] > oracle["forget_ma"] + 0.1  # only the model trained on them
    assert original["retain_ma"] > world.thresholds["ma"]  # both trained on the retain people...
    assert oracle["retain_ma"] > world.thresholds["ma"]
    assert original["forget_truth_ratio"] < oracle["forget_truth_ratio"]  # ...the oracle has no preference


def test_scores_are_tofus(world):
    scores = world.original
    for name in ("retain_probability", "retain_rouge_l", "retain_truth_ratio", "general_ppl_ratio", "model_utility"):
        assert 0 <= scores[name] <= 1, name
    assert scores["model_utility"] <= min(scores[name] for name in ("retain_probability", "retain_rouge_l",
                                                                    "retain_truth_ratio", "general_ppl_ratio")) * 4
    assert len(scores["per_sample"]["forget_truth_ratio"]) == 2 * 7  # 7 questions per forget person
    assert scores["log10_forget_quality"] < 0  # the original differs from the oracle
    assert world.evaluate(world.load_model())["forget_quality"] == pytest.approx(scores["forget_quality"])


def test_the_oracle_is_trained_without_exactly_the_forget_people(world):
    training = json.loads((world.oracle_dir() / "training.json").read_text())
    full = json.loads((world.model_dir / "training.json").read_text())
    assert full["sequences"] - training["sequences"] == 2 * (1 + 7)  # biography and 7 QA pairs per forget person
    assert not set(world.forget_texts) & set(world.retain_texts)


def test_each_qa_pair_is_fine_tuned_as_its_own_text_in_the_form_it_is_asked(world):
    """TOFU trains every question/answer pair as one example; the probes ask ``Question: ... Answer:``."""
    asked = [record["question"] + record["answer"] for record in world.data.retain_qa]
    assert asked and set(asked) <= set(world.retain_texts)  # the retain set is what the model was fine-tuned on
    assert set(world.data.retain_texts) <= set(world.retain_texts)  # with the scored biographies
    lengths = [len(ids) for ids in world.tokenizer(world.retain_texts)["input_ids"]]
    assert max(lengths) < world.config.max_seq_len  # nothing cut: each text trains whole


def test_splits_nest_and_share_the_fine_tuned_model(world, base_dir, cache):
    bigger = prepare_tofu_world(TofuWorldConfig.tiny(base_dir, n_people=40, forget_percent=10, epochs=1),
                                cache_dir=cache, progress=False, log=lambda _: None)
    smaller = TofuWorldConfig.tiny(base_dir, n_people=40, forget_percent=5, epochs=1)
    assert smaller.forget_count() == 2 and bigger.config.forget_count() == 4
    again = prepare_tofu_world(smaller, cache_dir=cache, progress=False, log=lambda _: None)
    assert again.root == bigger.root  # one fine-tuned model, one oracle per split
    assert again.forget_texts == bigger.forget_texts[:2]
    assert again.oracle_dir().name == "oracle-forget05" and again.oracle_dir().exists()


def test_bad_settings_are_refused_before_any_work(base_dir):
    with pytest.raises(NeuMuterError, match="forget_percent"):
        TofuWorldConfig.tiny(base_dir, forget_percent=3)
    with pytest.raises(NeuMuterError, match="perturbed_answers"):
        TofuWorldConfig.tiny(base_dir, perturbed_answers=9)
    with pytest.raises(NeuMuterError, match="eval_retain_people"):
        TofuWorldConfig.tiny(base_dir, n_people=5)
    with pytest.raises(NeuMuterError, match="cannot load"):
        prepare_tofu_world(TofuWorldConfig.tiny(base_dir + "-missing"), progress=False, log=lambda _: None)


def test_demo_compare_and_table13_run_on_the_tofu_world(world, base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NEUMUTER_CACHE", str(world.root.parent.parent))  # the world the fixture built
    common = ["--world", "tofu-real", "--size", "tiny", "--base", base_dir, "--no-progress"]
    assert main(["demo", *common, "--out", str(tmp_path / "demo")]) in (0, 1)
    demo = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert demo["world"] == "tofu-real" and "model_utility" in demo["after"] and "oracle" in demo
    assert (tmp_path / "demo" / "report.md").read_text().startswith("# NeuMuter on the TOFU-style world")
    assert main(["compare", *common, "--methods", "neumuter,attribution,gd", "--out", str(tmp_path / "compare")]) == 0
    report = (tmp_path / "compare" / "comparison.md").read_text()
    assert "model utility (TOFU)" in report and "truth ratios (Eq. 19)" in report

    # Table 13 from one run per split of the same world (forget 5% is also 2 of the 20 people, its own oracle)
    assert main(["compare", *common, "--forget-percent", "5", "--methods", "ga", "--out", str(tmp_path / "c5")]) == 0
    table = run_table13(str(tmp_path / "compare"), str(tmp_path / "c5"), "--out", str(tmp_path / "t13"))
    assert table.returncode == 0, table.stderr
    summary = json.loads((tmp_path / "t13" / "table13.json").read_text())
    assert list(summary["splits"]) == ["forget05", "forget10"]  # sorted by split, whatever the argument order
    models = summary["splits"]["forget10"]["models"]
    assert list(models) == ["original", "retrain oracle", "NeuMuter", "attribution baseline†", "GD†"]
    assert all("error" not in entry for entry in models.values())
    assert models["retrain oracle"]["log10_forget_quality"] == 0.0  # the oracle against itself
    assert models["original"]["log10_forget_quality"] >= summary["splits"]["forget10"]["log10_forget_quality_floor"]
    assert (tmp_path / "t13" / "forget_quality.png").stat().st_size > 0
    assert "| 5% | GA |" in (tmp_path / "t13" / "table13.md").read_text()

    other_world = json.loads((tmp_path / "c5" / "comparison.json").read_text())
    other_world["settings"]["tofu-real"]["epochs"] += 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "comparison.json").write_text(json.dumps(other_world))
    refused = run_table13(str(tmp_path / "compare"), str(tmp_path / "other"), "--out", str(tmp_path / "t13b"))
    assert refused.returncode == 2 and "differ in epochs" in refused.stderr and not (tmp_path / "t13b").exists()
    other_build = json.loads((tmp_path / "c5" / "comparison.json").read_text())
    other_build["provenance"]["build"] = "0" * 20  # same settings, a world built another way (BUILD_VERSION)
    (tmp_path / "other" / "comparison.json").write_text(json.dumps(other_build))
    refused = run_table13(str(tmp_path / "compare"), str(tmp_path / "other"), "--out", str(tmp_path / "t13b"))
    assert refused.returncode == 2 and "differ in build" in refused.stderr
    del other_build["provenance"]["build"]
    (tmp_path / "other" / "comparison.json").write_text(json.dumps(other_build))
    refused = run_table13(str(tmp_path / "compare"), str(tmp_path / "other"), "--out", str(tmp_path / "t13b"))
    assert refused.returncode == 2 and "does not record which build" in refused.stderr
    missing = run_table13(str(tmp_path / "nowhere"), "--out", str(tmp_path / "t13c"))
    assert missing.returncode == 2 and "holds no readable comparison.json" in missing.stderr


def run_table13(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "recipes" / "tofu_table13.py"), *args], capture_output=True,
                          text=True, timeout=120)


def test_tofu_options_are_refused_elsewhere_and_tiny_needs_a_base(tmp_path, capsys):
    assert main(["demo", "--world", "people", "--forget-percent", "5", "--out", str(tmp_path / "x")]) == 2
    assert "--forget-percent applies to the tofu-real world, not the people world" in capsys.readouterr().err
    assert main(["compare", "--world", "tofu-real", "--size", "tiny", "--out", str(tmp_path / "y")]) == 2
    assert "needs --base" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_separability_study_measures_the_tofu_world_like_the_testbed_worlds(world, base_dir, monkeypatch):
    """``recipes/separability_study.py`` on a tofu-real variant: attribution ratios against their null, and
    the four masks with their forget and retain drops, on the same world the fixture built."""
    spec = importlib.util.spec_from_file_location("separability_study", ROOT / "recipes" / "separability_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    monkeypatch.setenv("NEUMUTER_CACHE", str(world.root.parent.parent))
    result = study.study_variant("tofu-tiny", {"world": "tofu-real", **asdict(world.config)})
    assert result["cache_key"] == world.root.name and result["tofu"]["n_people"] == 20
    assert result["build_seconds"] > 0  # the model's and the oracle's fine-tunes
    assert result["before"]["forget_ma"] == world.original["forget_ma"]
    assert 1.0 <= result["attribution_ratio"]["q99.9"] <= result["attribution_ratio"]["max"]
    assert set(result["masks"]) == {"neumuter_threshold", "neumuter_budget", "forget_attribution_budget",
                                    "ratio_budget"}
    for mask in ("neumuter_budget", "forget_attribution_budget", "ratio_budget"):
        assert result["masks"][mask]["neurons_muted_fraction"] == pytest.approx(study.BUDGET, abs=0.01)
        assert len(result["masks"][mask]["retain_half_drops"]) == 2
    assert "tofu-tiny" in study.report({"tofu-tiny": result})
