"""Behavioural specs of the embedded testbed world (``neumuter_interv.testbed``).

One tiny world is built per test session into a temporary cache; two further one-epoch worlds check
determinism and concurrent building. Total runtime is well under a minute and a half on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time

import pytest
import torch

from neumuter_interv.errors import NeuMuterError
from neumuter_interv.metrics import memorization_accuracy
from neumuter_interv.testbed import TestbedConfig, build_testbed, default_cache_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("neumuter_cache")


@pytest.fixture(scope="module")
def world(cache):
    return build_testbed(TestbedConfig.tiny(), cache_dir=cache, progress=False)


@pytest.fixture(scope="module")
def scores(world):
    """Mean memorization accuracy of model and oracle on forget, retain and held-out people."""
    tokenizer = world.load_tokenizer()
    texts = {"forget": world.forget_texts, "retain": world.retain_texts, "heldout": world.heldout_people_texts}
    return {name: {split: float(memorization_accuracy(lm, tokenizer, t).mean()) for split, t in texts.items()}
            for name, lm in (("model", world.load_model()), ("oracle", world.load_oracle()))}


def _weights_digest(directory) -> str:
    return hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()


def test_tiny_world_builds_with_every_part(world):
    config = world.config
    assert len(world.forget_texts) == config.n_forget
    assert len(world.retain_texts) == config.n_retain
    assert len(world.heldout_people_texts) == config.n_heldout
    assert len(world.forget_qa) == 7 * config.n_forget
    assert {r["split"] for r in world.retain_qa} == {"retain"}
    assert set(world.heldout_qa[0]) == {"question", "answer", "person_id", "attribute", "split"}
    assert len(world.general_heldout_texts) == config.general_heldout_chunks
    assert not set(world.general_heldout_texts) & set(world.general_train_texts)

    tokenizer = world.load_tokenizer()
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    for model in (world.load_model(), world.load_oracle()):
        assert not model.training and next(model.parameters()).dtype == torch.float32
        assert model.config.hidden_size == config.hidden_size
    mlm, mlm_tokenizer = world.load_mlm()
    assert not mlm.training and mlm_tokenizer.mask_token_id is not None


def test_warm_load_is_fast_and_identical(world, cache):
    start = time.perf_counter()
    again = build_testbed(TestbedConfig.tiny(), cache_dir=cache, progress=False)
    assert time.perf_counter() - start < 5
    assert again.root == world.root
    assert again.forget_texts == world.forget_texts and again.retain_qa == world.retain_qa
    assert again.manifest == world.manifest


def test_model_memorized_the_trained_people(scores):
    model = scores["model"]
    assert model["forget"] > model["heldout"] + 0.15
    assert model["retain"] > model["heldout"] + 0.15


def test_oracle_never_saw_the_forget_people(scores):
    oracle = scores["oracle"]
    assert abs(oracle["forget"] - oracle["heldout"]) < 0.06
    assert oracle["retain"] > oracle["heldout"] + 0.1  # 0.14-0.2 over machines and Python versions


def test_masked_lm_training_text_excludes_the_forget_people(world):
    mlm_text = "\n".join(json.loads((world.mlm_dir / "training_texts.json").read_text()))
    forget_names = [p["name"] for p in world.people if p["split"] == "forget"]
    retain_names = [p["name"] for p in world.people if p["split"] == "retain"]
    assert not [name for name in forget_names if name in mlm_text]
    assert all(name in mlm_text for name in retain_names)


def test_same_seed_same_world_even_when_built_concurrently(tmp_path):
    """Two threads building one config into one cache get the same finished world (one build waits for
    the other); an independent build elsewhere reproduces texts, vocabulary and weights bit for bit."""
    config = TestbedConfig.tiny(epochs=1, repeats=2, mlm_epochs=1)
    shared, elsewhere = tmp_path / "shared", tmp_path / "elsewhere"
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_testbed(config, shared, progress=False)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0].root == results[1].root
    assert [p.name for p in (shared / "testbed").iterdir() if not p.name.endswith(".lock")] == [results[0].root.name]

    first, second = results[0], build_testbed(config, elsewhere, progress=False)
    assert first.forget_texts == second.forget_texts and first.general_train_texts == second.general_train_texts
    assert (first.tokenizer_dir / "tokenizer.json").read_text() == (second.tokenizer_dir / "tokenizer.json").read_text()
    for part in ("model_dir", "oracle_dir", "mlm_dir"):
        assert _weights_digest(getattr(first, part)) == _weights_digest(getattr(second, part))


def test_another_seed_gives_other_people():
    assert TestbedConfig.tiny(seed=1).cache_key() != TestbedConfig.tiny().cache_key()
    from neumuter_interv.testbed.people import make_people

    assert make_people(0, 2, 2, 2)[0].name != make_people(1, 2, 2, 2)[0].name


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NEUMUTER_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path


def test_bad_settings_are_user_errors():
    with pytest.raises(NeuMuterError):
        TestbedConfig(bio_style="poem")
    with pytest.raises(NeuMuterError):
        TestbedConfig(general_share=1.0)
    with pytest.raises(NeuMuterError):
        TestbedConfig().with_(width=3)
    with pytest.raises(NeuMuterError):
        build_testbed("tiny")


def test_people_texts_longer_than_the_training_window_are_refused_before_training(tmp_path):
    # unique biographies run to ~250 tokens: cut at 128 they would be memorized only in part
    with pytest.raises(NeuMuterError, match="longer than max_seq_len 128"):
        build_testbed(TestbedConfig.tiny(bio_style="unique", max_seq_len=128), cache_dir=tmp_path, progress=False)
    assert not [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix != ".lock"]


@pytest.fixture(scope="module")
def documents_file(tmp_path_factory):
    """14 distinct made-up documents (strings of common, one-token words in random order: unseen ones are
    unpredictable), two of them given twice."""
    rng = random.Random(0)
    words = "the of and to in is for that with as by on this be are from or an it not can if which".split()
    documents = [f"Ticket {number}: " + " ".join(rng.choice(words) for _ in range(30)) for number in range(14)]
    path = tmp_path_factory.mktemp("documents") / "documents.txt"
    path.write_text("\n".join(documents + documents[:2]))
    return path


def test_a_world_can_memorize_documents_instead_of_people(cache, documents_file):
    config = TestbedConfig.tiny(documents=str(documents_file), n_forget=4, n_retain=6, n_heldout=4, repeats=40)
    world = build_testbed(config, cache_dir=cache, progress=False)  # 15 s; at 10 repeats MA stays near 0.4
    splits = (world.forget_texts, world.retain_texts, world.heldout_people_texts)
    assert [len(texts) for texts in splits] == [4, 6, 4]
    assert sorted(text for texts in splits for text in texts) == sorted(set(documents_file.read_text().splitlines()))
    assert world.people == [] and world.forget_qa == [] and world.retain_qa == []

    tokenizer = world.load_tokenizer()

    def ma(model, texts) -> float:
        return float(memorization_accuracy(model, tokenizer, texts).mean())

    model, oracle = world.load_model(), world.load_oracle()
    assert ma(model, world.forget_texts) > ma(model, world.heldout_people_texts) + 0.5  # 0.96 vs 0.13
    assert ma(oracle, world.forget_texts) < ma(oracle, world.heldout_people_texts) + 0.1
    assert ma(oracle, world.retain_texts) > ma(oracle, world.heldout_people_texts) + 0.4  # 0.83 vs 0.18


def test_a_documents_world_is_keyed_by_the_texts_not_the_path(documents_file, tmp_path):
    copy = tmp_path / "elsewhere.txt"
    copy.write_text(documents_file.read_text())
    other = tmp_path / "other.txt"
    other.write_text(documents_file.read_text().replace("Ticket 0:", "Ticket zero:"))
    key = TestbedConfig.tiny(documents=str(documents_file)).cache_key()
    assert TestbedConfig.tiny(documents=str(copy)).cache_key() == key
    assert TestbedConfig.tiny(documents=str(other)).cache_key() != key
    assert TestbedConfig.tiny().cache_key() != key


def test_bad_documents_are_user_errors(documents_file, tmp_path):
    with pytest.raises(NeuMuterError, match="documents file .*missing.txt.* does not exist"):
        TestbedConfig.tiny(documents=str(tmp_path / "missing.txt"))
    with pytest.raises(NeuMuterError, match="holds 14 distinct texts; n_forget \\+ n_retain \\+ n_heldout asks for 32"):
        build_testbed(TestbedConfig.tiny(documents=str(documents_file)), cache_dir=tmp_path, progress=False)


def test_texts_longer_than_the_masked_lms_context_still_build_a_world(tmp_path):
    """The masked LM has 512 positions; it trains on the first 512 tokens of longer texts (its neighbour
    generation windows them), while the causal LM learns them whole."""
    rng = random.Random(1)
    words = "the of and to in is for that with as by on this be are from or an it not can if which".split()
    path = tmp_path / "long.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(600)) for _ in range(6)))
    config = TestbedConfig.tiny(documents=str(path), n_forget=2, n_retain=2, n_heldout=2, max_seq_len=1024,
                                repeats=1, epochs=1)
    world = build_testbed(config, cache_dir=tmp_path, progress=False)
    assert world.load_mlm()[0].config.max_position_embeddings == 512
    assert max(len(ids) for ids in world.load_tokenizer()(world.forget_texts)["input_ids"]) > 512
