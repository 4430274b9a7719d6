"""Build (or load from cache) the embedded testbed world: corpus, people, tokenizers and three models.

The world is a pure function of ``TestbedConfig`` (and the library versions in its cache key). It is
built into a temporary directory next to its final place and renamed into place in one atomic step,
under a file lock, so concurrent pytest-xdist workers wait for one build instead of racing; a reader
never sees a half-written world. A directory counts as built only once ``manifest.json`` exists.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    GPTNeoConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..cache import build_cache_entry, default_cache_dir
from ..data import read_texts
from ..errors import NeuMuterError
from ..lm import resolve_device
from ..metrics import memorization_accuracy
from .config import TestbedConfig
from .corpus import general_corpus
from .people import biography, make_people, qa_document, qa_pairs
from .tokenization import train_causal_tokenizer, train_wordpiece_tokenizer
from .training import train_causal_lm, train_masked_lm

_TEXT_LISTS = ("forget_texts", "retain_texts", "heldout_people_texts", "general_train_texts",
               "general_heldout_texts")
_QA_LISTS = ("forget_qa", "retain_qa", "heldout_qa")


@dataclass
class Testbed:
    """A built world: where its parts live on disk, its texts, and loaders for its models.

    ``forget_texts``/``retain_texts`` are the biographies exactly as trained (one per person);
    ``heldout_people_texts`` are biographies of people no model saw (the "not memorized" level, e.g.
    for the paper's Eq. 17 threshold); with ``TestbedConfig.documents`` the three lists hold documents
    instead, and there are no QA records or people. QA records are dicts with ``question``, ``answer``, ``person_id``,
    ``attribute`` and ``split``. ``people`` holds every person's attributes; ``manifest`` the build time,
    training-set sizes and the memorization accuracy each model reached.
    """

    __test__ = False  # not a pytest test class despite the name

    config: TestbedConfig
    root: Path
    forget_texts: list[str]
    retain_texts: list[str]
    heldout_people_texts: list[str]
    general_train_texts: list[str]
    general_heldout_texts: list[str]
    forget_qa: list[dict]
    retain_qa: list[dict]
    heldout_qa: list[dict]
    people: list[dict]
    manifest: dict = field(repr=False)

    @property
    def model_dir(self) -> Path:
        """The memorizing GPT-Neo (trained on general text + forget + retain people; with
        ``inject_epochs``, the oracle fine-tuned on the forget people)."""
        return self.root / "model"

    @property
    def oracle_dir(self) -> Path:
        """The retrain oracle: same recipe and seed, forget people left out."""
        return self.root / "oracle"

    @property
    def mlm_dir(self) -> Path:
        """The BERT masked LM, its WordPiece tokenizer and ``training_texts.json``, the exact text it was
        trained on (general corpus + retain people: never the forget people)."""
        return self.root / "mlm"

    @property
    def tokenizer_dir(self) -> Path:
        """The byte-level BPE tokenizer shared by model and oracle (left padding, ``<|pad|>``)."""
        return self.root / "tokenizer"

    def load_model(self) -> PreTrainedModel:
        return _load(AutoModelForCausalLM, self.model_dir)

    def load_oracle(self) -> PreTrainedModel:
        return _load(AutoModelForCausalLM, self.oracle_dir)

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(self.tokenizer_dir)

    def load_mlm(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The masked LM and its own tokenizer."""
        return _load(AutoModelForMaskedLM, self.mlm_dir), AutoTokenizer.from_pretrained(self.mlm_dir)


def _load(auto_class, directory: Path) -> PreTrainedModel:
    return auto_class.from_pretrained(directory, dtype=torch.float32).eval()


def build_testbed(config: TestbedConfig = TestbedConfig(), cache_dir: str | Path | None = None,  # noqa: B008
                  progress: bool = True, device: str = "cpu") -> Testbed:
    """Return the world for ``config``, building it first if the cache does not hold it yet.

    ``cache_dir`` defaults to ``default_cache_dir()``; the world lives in ``<cache_dir>/testbed/<key>``.
    ``device`` trains the models there ("cuda", or "auto" for cuda when available). The default is the
    CPU: the README's numbers come from CPU-built worlds, and a GPU gives other weights for the same
    seed, so a world built elsewhere than the CPU is cached under ``<key>-<device type>``.
    """
    if not isinstance(config, TestbedConfig):
        raise NeuMuterError(f"config must be a TestbedConfig, got {type(config).__name__}")
    build_device = resolve_device(device)
    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    parent = parent / "testbed"
    root = parent / (config.cache_key() + ("" if build_device.type == "cpu" else f"-{build_device.type}"))
    build_cache_entry(root, "manifest.json", lambda staging: _build(config, staging, progress, build_device))
    return _read(config, root)


def _read(config: TestbedConfig, root: Path) -> Testbed:
    texts = json.loads((root / "texts.json").read_text())
    return Testbed(config=config, root=root, **texts,
                   manifest=json.loads((root / "manifest.json").read_text()))


def _tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int, eos: bool) -> list[list[int]]:
    rows = tokenizer(texts, add_special_tokens=not eos, truncation=True, max_length=max_len)["input_ids"]
    if eos:
        rows = [row[:max_len - 1] + [tokenizer.eos_token_id] for row in rows]
    return rows


def _general_sample(chunks: list[str], n_people_sequences: int, share: float, seed: int) -> list[str]:
    """The general sequences of one epoch: ``share`` of all sequences, chunks cycled if too few."""
    wanted = round(share / (1 - share) * n_people_sequences)
    order = list(chunks)
    random.Random(seed).shuffle(order)
    return [order[i % len(order)] for i in range(wanted)] if order else []


_SPLITS = ("forget", "retain", "heldout")


@dataclass
class _Content:
    """What the models memorize, by split: the texts every metric scores, what one training copy of the
    split holds (the scored texts, plus QA documents for people), QA records, and the people themselves."""

    scored: dict[str, list[str]]
    training: dict[str, list[str]]
    qa: dict[str, list[dict]]
    people: list[dict]


def _people_content(c: TestbedConfig) -> _Content:
    people = make_people(c.seed, c.n_forget, c.n_retain, c.n_heldout)
    rng = random.Random(c.seed)
    bios = {p.person_id: biography(p, c.bio_style, c.n_templates, rng) for p in people}
    qa = {p.person_id: qa_pairs(p) for p in people}
    members = {split: [p for p in people if p.split == split] for split in _SPLITS}
    scored = {split: [bios[p.person_id] for p in members[split]] for split in _SPLITS}
    qa_documents = {split: [qa_document(qa[p.person_id]) for p in members[split]] if c.qa_in_training else []
                    for split in _SPLITS}
    return _Content(scored, {split: scored[split] + qa_documents[split] for split in _SPLITS},
                    {split: [r for p in members[split] for r in qa[p.person_id]] for split in _SPLITS},
                    [asdict(p) for p in people])


def _document_content(c: TestbedConfig) -> _Content:
    documents = list(dict.fromkeys(read_texts(c.documents)))  # duplicates would straddle the splits
    wanted = c.n_forget + c.n_retain + c.n_heldout
    if len(documents) < wanted:
        raise NeuMuterError(f"{c.documents} holds {len(documents)} distinct texts; n_forget + n_retain + "
                            f"n_heldout asks for {wanted}")
    random.Random(c.seed).shuffle(documents)
    bounds = (0, c.n_forget, c.n_forget + c.n_retain, wanted)
    scored = {split: documents[bounds[i]:bounds[i + 1]] for i, split in enumerate(_SPLITS)}
    return _Content(scored, scored, {split: [] for split in _SPLITS}, [])


def _build(config: TestbedConfig, out: Path, progress: bool, device: torch.device) -> None:
    start = time.perf_counter()
    c = config
    content = _document_content(c) if c.documents else _people_content(c)
    general_train, general_heldout = general_corpus(c.seed, c.chunk_words, c.general_heldout_chunks)
    if len(general_train) < 10:
        raise NeuMuterError("the general corpus is nearly empty: is pydoc_data missing from this Python?")
    forget_seq, retain_seq = content.training["forget"], content.training["retain"]
    general_seq = _general_sample(general_train, c.repeats * (len(forget_seq) + len(retain_seq)),
                                  c.general_share, c.seed)

    # Tokenizers never see forget or held-out people: forget names then tokenize like unseen names.
    tokenizer = train_causal_tokenizer(general_train + retain_seq, c.vocab_size, out / "tokenizer")
    mlm_tokenizer = train_wordpiece_tokenizer(general_train + retain_seq, c.mlm_vocab_size, out / "mlm")
    # The scored texts (biographies, documents) must fit the training window, or they would be memorized
    # only in part and scored whole. QA documents may be longer: their last pairs are then cut from training.
    scored = [text for texts in content.scored.values() for text in texts]
    longest = max(len(ids) + 1 for ids in tokenizer(scored, add_special_tokens=False)["input_ids"])
    if longest > c.max_seq_len:
        raise NeuMuterError(f"the memorized texts are up to {longest} tokens (with EOS), longer than max_seq_len "
                            f"{c.max_seq_len}: raise max_seq_len (unique biographies need about 256)")

    gpt_config = GPTNeoConfig(
        vocab_size=len(tokenizer), hidden_size=c.hidden_size, num_layers=c.n_layers, num_heads=c.n_heads,
        attention_types=[[["global"], c.n_layers]], intermediate_size=c.ffn_size,
        max_position_embeddings=max(256, c.max_seq_len), window_size=256, activation_function="gelu_new",
        embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    train_kwargs = dict(batch_size=c.batch_size, lr=c.lr, seed=c.seed, progress=progress, device=device)
    oracle_seq = general_seq + retain_seq * c.repeats
    oracle = train_causal_lm(gpt_config, _tokenize(tokenizer, oracle_seq, c.max_seq_len, True),
                             tokenizer.pad_token_id, epochs=c.epochs, desc="testbed oracle", **train_kwargs)
    oracle.save_pretrained(out / "oracle")
    if c.inject_epochs:  # TOFU-like: the oracle is the pretrained model; inject the forget people with replay
        injected = forget_seq * c.repeats
        replay = random.Random(c.seed).sample(oracle_seq, min(len(injected), len(oracle_seq)))
        model = train_causal_lm(gpt_config, _tokenize(tokenizer, injected + replay, c.max_seq_len, True),
                                tokenizer.pad_token_id, epochs=c.inject_epochs, desc="testbed model (injection)",
                                start_from=oracle, **train_kwargs)
    else:
        model = train_causal_lm(
            gpt_config, _tokenize(tokenizer, general_seq + (forget_seq + retain_seq) * c.repeats, c.max_seq_len, True),
            tokenizer.pad_token_id, epochs=c.epochs, desc="testbed model", **train_kwargs)
    model.save_pretrained(out / "model")

    bert_config = BertConfig(
        vocab_size=len(mlm_tokenizer), hidden_size=c.mlm_hidden_size, num_hidden_layers=c.mlm_layers,
        num_attention_heads=max(1, c.mlm_hidden_size // 64), intermediate_size=c.mlm_ffn_size,
        max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        pad_token_id=mlm_tokenizer.pad_token_id,
    )
    mlm_texts = general_train + retain_seq
    (out / "mlm" / "training_texts.json").write_text(json.dumps(mlm_texts))
    mlm = train_masked_lm(
        bert_config, _tokenize(mlm_tokenizer, mlm_texts, min(c.max_seq_len, bert_config.max_position_embeddings),
                               False), mlm_tokenizer,
        epochs=c.mlm_epochs, batch_size=c.batch_size, lr=c.mlm_lr, seed=c.seed, progress=progress,
        desc="testbed masked LM", device=device)
    mlm.save_pretrained(out / "mlm")

    texts = {
        "forget_texts": content.scored["forget"],
        "retain_texts": content.scored["retain"],
        "heldout_people_texts": content.scored["heldout"],
        "general_train_texts": general_train,
        "general_heldout_texts": general_heldout,
        "forget_qa": content.qa["forget"],
        "retain_qa": content.qa["retain"],
        "heldout_qa": content.qa["heldout"],
        "people": content.people,
    }
    (out / "texts.json").write_text(json.dumps(texts, indent=1))

    def mean_ma(lm, key):
        return round(float(memorization_accuracy(lm, tokenizer, texts[key], batch_size=32).mean()), 4)

    probe = ("forget_texts", "retain_texts", "heldout_people_texts", "general_heldout_texts")
    manifest = {
        "config": asdict(c),
        "cache_key": c.cache_key(),
        "sequences": {"general": len(general_seq), "people_per_copy": len(forget_seq) + len(retain_seq),
                      "repeats": c.repeats, "epochs": c.epochs, "inject_epochs": c.inject_epochs},
        "parameters": {"model": model.num_parameters(), "mlm": mlm.num_parameters()},
        "memorization_accuracy": {name: {key: mean_ma(lm, key) for key in probe}
                                  for name, lm in (("model", model), ("oracle", oracle))},
        "build_seconds": round(time.perf_counter() - start, 1),
        "build_device": device.type,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
