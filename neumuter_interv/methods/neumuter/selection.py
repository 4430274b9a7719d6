"""From trained gates to the neurons NeuMuter mutes (Section 3.3) and the deployed mask (Eq. 14).

Rules (all global over the gated layers):

* ``threshold`` (official code, default): sigmoid(log_alpha) < r, r = 0.15.
* ``energy`` (the paper's text): sort the deterministic gate values m ascending and accumulate |m|;
  the threshold epsilon is the value where the running sum last stays within ``energy`` (5%) of the
  total; neurons with m <= epsilon are selected. Neurons whose gate is still exactly 1 are never
  selected (muting them would change nothing).
* ``top_k`` / ``fraction``: the k (or fraction x all gated neurons) lowest sigmoid(log_alpha), in the
  config's ``ranking`` (``muting_order``).
* ``smallest``: the fewest lowest gates whose mask meets a stopping criterion (``readout``: it needs the
  criterion, so it is read out there, not here).

Every selected neuron keeps its deterministic gate value as its scale; every other neuron is 1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyvene as pv
import torch

from ...architectures import ffn_width, num_layers
from ...data import read_json_file
from ...errors import NeuMuterError
from ...hard_concrete import HardConcreteParams, deterministic_gate
from ...intervenable import attach
from ...interventions import FrozenScaling
from ...validation import check_neuron_mask, check_number
from .config import NeuMuterConfig


@dataclass
class NeuronSet:
    indices: list[int]
    scales: list[float]


@dataclass
class Selection:
    """The muted neurons per 0-based layer and their scales; JSON-serialisable, composable."""

    layers: dict[int, NeuronSet]
    ffn_width: int
    num_model_layers: int
    model_type: str = ""
    rule: dict = field(default_factory=dict)

    @property
    def neurons_muted(self) -> int:
        return sum(len(s.indices) for s in self.layers.values())

    @property
    def neurons_total(self) -> int:
        """Every FFN neuron of the model, gated layers or not: the denominator of the paper's "1%"."""
        return self.ffn_width * self.num_model_layers

    @property
    def neurons_muted_fraction(self) -> float:
        return self.neurons_muted / self.neurons_total

    def per_layer_counts(self) -> dict[int, int]:
        return {layer: len(s.indices) for layer, s in self.layers.items()}

    def compose(self, other: Selection) -> Selection:
        """The mask of applying ``self`` then ``other`` (successive deletion requests): scales multiply."""
        if (self.ffn_width, self.num_model_layers) != (other.ffn_width, other.num_model_layers):
            raise NeuMuterError("cannot compose masks of different model shapes")
        layers: dict[int, NeuronSet] = {}
        for layer in sorted(set(self.layers) | set(other.layers)):
            scale: dict[int, float] = {}
            for part in (self.layers.get(layer), other.layers.get(layer)):
                for index, value in zip(part.indices, part.scales) if part else ():
                    scale[index] = scale.get(index, 1.0) * value
            ordered = sorted(scale)
            layers[layer] = NeuronSet(ordered, [scale[i] for i in ordered])
        return Selection(layers, self.ffn_width, self.num_model_layers, self.model_type,
                         {"composed_of": [self.rule, other.rule]})

    def to_dict(self) -> dict:
        return {
            "model_type": self.model_type,
            "ffn_width": self.ffn_width,
            "num_model_layers": self.num_model_layers,
            "rule": self.rule,
            "neurons_muted": self.neurons_muted,
            "neurons_total": self.neurons_total,
            "neurons_muted_fraction": self.neurons_muted_fraction,
            "per_layer_counts": {str(k): v for k, v in self.per_layer_counts().items()},
            "layers": {str(k): {"indices": s.indices, "scales": s.scales} for k, s in self.layers.items()},
        }

    @classmethod
    def from_dict(cls, data, where: str = "selection") -> Selection:
        """Read a mask back, refusing anything ``check_neuron_mask`` would (``where`` names the source)."""
        if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
            raise NeuMuterError(f"{where} is not a NeuMuter selection: it needs 'layers', an object mapping layer "
                                "numbers to {'indices': [...], 'scales': [...]}")
        for name in ("ffn_width", "num_model_layers"):
            check_number(f"{where} {name}", data.get(name), minimum=1, integer=True)
        width, depth = data["ffn_width"], data["num_model_layers"]
        layers = {}
        for key, neurons in data["layers"].items():
            if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) < depth):
                raise NeuMuterError(f"{where} names layer {key!r}, which a {depth}-layer model does not have (0-based)")
            if not (isinstance(neurons, dict) and "indices" in neurons and "scales" in neurons):
                raise NeuMuterError(f"{where} layer {key}: needs 'indices' and 'scales'")
            check_neuron_mask(neurons["indices"], neurons["scales"], width, f"{where} layer {key}")
            layers[int(key)] = NeuronSet(list(neurons["indices"]), [float(x) for x in neurons["scales"]])
        return cls(dict(sorted(layers.items())), width, depth, str(data.get("model_type") or ""), data.get("rule") or {})

    def check_fits(self, model) -> None:
        """Refuse applying this mask to a model of another shape or architecture, before anything is written."""
        expected = (self.ffn_width, self.num_model_layers)
        actual = (ffn_width(model), num_layers(model))
        if expected != actual:
            raise NeuMuterError(f"the mask was made for {expected[1]} layers of FFN width {expected[0]}, "
                                f"but the model has {actual[1]} layers of width {actual[0]}")
        model_type = model.config.model_type
        if self.model_type and self.model_type != model_type:
            raise NeuMuterError(f"the mask was made for a {self.model_type} model, not {model_type}")
        if not self.layers:
            raise NeuMuterError("the mask names no layer")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        path = Path(path)
        return cls.from_dict(read_json_file(path, str(path)), str(path))


def select_neurons(model, log_alpha: dict[int, torch.Tensor], params: HardConcreteParams, config: NeuMuterConfig,
                   discount: dict[int, torch.Tensor] | None = None) -> Selection:
    """Apply ``config.selection`` to trained gate locations of ``model`` (``discount``: the contrastive
    ranking's, ``contrastive_discount``)."""
    layers, flat_alpha, owner, offsets = flatten_by_layer(log_alpha)
    gate = deterministic_gate(flat_alpha, params)
    probability = torch.sigmoid(flat_alpha)
    rule: dict = {"rule": config.selection}
    if config.selection == "smallest":
        raise NeuMuterError("selection 'smallest' searches for the fewest neurons that meet a stopping criterion: "
                            "give NeuMuter one (stop_when=...), or choose threshold, energy, top_k or fraction")
    if config.selection == "threshold":
        chosen = probability < config.threshold
        rule["threshold"] = config.threshold
    elif config.selection == "energy":
        chosen, epsilon = _energy_rule(gate, config.energy)
        rule.update(energy=config.energy, epsilon=epsilon)
    else:
        k = config.top_k if config.selection == "top_k" else math.ceil(config.fraction * flat_alpha.numel())
        k = min(int(k), flat_alpha.numel())
        order = muting_order(probability, owner, config.ranking, flat_discount(discount, layers))
        order = order[gate[order] < 1.0][:k]  # k neurons that muting changes, whatever the ranking puts first
        chosen = torch.zeros_like(probability, dtype=torch.bool)
        chosen[order] = True
        rule["k"] = k
    chosen &= gate < 1.0
    return Selection(neuron_sets(chosen, gate, layers, owner, offsets), ffn_width(model), num_layers(model),
                     model.config.model_type, rule)


def muting_order(probability: torch.Tensor, owner: torch.Tensor, ranking: str = "global",
                 discount: torch.Tensor | None = None) -> torch.Tensor:
    """Flat neuron indices in the order a count-based rule mutes them. ``global``: lowest closing probability
    first across layers. ``per_layer``: each layer's lowest first, then each layer's second lowest, and so on
    (the same count from every layer, as MemPi's per-layer budget), ties by probability. ``contrastive``:
    lowest ``probability + discount`` first, where ``discount`` (flat, as ``probability``) is what each
    neuron's use on text to keep adds (``contrastive_discount``). Sorts are stable: equal values keep their
    position order."""
    if ranking == "contrastive":
        if discount is None or discount.shape != probability.shape:
            raise NeuMuterError("the contrastive ranking needs a discount per gated neuron (contrastive_discount of "
                                "the neurons' attribution on reference texts)")
        return torch.sort(probability + discount, stable=True).indices
    order = torch.sort(probability, stable=True).indices
    if ranking == "global":
        return order
    rank_in_layer = torch.empty_like(order)
    for layer in owner.unique():
        members = order[owner[order] == layer]
        rank_in_layer[members] = torch.arange(members.numel())
    return order[torch.sort(rank_in_layer[order], stable=True).indices]


def contrastive_discount(attribution: dict[int, torch.Tensor], weight: float) -> dict[int, torch.Tensor]:
    """Per layer, ``weight`` x each neuron's percentile (0 for the least, 1 for the most) of ``attribution``
    over all the given neurons: the contrastive ranking's penalty for a neuron the text to keep uses.

    Percentiles, not raw attributions, because closing probabilities lie in [0, 1] and attributions are
    heavy-tailed and scale with the reference texts' loss: ``weight`` 1 lets a fully closed gate of the most
    used neuron rank behind every half-open gate of an unused one, whatever the texts. Equal attributions
    take consecutive percentiles in position order."""
    layers, flat, owner, offsets = flatten_by_layer(attribution)
    percentile = torch.empty_like(flat)
    percentile[torch.sort(flat, stable=True).indices] = torch.arange(flat.numel(), dtype=flat.dtype) / max(flat.numel() - 1, 1)
    return {layer: weight * percentile[owner == layer] for layer in layers}


def flat_discount(discount: dict[int, torch.Tensor] | None, layers: list[int]) -> torch.Tensor | None:
    """``discount`` as one vector in the order of ``flatten_by_layer`` over ``layers`` (None stays None); a
    gated layer it lacks is refused."""
    if discount is None:
        return None
    missing = [layer for layer in layers if layer not in discount]
    if missing:
        raise NeuMuterError(f"the contrastive discount has no values for gated layer(s) {missing}")
    return torch.cat([discount[layer].float().cpu() for layer in layers])


def flatten_by_layer(values: dict[int, torch.Tensor]) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-layer neuron values as one CPU vector (whatever device the gates trained on), so that a rule can
    rank neurons across layers: the sorted layers, the flat values, and each entry's layer and index
    within its layer."""
    layers = sorted(values)
    flat = torch.cat([values[layer].detach().float().cpu() for layer in layers])
    owner = torch.cat([torch.full((values[layer].numel(),), layer, dtype=torch.long) for layer in layers])
    offsets = torch.cat([torch.arange(values[layer].numel()) for layer in layers])
    return layers, flat, owner, offsets


def neuron_sets(chosen: torch.Tensor, scales: torch.Tensor, layers: list[int], owner: torch.Tensor,
                offsets: torch.Tensor) -> dict[int, NeuronSet]:
    """The chosen entries of a ``flatten_by_layer`` vector, back per layer, with their scales."""
    return {layer: NeuronSet(offsets[chosen & (owner == layer)].tolist(), scales[chosen & (owner == layer)].tolist())
            for layer in layers}


def _energy_rule(gate: torch.Tensor, share: float) -> tuple[torch.Tensor, float]:
    values = torch.sort(gate.abs()).values
    cumulative = torch.cumsum(values.double(), 0)
    within = cumulative <= share * float(cumulative[-1])
    if not bool(within.any()):
        return torch.zeros_like(gate, dtype=torch.bool), 0.0
    epsilon = float(values[int(within.nonzero().max())])
    return gate.abs() <= epsilon, epsilon


def freeze(model, selection: Selection) -> pv.IntervenableModel:
    """The deployable model: a ``FrozenScaling`` intervention on every layer of the selection."""
    selection.check_fits(model)
    return attach(
        model,
        sorted(selection.layers),
        lambda layer, width: FrozenScaling(
            embed_dim=width, neuron_indices=selection.layers[layer].indices, neuron_scales=selection.layers[layer].scales,
        ),
    )
