"""NeuMuter end to end: localize (Eq. 13) -> select (Section 3.3) -> freeze (Eq. 14), behind the
common ``UnlearningMethod`` interface, plus the run directory the CLI writes."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyvene as pv
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...architectures import ffn_width, num_layers
from ...data import model_context_length, pad_id_of, read_json_file, tokenize
from ...errors import NeuMuterError
from ...lm import resolve_device
from ...metrics import greedy_texts
from ...output import output_directory, write_json
from ...serialization import save_intervenable
from ..base import UnlearningMethod, UnlearningRecord, UnlearningResult, count_parameters, measured
from .config import NeuMuterConfig
from .localize import EpochCallback, LocalizationResult, localize
from .schedule import CoefficientSchedule, localize_until_forgotten
from .selection import Selection, contrastive_discount, freeze, select_neurons
from .token_selection import distinct_targets


@dataclass
class NeuMuterRun:
    """Everything one NeuMuter run produced."""

    frozen: pv.IntervenableModel
    selection: Selection
    localization: LocalizationResult
    record: UnlearningRecord
    config: NeuMuterConfig
    calibration: dict | None = None  # the coefficient schedule's report, when one ran
    # the contrastive ranking's per-layer discount (``selection.contrastive_discount``), when it ran: with the
    # gates, what the readout and the operating-point curve rank by
    ranking_discount: dict[int, torch.Tensor] | None = None

    def metrics(self) -> dict:
        return {
            "neurons_muted": self.selection.neurons_muted,
            "neurons_total": self.selection.neurons_total,
            "neurons_muted_fraction": self.selection.neurons_muted_fraction,
            "per_layer_counts": {str(k): v for k, v in self.selection.per_layer_counts().items()},
            "epochs_run": len(self.localization.history),
            "steps": self.localization.steps,
            "stopped_early": self.localization.stopped_early,
            "seconds": self.record.seconds,
            "peak_memory_bytes": self.record.peak_memory_bytes,
            "final": self.localization.history[-1] if self.localization.history else {},
            **({"calibration": self.calibration} if self.calibration is not None else {}),
        }

    def generate(self, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 8) -> list[str]:
        """Greedy continuations of ``prompts`` (``max_new_tokens`` each) by the model with the frozen mask on
        every position, the prompt included: what the deployed model says."""
        return greedy_texts(self.frozen, tokenizer, prompts, max_new_tokens, batch_size)

    @classmethod
    def load(cls, directory: str | Path, model) -> NeuMuterRun:
        """A run that ``save`` wrote, on ``model`` (refused in one line when the run recorded other weights, or
        its mask or gates do not fit): the frozen mask applied, the selection, the trained gates, the history
        and the settings. Reads safetensors and JSON only: nothing in the directory can execute code."""
        from ...loading import check_same_model, recorded_fingerprint
        from ...serialization import load_intervenable

        directory = Path(directory)
        if not (directory / "selection.json").is_file():
            raise NeuMuterError(f"{directory} is not a NeuMuter run directory: it has no selection.json")
        check_same_model(model, {f"run {directory}": recorded_fingerprint(directory)},
                         str(getattr(model, "name_or_path", "") or type(model).__name__))
        gates, config = load_gates(directory, model)
        discount = load_ranking_discount(directory, gates, config)

        def read(name: str, default):
            path = directory / name
            return read_json_file(path, str(path)) if path.is_file() or default is None else default

        selection = Selection.from_dict(read("selection.json", None), str(directory / "selection.json"))
        metrics, history = read("metrics.json", {}), read("history.json", [])
        if not isinstance(metrics, dict) or not isinstance(history, list):
            raise NeuMuterError(f"{directory}: metrics.json must hold an object and history.json a list")
        try:
            localization = LocalizationResult(gates, config.hard_concrete, history, steps=int(metrics.get("steps", 0)),
                                              seconds=float(metrics.get("seconds", 0.0)),
                                              stopped_early=bool(metrics.get("stopped_early", False)))
            record = UnlearningRecord(method=NeuMuter.name, seconds=localization.seconds, steps=localization.steps,
                                      peak_memory_bytes=int(metrics.get("peak_memory_bytes", 0)))
        except (TypeError, ValueError):
            raise NeuMuterError(f"{directory}/metrics.json: steps, seconds and peak_memory_bytes must be numbers") from None
        frozen = load_intervenable(directory / "intervention", model)
        return cls(frozen, selection, localization, record, config, metrics.get("calibration"), discount)

    def save(self, out_dir: str | Path, overwrite: bool = False, extra_metrics: dict | None = None,
             run_info: dict | None = None) -> Path:
        """Write ``intervention/`` (pyvene format plus safetensors), ``gates.safetensors`` (the trained gate
        locations the mask was read from: ``neumuter eval --curve RUN`` draws the operating-point curve from
        them; with ``ranking_discount.safetensors`` under the contrastive ranking), ``selection.json``,
        ``metrics.json``, ``history.json`` and ``config.json``, all or nothing.
        ``config.json`` records the model (its path where it was loaded from one, and its fingerprint) unless
        ``run_info`` says otherwise, so that ``export`` and ``load`` find it and refuse other weights."""
        run_info = {**self._model_info(run_info or {}), **(run_info or {})}
        with output_directory(out_dir, overwrite) as staging:
            save_intervenable(self.frozen, staging / "intervention", with_pyvene_pickles=True)
            save_gates(self.localization.log_alpha, staging / GATES_FILE)
            if self.ranking_discount is not None:
                save_gates(self.ranking_discount, staging / DISCOUNT_FILE)
            self.selection.save(staging / "selection.json")
            write_json(staging / "metrics.json", {**self.metrics(), **(extra_metrics or {})})
            write_json(staging / "history.json", self.localization.history)
            write_json(staging / "config.json", {"neumuter": self.config.to_dict(), **(run_info or {})})
        return Path(out_dir)

    def _model_info(self, given: dict) -> dict:
        """What ``given`` lacks of the base model as a run records it: its directory (absolute) where it was
        loaded from one, else its Hub id, and its ``model_fingerprint`` (computed only when not given)."""
        from ...loading import model_fingerprint

        model = self.frozen.model
        name = str(getattr(model, "name_or_path", "") or "")
        info = {} if "model_fingerprint" in given else {"model_fingerprint": model_fingerprint(model)}
        if name and "model" not in given:
            info["model"] = str(Path(name).resolve()) if Path(name).exists() else name
        return info


load_run = NeuMuterRun.load

GATES_FILE = "gates.safetensors"
DISCOUNT_FILE = "ranking_discount.safetensors"


def save_gates(log_alpha: dict[int, torch.Tensor], path: Path) -> None:
    """The trained gate locations per 0-based layer, as safetensors (keys: layer numbers)."""
    save_file({str(layer): values.detach().float().cpu().contiguous() for layer, values in log_alpha.items()},
              str(path))


def load_gates(run_dir: str | Path, model) -> tuple[dict[int, torch.Tensor], NeuMuterConfig]:
    """A saved run's trained gates and its NeuMuter settings, refused in one line where they do not fit
    ``model`` (a layer it lacks, another FFN width) or hold a value that is not finite. Reads safetensors
    and JSON only: nothing in the run can execute code."""
    run_dir = Path(run_dir)
    gates_path, config_path = run_dir / GATES_FILE, run_dir / "config.json"
    if not gates_path.is_file() or not config_path.is_file():
        raise NeuMuterError(f"{run_dir} is not a NeuMuter run with trained gates (needs {GATES_FILE} and config.json)")
    try:
        tensors = load_file(str(gates_path))
        config = NeuMuterConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))["neumuter"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        raise NeuMuterError(f"cannot read the gates of {run_dir}: {error}") from None
    depth, width = num_layers(model), ffn_width(model)
    gates = {}
    for key, values in tensors.items():
        if not (key.isascii() and key.isdigit() and int(key) < depth):
            raise NeuMuterError(f"{gates_path} names layer {key!r}, which a {depth}-layer model does not have")
        if values.dim() != 1 or values.numel() != width or not bool(torch.isfinite(values).all()):
            raise NeuMuterError(f"{gates_path} layer {key}: needs {width} finite gate locations")
        gates[int(key)] = values.float()
    if not gates:
        raise NeuMuterError(f"{gates_path} holds no gates")
    return dict(sorted(gates.items())), config


def load_ranking_discount(run_dir: str | Path, gates: dict[int, torch.Tensor],
                          config: NeuMuterConfig) -> dict[int, torch.Tensor] | None:
    """A saved run's contrastive discount (``ranking_discount.safetensors``), None where its ``config`` ranks
    otherwise; refused in one line, before any scoring, where a contrastive run lacks it or it does not cover
    ``gates`` (same layers, one finite value per gate). Reads safetensors only."""
    path = Path(run_dir) / DISCOUNT_FILE
    if config.ranking != "contrastive":
        return None
    if not path.is_file():
        raise NeuMuterError(f"{run_dir} ranks its neurons contrastively but has no {DISCOUNT_FILE}")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise NeuMuterError(f"cannot read {path}: {error}") from None
    if sorted(tensors) != sorted(str(layer) for layer in gates) or any(
            values.shape != gates[int(key)].shape or not bool(torch.isfinite(values).all())
            for key, values in tensors.items()):
        raise NeuMuterError(f"{path} must hold one finite value per gate of layers {sorted(gates)}")
    return {int(key): values.float() for key, values in sorted(tensors.items(), key=lambda item: int(item[0]))}


class NeuMuter(UnlearningMethod):
    """NeuMuter (Hou et al., ACL Findings 2025): mute ~1% of FFN neurons; needs no retain set."""

    name = "neumuter"
    needs_retain = False

    def __init__(self, config: NeuMuterConfig | None = None, on_epoch_end: EpochCallback | None = None,
                 log: Callable[[str], None] = print, stop_when: Callable | None = None,
                 schedule: CoefficientSchedule | None = None,
                 make_neighbours: Callable[[Sequence[str]], list[str]] | None = None,
                 uses_retained_text: bool = False, reference_texts: Sequence[str] | None = None):
        """With ``stop_when`` (e.g. a ``ForgettingCriterion``), training runs in stages of a
        ``CoefficientSchedule`` until the frozen mask satisfies it (Appendix B.4; with
        ``config.selection="smallest"`` the mask is the fewest neurons that do); otherwise it runs
        ``config.epochs`` epochs with fixed coefficients. ``make_neighbours(forget_texts)`` returns k
        neighbour texts per forget sample, sample-major (e.g. from ``neighbours.generate_neighbours``);
        ``unlearn`` uses it, and ``config.neighbour_source`` without it. ``uses_retained_text`` marks a run
        whose neighbours include retained text (anchors: ``neighbours.with_anchors``) in its record, so that
        every report marks it as it marks the methods with a retain set. ``reference_texts``: other text to
        keep, whose n-grams the ascent skips under ``config.forget_tokens="distinct"`` (``token_selection``)
        and whose attribution discounts a neuron under ``config.ranking="contrastive"``."""
        self.config = config or NeuMuterConfig()
        self.on_epoch_end = on_epoch_end
        self.log = log
        self.stop_when = stop_when
        self.schedule = schedule or CoefficientSchedule()
        self.make_neighbours = make_neighbours
        self.uses_retained_text = uses_retained_text
        self.reference_texts = list(reference_texts or [])

    @classmethod
    def from_overrides(cls, settings_class: type, overrides: dict) -> NeuMuter:
        """``make_method("neumuter", ...)``: ``NeuMuterConfig`` fields, and ``schedule``, the training budget
        under a stopping criterion (``CoefficientSchedule``)."""
        overrides = dict(overrides)
        schedule = overrides.pop("schedule", None)
        return cls(settings_class(**overrides), schedule=schedule)

    def on_world(self, world) -> NeuMuter:
        """NeuMuter as the demo and ``compare`` run it on ``world``: until the world's Eq. 17 criterion holds
        (within ``schedule``), its KL texts the world's neighbours (``neighbours_per_sample`` per sample,
        rewritten at ``replacement_ratio``) plus ``anchors_per_sample`` of its anchor texts, and under
        ``forget_tokens="distinct"`` or ``ranking="contrastive"`` those anchor texts as the reference texts.
        Anchors in any role are retained text: the run is marked †."""
        from ...neighbours import with_anchors

        config = self.config
        needs_reference = config.forget_tokens == "distinct" or config.ranking == "contrastive"

        def world_neighbours(texts: Sequence[str]) -> list[str]:
            neighbours = world.neighbours(texts, config.neighbours_per_sample, config.replacement_ratio, config.seed)
            if not config.anchors_per_sample:
                return neighbours
            return with_anchors(neighbours, config.neighbours_per_sample, world.attribution_reference,
                                config.anchors_per_sample)

        self.stop_when, self.make_neighbours = world.criterion, world_neighbours
        self.uses_retained_text = config.anchors_per_sample > 0 or needs_reference
        self.reference_texts = list(world.attribution_reference) if needs_reference else []
        return self

    def settings_dict(self) -> dict:
        return {"neumuter": self.config.to_dict(), "schedule": self.schedule.to_dict()}

    def budget(self) -> str:
        if self.stop_when is None:
            return f"{self.config.epochs} epochs"
        stages = self.schedule.max_stages
        return (f"≤ {stages} stages × " if stages > 1 else "≤ ") + f"{self.schedule.stage_epochs} epochs"

    def run(self, model, tokenizer, forget_texts: Sequence[str], neighbour_texts: Sequence[str] | None = None) -> NeuMuterRun:
        """Localize, select and freeze. ``neighbour_texts`` holds k neighbours per forget sample,
        sample-major (see ``neumuter_interv.neighbours``); without them, the model writes its own
        (``config.neighbour_source``)."""
        config = self.config
        if config.selection == "smallest" and self.stop_when is None:
            raise NeuMuterError("selection 'smallest' searches for the fewest neurons that meet a stopping criterion: "
                                "give NeuMuter one (stop_when=..., or on_world(world)), or choose threshold, energy, "
                                "top_k or fraction")
        if config.forget_tokens == "distinct" and not self.reference_texts:
            raise NeuMuterError("forget_tokens 'distinct' skips the forget tokens whose n-gram occurs in reference texts: "
                                "give NeuMuter some (reference_texts=[...], or on_world(world)), or use forget_tokens 'all'")
        if config.ranking == "contrastive" and not self.reference_texts:
            raise NeuMuterError("ranking 'contrastive' discounts neurons by their attribution on reference texts: give "
                                "NeuMuter some (reference_texts=[...], or on_world(world)), or use ranking 'global'")
        context = model_context_length(model)
        forget = tokenize(tokenizer, forget_texts, context, "forget")
        if neighbour_texts is None:
            neighbours = _default_neighbours(model, forget, tokenizer, config)
        else:
            if len(neighbour_texts) % len(forget_texts):
                raise NeuMuterError(f"{len(neighbour_texts)} neighbours for {len(forget_texts)} forget samples: need k per sample")
            neighbours = tokenize(tokenizer, neighbour_texts, context, "neighbour")
        targets = None
        if config.forget_tokens == "distinct":
            reference = tokenize(tokenizer, self.reference_texts, context, "reference")
            targets = distinct_targets(forget, reference, config.distinct_ngram)
            kept, total = sum(sum(flags) for flags in targets), sum(len(seq) - 1 for seq in forget)
            self.log(f"NeuMuter: the ascent trains on {kept} of {total} forget tokens ({100 * kept / max(total, 1):.0f}%), "
                     f"those whose {config.distinct_ngram}-gram is in no reference text")
            if not kept:
                raise NeuMuterError("every forget token's n-gram occurs in the reference texts: nothing is left to forget "
                                    "(use a longer distinct_ngram or fewer reference texts)")
        record = UnlearningRecord(method=self.name, total_parameters=count_parameters(model),
                                  uses_retain_set=self.uses_retained_text)
        calibration = None
        with measured(record, resolve_device(config.device)):
            discount = self._ranking_discount(model, tokenizer)
            if self.stop_when is None:
                _, localization = localize(model, forget, neighbours, config, pad_id_of(tokenizer),
                                           self.on_epoch_end, self.log, forget_targets=targets)
                selection = select_neurons(model, localization.log_alpha, localization.params, config, discount)
            else:
                _, localization, calibration, selection = localize_until_forgotten(
                    model, forget, neighbours, config, pad_id_of(tokenizer), self.stop_when, self.schedule, self.log,
                    forget_targets=targets, discount=discount)
            frozen = freeze(model, selection)
        record.trainable_parameters = sum(a.numel() for a in localization.log_alpha.values())
        record.steps = localization.steps
        record.extra = {"neurons_muted_fraction": selection.neurons_muted_fraction, "neurons_muted": selection.neurons_muted,
                        "layers": config.layers}
        self.log(f"NeuMuter: muted {selection.neurons_muted} of {selection.neurons_total} FFN neurons "
                 f"({100 * selection.neurons_muted_fraction:.2f}%) in {record.seconds:.1f} s")
        return NeuMuterRun(frozen, selection, localization, record, config, calibration, discount)

    def _ranking_discount(self, model, tokenizer) -> dict[int, torch.Tensor] | None:
        """Under ``ranking="contrastive"``: each gated neuron's |activation x gradient| on the reference texts
        (``attribution.neuron_attribution``, the model as given), as ``contrastive_discount`` percentiles;
        else None."""
        if self.config.ranking != "contrastive":
            return None
        from ..attribution import neuron_attribution  # it imports this package's selection

        model.to(resolve_device(self.config.device))
        attribution = neuron_attribution(model, tokenizer, self.reference_texts, self.config.layers,
                                         self.config.batch_size)
        self.log(f"NeuMuter: contrastive ranking, neurons discounted by their attribution on "
                 f"{len(self.reference_texts)} reference texts (weight {self.config.contrastive_weight:g})")
        return contrastive_discount(attribution, self.config.contrastive_weight)

    def unlearn(self, model, tokenizer, forget_texts, retain_texts=None) -> UnlearningResult:
        neighbours = self.make_neighbours(forget_texts) if self.make_neighbours is not None else None
        run = self.run(model, tokenizer, forget_texts, neighbours)
        return UnlearningResult(run.frozen, run.record)


def _default_neighbours(model, forget: list[list[int]], tokenizer, config: NeuMuterConfig) -> list[list[int]]:
    """Neighbours when none are given: written by the model itself (``self``, the default) or random tokens
    (``random``, cheaper and cruder), ``neighbours_per_sample`` per forget sample, sample-major."""
    from ...neighbours import random_replacement_neighbours, self_neighbours

    common = dict(k=config.neighbours_per_sample, ratio=config.replacement_ratio, seed=config.seed,
                  special_ids=list(tokenizer.all_special_ids))
    if config.neighbour_source == "self":
        model.to(resolve_device(config.device))
        grouped = self_neighbours(forget, model, top_k=config.neighbour_top_k, **common)
    else:
        grouped = random_replacement_neighbours(forget, vocab_size=len(tokenizer), **common)
    return [neighbour for group in grouped for neighbour in group]
