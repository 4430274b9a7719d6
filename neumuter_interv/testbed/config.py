"""``TestbedConfig``: every knob of the embedded testbed world, frozen so that it can key the cache."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, fields, replace
from importlib.metadata import version
from pathlib import Path

from ..data import read_texts, texts_sha256
from ..errors import NeuMuterError

# Bump when the build recipe changes in a way the config does not capture: old caches become stale.
RECIPE_VERSION = 1
_VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "faker")
# Fields added after worlds were cached, with the default that reproduces those worlds.
_ADDED_LATER = {"inject_epochs": 0, "documents": ""}


@dataclass(frozen=True)
class TestbedConfig:
    """What world to build. The defaults build in under 4 minutes on 2 CPU cores; ``tiny()`` in seconds.

    Memorization depth is set by ``repeats`` (copies of each person's texts per epoch, like duplicated
    documents in web corpora) times ``epochs``. The defaults memorize the forget people to MA 0.85, the
    depth of real memorized samples (0.8-0.9); 8 copies gave 0.74, 10 gave 0.90-0.92 (2-core CPU).
    ``general_share`` is the share of training sequences that are general text; the harvested chunks are
    used once each and cycled if the share asks for more.

    ``inject_epochs`` > 0 builds the model as TOFU does (Maini et al., 2024: a pretrained model fine-tuned
    on the new, fictitious people): first trained on general text + retain people, i.e. exactly the retrain
    oracle, then fine-tuned ``inject_epochs`` epochs on the forget people (``repeats`` copies) mixed 1:1
    with a replay of the oracle's own training sequences. 0 trains on everything at once.

    ``documents``, a path to a file of texts (``data.read_texts``: .txt, .jsonl or .csv with a ``text``
    column), replaces the people by real documents, e.g. the paper's memorized Pile samples
    (knowledge-unlearning ``lm_extraction_128_0.csv``): deduplicated, shuffled by ``seed`` and split
    ``n_forget`` / ``n_retain`` / ``n_heldout`` like the people (no QA pairs then). The cache key holds
    the file's content, not its path.
    """

    __test__ = False  # not a pytest test class despite the name

    seed: int = 0
    # people and their texts
    n_forget: int = 32
    n_retain: int = 64
    n_heldout: int = 32
    bio_style: str = "templated"  # "templated" (n_templates fixed frames) or "unique" (one frame per person)
    n_templates: int = 6
    qa_in_training: bool = True  # also train on each person's question/answer pairs
    repeats: int = 9
    # general corpus
    general_share: float = 0.35
    general_heldout_chunks: int = 200
    chunk_words: int = 60
    # tokenizers
    vocab_size: int = 3000
    mlm_vocab_size: int = 3000
    # causal LM (GPT-Neo) and its training
    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_size: int = 512
    max_seq_len: int = 128
    epochs: int = 5
    batch_size: int = 16
    lr: float = 2e-3
    inject_epochs: int = 0  # > 0: pretrain without the forget people, then inject them (see above)
    documents: str = ""  # a file of texts memorized instead of people (see above); "" = the people
    # masked LM (BERT) for neighbour generation and its training
    mlm_hidden_size: int = 128
    mlm_layers: int = 2
    mlm_ffn_size: int = 512
    mlm_epochs: int = 2
    mlm_lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.bio_style not in ("templated", "unique"):
            raise NeuMuterError(f"bio_style must be 'templated' or 'unique', got {self.bio_style!r}")
        if not 0.0 <= self.general_share < 1.0:
            raise NeuMuterError(f"general_share must be in [0, 1), got {self.general_share}")
        if min(self.n_forget, self.n_retain, self.n_heldout) < 1:
            raise NeuMuterError("n_forget, n_retain and n_heldout must each be at least 1")
        if min(self.repeats, self.epochs, self.mlm_epochs, self.n_templates) < 1:
            raise NeuMuterError("repeats, epochs, mlm_epochs and n_templates must each be at least 1")
        if self.inject_epochs < 0:
            raise NeuMuterError(f"inject_epochs must be 0 (no injection) or more, got {self.inject_epochs}")
        if self.documents and not Path(self.documents).is_file():
            raise NeuMuterError(f"documents file {self.documents!r} does not exist")
        if self.hidden_size % self.n_heads:
            raise NeuMuterError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")

    @classmethod
    def tiny(cls, **overrides) -> TestbedConfig:
        """A world small enough for unit tests (builds in ~15 s on 2 cores) that still memorizes."""
        settings = dict(
            n_forget=8, n_retain=16, n_heldout=8, repeats=10, general_share=0.3, general_heldout_chunks=40,
            vocab_size=1000, mlm_vocab_size=1000, max_seq_len=192, hidden_size=64, n_layers=2, n_heads=2, ffn_size=256,
            epochs=8, mlm_hidden_size=64, mlm_ffn_size=128, mlm_epochs=1,
        )
        settings.update(overrides)
        return cls(**settings)

    def with_(self, **changes) -> TestbedConfig:
        """A copy with some fields changed (unknown names raise ``NeuMuterError``)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise NeuMuterError(f"unknown TestbedConfig field(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def cache_key(self) -> str:
        """Hash of the config, the recipe version and the versions of everything that shapes the output
        (Python's docs are the corpus; Faker, tokenizers and torch shape people, vocabularies and weights)."""
        config = asdict(self)
        for name, default in _ADDED_LATER.items():  # worlds built before a field existed keep their keys
            if config[name] == default:
                del config[name]
        if self.documents:  # the same texts under another path are the same world
            config["documents"] = texts_sha256(read_texts(self.documents))
        payload = {
            "config": config,
            "recipe": RECIPE_VERSION,
            "python": sys.version.split()[0],
            "packages": {name: version(name) for name in _VERSIONED_PACKAGES},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
