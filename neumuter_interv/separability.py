"""Are the forget people's memories held by neurons of their own? Measures for the separability study.

NeuMuter's premise (Hou et al., 2025, Section 3) is that a few FFN neurons hold the memory of the forget
samples specifically, so muting them forgets those samples and little else; TOFU (Maini et al., 2024)
likewise assumes that forget and retain authors can be told apart inside the model. Two measures test
this on a model and its forget and retain sets:

- ``neuron_attribution`` / ``attribution_ratio``: how much each FFN neuron contributes to the loss on the
  forget texts relative to the retain texts (|activation x gradient|, a first-order estimate of the loss
  change when the neuron is muted). A neuron specific to the forget people has a ratio far above 1, and
  far above what two halves of the retain people give each other.
- ``specificity``: what a mask actually did, from two ``evaluate`` results: the forget MA drop divided by
  the retain MA drop (1 = both sets forgotten alike, the shared "memorization machinery" muted).

``top_fraction_selection`` turns attribution scores into a mask that deploys like NeuMuter's, so that
masks from attribution and from trained gates are compared at the same size.

``recipes/separability_study.py`` runs both over variants of the testbed world.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .architectures import activation_module, ffn_width, num_layers, parse_layers
from .data import IGNORE_INDEX, batches, model_context_length, pad_id_of, tokenize
from .methods.neumuter.selection import Selection, flatten_by_layer, neuron_sets


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


def specificity(before: Mapping, after: Mapping, min_retain_drop: float = 0.01) -> dict[str, float]:
    """Forget and retain MA drops of a mask, their ratio, and the relative change of held-out PPL.

    A retain drop under ``min_retain_drop`` (one MA point: about the noise of MA over a few dozen
    biographies) counts as that floor, so an untouched retain set gives a large finite specificity
    instead of a division by zero (or a sign flip when retain MA rose).
    """
    forget_drop = before["forget_ma"] - after["forget_ma"]
    retain_drop = before["retain_ma"] - after["retain_ma"]
    return {
        "forget_ma_drop": forget_drop,
        "retain_ma_drop": retain_drop,
        "specificity": forget_drop / max(retain_drop, min_retain_drop),
        "heldout_ppl_change": after["heldout_ppl"] / before["heldout_ppl"] - 1,
    }


def top_fraction_selection(model, scores: Mapping[int, torch.Tensor], fraction: float) -> Selection:
    """The ``fraction`` of all FFN neurons of ``model`` with the highest ``scores`` (over the scored
    layers), muted to 0, as a ``Selection`` that ``methods.neumuter.selection.freeze`` deploys."""
    layers, flat, owner, offsets = flatten_by_layer(scores)
    k = min(flat.numel(), round(fraction * ffn_width(model) * num_layers(model)))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    return Selection(neuron_sets(chosen, torch.zeros_like(flat), layers, owner, offsets), ffn_width(model),
                     num_layers(model), model.config.model_type, {"rule": "top_fraction_of_scores", "fraction": fraction, "k": k})
