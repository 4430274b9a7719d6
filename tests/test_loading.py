"""Loading models: a GGUF file is dequantized once and served from a safetensors cache afterwards."""

import pytest
import torch
from conftest import write_tiny_llama_gguf

from neumuter_interv import loading
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.loading import load_causal_lm
from neumuter_interv.metrics import progress_bars


def _logits(model):
    with torch.no_grad():
        return model(torch.tensor([[3, 4, 5, 6, 30]])).logits


def test_a_gguf_is_dequantized_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    (tmp_path / "model").mkdir()
    write_tiny_llama_gguf(tmp_path / "model" / "tiny.gguf")
    model, tokenizer = load_causal_lm(str(tmp_path / "model"), gguf_file="tiny.gguf", cache_dir=tmp_path / "cache")
    entries = list((tmp_path / "cache" / "gguf").glob("tiny-*/model.safetensors"))
    assert len(entries) == 1 and model.config.model_type == "llama"

    def must_not_dequantize(*args, **kwargs):
        raise AssertionError("dequantized again although the cache holds this GGUF")

    monkeypatch.setattr(loading, "_dequantize", must_not_dequantize)
    again, tokenizer_again = load_causal_lm(str(tmp_path / "model"), gguf_file="tiny.gguf", cache_dir=tmp_path / "cache")
    assert torch.equal(_logits(model), _logits(again))
    assert tokenizer("ab c")["input_ids"] == tokenizer_again("ab c")["input_ids"]


def test_a_changed_gguf_gets_a_fresh_cache_entry(tmp_path):
    (tmp_path / "model").mkdir()
    write_tiny_llama_gguf(tmp_path / "model" / "tiny.gguf", seed=0)
    first, _ = load_causal_lm(str(tmp_path / "model"), gguf_file="tiny.gguf", cache_dir=tmp_path / "cache")
    write_tiny_llama_gguf(tmp_path / "model" / "tiny.gguf", seed=1)  # same name, other weights
    second, _ = load_causal_lm(str(tmp_path / "model"), gguf_file="tiny.gguf", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "gguf").glob("tiny-*/source.json"))) == 2
    assert not torch.allclose(_logits(first), _logits(second))


def test_the_cached_checkpoint_equals_the_gguf_as_transformers_reads_it(tmp_path):
    from transformers import AutoModelForCausalLM

    (tmp_path / "model").mkdir()
    write_tiny_llama_gguf(tmp_path / "model" / "tiny.gguf")
    direct = AutoModelForCausalLM.from_pretrained(tmp_path / "model", gguf_file="tiny.gguf")
    cached, _ = load_causal_lm(str(tmp_path / "model"), gguf_file="tiny.gguf", cache_dir=tmp_path / "cache")
    assert torch.equal(_logits(direct), _logits(cached))


def test_a_broken_gguf_is_a_clear_error(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(NeuMuterError, match="broken.gguf"):
        load_causal_lm(str(tmp_path / "model"), gguf_file="broken.gguf", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "gguf").glob("broken-*/source.json"))


@pytest.mark.parametrize("progress", [True, False])
def test_the_dequantization_bar_follows_the_progress_switch(tmp_path, capsys, progress):
    """``--no-progress`` (and any library call) silences transformers' own GGUF bar too; the CLI's bars
    show it."""
    (tmp_path / "model").mkdir()
    write_tiny_llama_gguf(tmp_path / "model" / "tiny.gguf")
    with progress_bars(progress):
        load_causal_lm(str(tmp_path / "model"), gguf_file="tiny.gguf", cache_dir=tmp_path / "cache")
    assert ("de-quantizing GGUF" in capsys.readouterr().err) == progress


def test_a_tensor_too_long_for_float32_steps_is_fingerprinted():
    """SmolLM2's embedding (49,152 x 576) has more elements than float32 counts exactly: the evenly spaced
    sample stays inside it."""
    model = torch.nn.Embedding(49152, 576)
    assert loading.model_fingerprint(model)["class"] == "Embedding"
