"""The extraction world at the reduced size: a tiny pretrained model (the tiny testbed's GPT-Neo) continued-
pretrained on the paper's extraction samples and Pile validation rows (``../shared/data/knowledge-unlearning``),
with its retrain oracle. Skipped, with the reason, where the shared data is absent."""

import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, SHARED_DATA
from safetensors.torch import load_file

from neumuter_interv.cli import main
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.metrics import suffix_extraction
from neumuter_interv.worlds.extraction import (
    ExtractionWorldConfig,
    prepare_extraction_world,
    read_extraction_samples,
    training_texts,
)

DATA = SHARED_DATA / "knowledge-unlearning"
if not (DATA / "main" / "lm_extraction_4_0.csv").is_file():
    pytest.skip(f"needs knowledge-unlearning's data at {DATA}", allow_module_level=True)

QUIET = dict(progress=False, log=lambda message: None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("extraction-cache")


@pytest.fixture(scope="module")
def world(base_dir, cache):
    return prepare_extraction_world(ExtractionWorldConfig.tiny(base_dir, str(DATA)), cache_dir=cache, **QUIET)


def trained_on(directory) -> list[str]:
    return json.loads((directory / "training_texts.json").read_text())


def test_the_forget_samples_are_the_forget_files_distinct_texts():
    assert len(read_extraction_samples(DATA / "main" / "lm_extraction_32_0.csv")) == 32
    assert len(read_extraction_samples(DATA / "main" / "lm_extraction_4_0.csv")) == 4


def test_the_model_memorized_its_samples_and_the_oracle_did_not_memorize_the_forget_samples(world):
    original, oracle = world.original, world.oracle
    assert len(world.forget_texts) == 4 and len(world.data.retain_texts) == 4
    assert original["forget_ma"] > world.thresholds["ma"] + 0.3, "memorized far above held-out Pile rows"
    assert original["forget_ma"] > oracle["forget_ma"] + 0.3, "only the model trained on them"
    assert oracle["retain_ma"] > world.thresholds["ma"] + 0.3, "both trained on the retain-memorized samples"
    assert original["heldout_ma"] == pytest.approx(world.thresholds["ma"])
    assert 0 <= original["forget_quality"] < 0.5, "the original's forget losses differ from the oracle's"


def test_the_original_reproduces_its_forget_samples_from_a_prefix_and_the_oracle_does_not(world):
    from transformers import AutoModelForCausalLM

    def extracted(model):
        return suffix_extraction(model, world.tokenizer, world.forget_texts, prefix_tokens=16, suffix_tokens=24)

    original, oracle = extracted(world.load_model()), extracted(AutoModelForCausalLM.from_pretrained(world.oracle_dir))
    assert original.shape == (4,) and float(original.mean()) > float(oracle.mean()) + 0.15
    with pytest.raises(NeuMuterError, match="fewer than 90 tokens"):
        suffix_extraction(world.load_model(), world.tokenizer, world.forget_texts, prefix_tokens=42)


def test_the_oracle_never_saw_a_forget_sample_and_no_model_saw_a_scored_pile_row(world):
    model, oracle = trained_on(world.model_dir), trained_on(world.oracle_dir)
    assert set(world.forget_texts) <= set(model) and not set(world.forget_texts) & set(oracle)
    assert set(world.data.retain_texts) <= set(oracle) and set(world.texts["general_trained"]) <= set(oracle)
    for scored in (world.data.heldout_texts, world.data.general_texts):
        assert not set(scored) & (set(model) | set(oracle)), "held-out and general rows are never trained on"
    assert len(model) == len(oracle) + len(world.forget_texts) * world.config.sample_repeats
    assert not set(world.forget_texts) & set(world.data.retain_texts)


def test_the_same_settings_build_the_same_world_again(world, base_dir, tmp_path):
    again = prepare_extraction_world(ExtractionWorldConfig.tiny(base_dir, str(DATA)), cache_dir=tmp_path, **QUIET)
    assert again.root.name == world.root.name and again.texts == world.texts
    for name in ("model", "oracle"):
        first, second = (load_file(w.root / name / "model.safetensors") for w in (world, again))
        assert all(torch.equal(first[key], second[key]) for key in first), f"the {name} trains the same"
    assert again.original["forget_ma"] == world.original["forget_ma"]
    other_seed = ExtractionWorldConfig.tiny(base_dir, str(DATA), seed=1)
    assert training_texts(world.texts, other_seed, oracle=False) != trained_on(world.model_dir)


def test_missing_data_is_refused_in_one_line_before_the_model_loads(tmp_path):
    with pytest.raises(NeuMuterError, match="--extraction-data DIR"):
        prepare_extraction_world(ExtractionWorldConfig(base=str(tmp_path / "no-model")), cache_dir=tmp_path, **QUIET)
    with pytest.raises(NeuMuterError, match="lm_extraction_9_0.csv does not exist"):
        prepare_extraction_world(ExtractionWorldConfig(data_dir=str(DATA), forget_file="lm_extraction_9_0.csv",
                                                       base=str(tmp_path / "no-model")), cache_dir=tmp_path, **QUIET)
    (tmp_path / "main").mkdir()
    (tmp_path / "validation_data").mkdir()
    (tmp_path / "main" / "lm_extraction_32_0.csv").write_text("doc_id,body\n1,hello\n")
    (tmp_path / "validation_data" / "pile.csv").write_text("text\nhello\n")
    with pytest.raises(NeuMuterError, match="no 'text' column"):
        read_extraction_samples(tmp_path / "main" / "lm_extraction_32_0.csv")


def test_compare_runs_every_method_to_the_rule_scores_forget_quality_and_quotes_the_papers_rows(base_dir, cache,
                                                                                                tmp_path, monkeypatch):
    monkeypatch.setenv("NEUMUTER_CACHE", str(cache))  # the world the fixture built
    out = tmp_path / "compare"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["compare", "--world", "extraction", "--size", "tiny", "--extraction-base", base_dir,
                     "--extraction-data", str(DATA), "--methods", "neumuter,ga,gd", "--out", str(out),
                     "--no-progress"])
    assert code == 0
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["world"] == "extraction" and summary["retrain_oracle"] is not None
    assert list(summary["methods"]) == ["neumuter", "ga", "gd"]
    for name, entry in summary["methods"].items():
        assert "forget_quality" in entry["evaluation"], name
    report = (out / "comparison.md").read_text()
    assert "forget quality" in report
    # the paper's GPT-Neo 125M rows of Table 2 beside ours, for the methods both have (TOFU-style worlds have none)
    assert set(summary["paper_rows"]["rows"]) >= {"original", "neumuter", "ga", "di"}
    beside = report.split("## Beside the paper's rows")[1]
    assert "| NeuMuter |" in beside and "| GA |" in beside and "| GD" not in beside
    assert "0.2863" in beside  # NeuMuter's MA in the paper, 28.63%


def test_the_extraction_options_belong_to_the_extraction_world(tmp_path, capsys):
    code = main(["compare", "--world", "real", "--extraction-data", str(DATA), "--out", str(tmp_path / "x")])
    assert code == 2 and "--extraction-data applies to the extraction world" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_layer_study_runs_on_the_extraction_world_with_its_options(world, base_dir, cache, tmp_path):
    out = tmp_path / "layers"
    subprocess.run([sys.executable, str(REPO / "recipes" / "layer_selection_study.py"), "--world", "extraction",
                    "--size", "tiny", "--extraction-base", base_dir, "--extraction-data", str(DATA), "--specs", "all;0",
                    "--out", str(out)], env={**os.environ, "NEUMUTER_CACHE": str(cache)}, check=True, cwd=REPO,
                   capture_output=True, text=True, timeout=600)
    study = json.loads((out / "layer_study.json").read_text())
    assert list(study["specs"]) == ["all", "0"] and study["original"]["forget_ma"] == world.original["forget_ma"]
    assert set(study["specs"]["0"]["muted_per_layer"]) <= {"0"}, "a single-layer mask mutes only there"


def test_the_forget_size_study_forgets_the_first_samples_of_the_same_model(world, base_dir, cache, tmp_path):
    out = tmp_path / "sizes"
    options = ["--world", "extraction", "--size", "tiny", "--extraction-base", base_dir, "--extraction-data", str(DATA)]
    run = subprocess.run([sys.executable, str(REPO / "recipes" / "sensitivity_study.py"), "--study", "forget-size",
                          "--values", "1,4", *options, "--out", str(out)], env={**os.environ, "NEUMUTER_CACHE": str(cache)},
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    study = json.loads((out / "sensitivity.json").read_text())
    assert study["world_name"] == "extraction" and list(study["runs"]) == ["1", "4"]
    assert "rest_of_forget_ma" in study["runs"]["1"]["after"] and "rest_of_forget_ma" not in study["runs"]["4"]["after"]
    assert study["runs"]["4"]["original"]["forget_ma"] == world.original["forget_ma"]
    # more samples than the forget file holds: refused before any model is built, in one line
    refused = subprocess.run([sys.executable, str(REPO / "recipes" / "sensitivity_study.py"), "--study", "forget-size",
                              "--values", "1,5", *options, "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "NEUMUTER_CACHE": str(tmp_path / "empty")})
    assert refused.returncode == 2 and not (tmp_path / "x").exists() and not (tmp_path / "empty").exists()
    assert refused.stderr.strip().splitlines() == [
        "sensitivity_study.py: error: the extraction world holds at most 4 forget samples; --values asks for 5"]
