"""The cache is checked when read: an entry that does not match what was written (truncated, edited, zeroed)
is rebuilt with one line saying so, never used silently or left to fail with a traceback. What "auto"
precision resolved to on the machine is part of every key, so a cache shared by a machine with fast bf16 and
one without never serves one's models or scores as the other's."""

import json
from pathlib import Path

import pytest
import torch

from neumuter_interv import cache, lm
from neumuter_interv.cache import build_cache_entry, cached_json
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.evaluation import EvaluationSet
from neumuter_interv.worlds.base import cached_reference_scores
from neumuter_interv.worlds.finetuned import build_key


def build_weights(staging):
    (staging / "config.json").write_text('{"layers": 2}')
    (staging / "model.safetensors").write_bytes(bytes(range(256)) * 64)


@pytest.fixture
def entry(tmp_path):
    target = tmp_path / "entry"
    assert build_cache_entry(target, "config.json", build_weights)
    return target


def fresh_process(monkeypatch):
    """A later command: nothing hashed yet in this process."""
    monkeypatch.setattr(cache, "_VERIFIED", set())


def test_an_intact_entry_is_read_not_rebuilt(entry, monkeypatch, capsys):
    fresh_process(monkeypatch)
    assert not build_cache_entry(entry, "config.json", lambda _: pytest.fail("rebuilt an intact entry"))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("damage", ["truncate", "zero", "edit", "delete", "no manifest"])
def test_a_damaged_entry_is_rebuilt_with_one_line(entry, damage, monkeypatch, capsys):
    weights = entry / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "zero":  # same size, other content: only the hash sees it
        weights.write_bytes(bytes(weights.stat().st_size))
    elif damage == "edit":
        (entry / "config.json").write_text('{"layers": 3}')
    elif damage == "delete":
        weights.unlink()
    else:
        (entry / cache.MANIFEST).unlink()
    fresh_process(monkeypatch)
    capsys.readouterr()
    assert build_cache_entry(entry, "config.json", build_weights)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cache entry {entry}" in err[0] and "rebuilding it" in err[0]
    assert weights.read_bytes() == bytes(range(256)) * 64
    assert not build_cache_entry(entry, "config.json", lambda _: pytest.fail("rebuilt twice"))


def test_files_added_to_an_entry_after_its_build_are_not_damage(entry, monkeypatch):
    (entry / "scores").mkdir()
    cached_json(entry / "scores" / "reference.json", lambda: {"ma": 0.5})  # a world's scores, checked on their own
    fresh_process(monkeypatch)
    assert not build_cache_entry(entry, "config.json", lambda _: pytest.fail("rebuilt for an added file"))
    assert (entry / "scores" / "reference.json").is_file()


def test_a_json_entry_is_computed_once(tmp_path):
    path = tmp_path / "scores" / "reference.json"
    assert cached_json(path, lambda: {"ma": 0.5, "nan": float("nan")}) == {"ma": 0.5, "nan": None}
    assert cached_json(path, lambda: pytest.fail("computed twice")) == {"ma": 0.5, "nan": None}


@pytest.mark.parametrize("damage", ["truncate", "edit", "not json"])
def test_a_damaged_json_entry_is_computed_again(tmp_path, damage, capsys):
    path = tmp_path / "reference.json"
    cached_json(path, lambda: {"threshold": 0.39})
    stored = json.loads(path.read_text())
    if damage == "truncate":
        path.write_text(path.read_text()[:20])
    elif damage == "edit":  # still valid JSON, with a rewritten threshold
        path.write_text(json.dumps({**stored, "data": {"threshold": 0.99}}))
    else:
        path.write_text("\0\0\0")
    capsys.readouterr()
    assert cached_json(path, lambda: {"threshold": 0.39}) == {"threshold": 0.39}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "computing it again" in err[0]


@pytest.mark.parametrize("where", ["a file", "/proc"])
def test_a_cache_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, where):
    root = tmp_path / "not-a-directory" if where == "a file" else Path("/proc/neumuter-cache")
    if where == "a file":
        root.write_text("x")
    monkeypatch.setenv("NEUMUTER_CACHE", str(root))
    with pytest.raises(NeuMuterError, match="the cache cannot hold .* set NEUMUTER_CACHE to a writable directory"):
        build_cache_entry(cache.default_cache_dir() / "testbed" / "entry", "config.json", build_weights)
    with pytest.raises(NeuMuterError, match="the cache cannot hold"):
        cached_json(cache.default_cache_dir() / "scores" / "x.json", lambda: {"a": 1})


def machine(monkeypatch, bf16: bool) -> torch.device:
    """The CPU of a machine with (or without) fast bf16: what ``dtype="auto"`` resolves to there."""
    monkeypatch.setattr(lm, "bfloat16_is_fast", lambda device: bf16)
    return torch.device("cpu")


def test_a_world_trained_in_auto_precision_is_keyed_by_what_auto_resolved_to(monkeypatch):
    settings = {"epochs": 3, "train_dtype": "auto"}
    with_bf16 = build_key(1, "base", settings, machine(monkeypatch, True), "auto")
    without = build_key(1, "base", settings, machine(monkeypatch, False), "auto")
    assert with_bf16 != without  # bf16 autocast and fp32 train two different models
    assert build_key(1, "base", settings, machine(monkeypatch, False), "float32") == without
    assert build_key(1, "base", settings, machine(monkeypatch, True), "float32") == without


def test_reference_scores_computed_in_auto_precision_are_keyed_by_what_auto_resolved_to(tmp_path, monkeypatch):
    data = EvaluationSet(["forget"], ["heldout"], settings={"el_n": 10, "dtype": "auto"})
    computed = []

    def compute(label):
        return lambda: computed.append(label) or {"thresholds": {"ma": label}}

    assert cached_reference_scores(tmp_path, data, machine(monkeypatch, True), compute(1))["thresholds"]["ma"] == 1
    assert cached_reference_scores(tmp_path, data, machine(monkeypatch, True), compute(2))["thresholds"]["ma"] == 1
    assert cached_reference_scores(tmp_path, data, machine(monkeypatch, False), compute(3))["thresholds"]["ma"] == 3
    assert computed == [1, 3]
