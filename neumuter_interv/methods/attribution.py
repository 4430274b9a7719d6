"""The attribution baseline: zero the FFN neurons whose |activation x gradient| share is highest on the forget
set relative to other memorized text (the real-model findings, docs/real-world.md), at a given share of the
model's FFN neurons; the comparison runs it at NeuMuter's muted share (``MatchedTo``), so the two masks are
compared at the same size.

``neuron_attribution`` scores each neuron's contribution to the loss on a set of texts (a first-order
estimate of the loss change when it is muted); ``attribution_ratio`` divides the forget set's shares by a
reference set's; ``top_fraction_selection`` turns any per-neuron score into a mask that deploys like
NeuMuter's (``methods.neumuter.selection.freeze``). The separability study uses the same three.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..architectures import activation_module, ffn_width, num_layers, parse_layers
from ..data import IGNORE_INDEX, batches, model_context_length, pad_id_of, tokenize
from ..errors import NeuMuterError
from ..validation import check_number
from .base import MatchedTo, UnlearningMethod, UnlearningRecord, UnlearningResult, count_parameters, measured
from .neumuter.selection import Selection, flatten_by_layer, freeze, neuron_sets


@dataclass
class AttributionSettings:
    fraction: float | MatchedTo = 0.01  # share of the model's FFN neurons zeroed (compare: NeuMuter's share)
    layers: str | list[int] | MatchedTo = "1-"  # the layers ranked (compare: NeuMuter's)
    reference_texts: tuple[str, ...] = ()  # other memorized text; on a world, its ``attribution_reference``
    batch_size: int = 4


class AttributionBaseline(UnlearningMethod):
    """Per neuron of ``layers``, the forget set's share of |activation x gradient| over its share on the
    reference texts; the top ``fraction`` of the model's FFN neurons zeroed. No training: two attribution
    passes. The reference texts are retained text, so every report marks it †."""

    name = "attribution"

    def __init__(self, settings: AttributionSettings | None = None):
        self.settings = settings or AttributionSettings()

    def on_world(self, world) -> AttributionBaseline:
        self.settings = replace(self.settings, reference_texts=tuple(world.attribution_reference))
        return self

    def unlearn(self, model, tokenizer, forget_texts, retain_texts=None) -> UnlearningResult:
        settings = self.settings
        for name in ("fraction", "layers"):
            if isinstance(getattr(settings, name), MatchedTo):
                raise NeuMuterError(f"the attribution baseline's {name} is {getattr(settings, name)}: run it in a "
                                    "comparison after that method, or give a value")
        check_number("fraction", settings.fraction, minimum=0, maximum=1)  # 0: NeuMuter muted none
        reference = list(settings.reference_texts or retain_texts or [])
        if not reference:
            raise NeuMuterError("the attribution baseline ranks neurons against other memorized texts: give "
                                "reference_texts (or a retain set)")
        record = UnlearningRecord(method=self.name, total_parameters=count_parameters(model), uses_retain_set=True)
        with measured(record, next(model.parameters()).device):
            forget = neuron_attribution(model, tokenizer, forget_texts, settings.layers, settings.batch_size)
            other = neuron_attribution(model, tokenizer, reference, settings.layers, settings.batch_size)
            selection = top_fraction_selection(model, attribution_ratio(forget, other).per_layer, settings.fraction)
            frozen = freeze(model, selection)
        record.steps = 2  # one attribution pass over the forget set, one over the reference texts
        record.extra = {"neurons_muted": selection.neurons_muted,
                        "neurons_muted_fraction": selection.neurons_muted_fraction,
                        "reference_texts": len(reference)}
        return UnlearningResult(frozen, record)

    def budget(self) -> str | None:
        fraction = self.settings.fraction
        return None if isinstance(fraction, MatchedTo) else f"{100 * fraction:.2f}% of the FFN neurons"


def neuron_attribution(model, tokenizer, texts: Sequence[str], layers: str | Sequence[int] = "all",
                       batch_size: int = 8) -> dict[int, torch.Tensor]:
    """Per layer, a [d_ff] tensor: for each FFN neuron (the input of the down projection), the sum over
    positions of |activation x d(mean next-token CE)/d(activation)|.

    The mean runs over every target token of ``texts``, so the attribution is normalized per token and
    sets of different sizes compare. Pads add nothing: batches are right-padded, attention is causal and
    pad labels are ignored, so their gradients are zero. The model's weights are neither changed nor
    given gradients; each activation gets a zero "probe" added whose gradient is the activation's.
    """
    layer_list = parse_layers(layers, num_layers(model))
    sequences = tokenize(tokenizer, texts, model_context_length(model), "attribution")
    n_targets = sum(len(s) - 1 for s in sequences)
    device = next(model.parameters()).device
    totals = {layer: None for layer in layer_list}
    probes, activations = {}, {}

    def hook(layer):
        def add_probe(module, inputs, output):
            activations[layer] = output.detach()
            probes[layer] = torch.zeros_like(output, requires_grad=True)
            return output + probes[layer]
        return add_probe

    requires_grad = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.requires_grad_(False)
    model.eval()
    handles = [activation_module(model, layer).register_forward_hook(hook(layer)) for layer in layer_list]
    try:
        for batch in batches(sequences, batch_size, pad_id_of(tokenizer)):
            batch = batch.to(device)
            with torch.enable_grad():
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch.labels[:, 1:].flatten(),
                                       ignore_index=IGNORE_INDEX, reduction="sum") / n_targets
                gradients = torch.autograd.grad(loss, [probes[layer] for layer in layer_list])
            for layer, gradient in zip(layer_list, gradients):
                score = (activations[layer].float() * gradient.float()).abs().sum(dim=(0, 1)).cpu()
                totals[layer] = score if totals[layer] is None else totals[layer] + score
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
        model.train(was_training)
    return totals


@dataclass
class AttributionRatio:
    """Per-neuron forget/retain attribution ratios (per layer) and their quantiles over all neurons."""

    per_layer: dict[int, torch.Tensor]
    median: float
    q99: float
    q999: float
    max: float

    def summary(self) -> dict[str, float]:
        return {"median": self.median, "q99": self.q99, "q99.9": self.q999, "max": self.max}


def attribution_ratio(forget_attr: Mapping[int, torch.Tensor], retain_attr: Mapping[int, torch.Tensor],
                      eps: float = 0.01) -> AttributionRatio:
    """Per neuron, its share of the forget set's total attribution over its share of the retain set's.

    Shares, not raw attributions: a set the model knows better has a lower loss and smaller gradients
    everywhere, which would shift every raw ratio alike (a TOFU-like injected model recalls its forget
    people better than its retain people). ``eps`` x the mean share (1 / number of neurons) is added to
    both shares: a floor so that near-silent neurons do not produce large ratios out of noise.
    """
    if set(forget_attr) != set(retain_attr):
        raise ValueError("forget and retain attributions cover different layers")
    layers = sorted(forget_attr)
    forget_total = float(sum(forget_attr[layer].double().sum() for layer in layers))
    retain_total = float(sum(retain_attr[layer].double().sum() for layer in layers))
    floor = eps / sum(forget_attr[layer].numel() for layer in layers)
    per_layer = {layer: (forget_attr[layer].double() / forget_total + floor)
                 / (retain_attr[layer].double() / retain_total + floor) for layer in layers}
    ratios = torch.cat(list(per_layer.values()))
    quantiles = torch.quantile(ratios, torch.tensor([0.5, 0.99, 0.999], dtype=torch.float64)).tolist()
    return AttributionRatio({layer: ratio.float() for layer, ratio in per_layer.items()}, *quantiles,
                            float(ratios.max()))


def top_fraction_selection(model, scores: Mapping[int, torch.Tensor], fraction: float) -> Selection:
    """The ``fraction`` of all FFN neurons of ``model`` with the highest ``scores`` (over the scored
    layers), muted to 0, as a ``Selection`` that ``methods.neumuter.selection.freeze`` deploys."""
    layers, flat, owner, offsets = flatten_by_layer(scores)
    k = min(flat.numel(), round(fraction * ffn_width(model) * num_layers(model)))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    return Selection(neuron_sets(chosen, torch.zeros_like(flat), layers, owner, offsets), ffn_width(model),
                     num_layers(model), model.config.model_type, {"rule": "top_fraction_of_scores", "fraction": fraction, "k": k})
