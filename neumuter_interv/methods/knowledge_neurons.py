"""Integrated-gradients knowledge neurons (IG; Dai et al., ACL 2022, "Knowledge Neurons in Pretrained
Transformers"; as used for unlearning by DEPN, Wu et al., EMNLP 2023, and Chang et al., 2024).

For each forget sample, each target token x_t and each layer, the FFN activation a at the last input
position is scaled from 0 to a in ``steps`` steps (Riemann sum), and the attribution of neuron i is
a_i * mean over steps of d p(x_t | x_<t) / d a_i. Each token's attributions are divided by their
largest absolute value (Dai et al. keep neurons above 0.2 x max; normalizing keeps every token's vote
equal) and summed over tokens and samples. Neurons are then zeroed (their input column of the FFN
output projection set to 0, a weight edit) in rounds of ``neurons_per_round``, highest score first,
until the stop criterion holds or ``max_neurons`` are zeroed.

One forward and backward pass per (sample, token, layer), batched over the steps: this is why the
paper's Table 9 has IG at 161 minutes for GPT-Neo 125M. ``positions_per_sample`` attributes only that
many evenly spaced tokens of each sample (a reduced, much faster setting); ``None`` attributes all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..architectures import activation_module, num_layers, output_projection, parse_layers
from ..data import model_context_length, tokenize
from ..lm import resolve_device
from .base import UnlearningMethod, UnlearningRecord, UnlearningResult, count_parameters, measured
from .ffn_weights import projection_weight
from .finetune import StopCriterion


@dataclass
class KnowledgeNeuronSettings:
    steps: int = 20
    layers: str | list[int] = "all"
    positions_per_sample: int | None = None
    neurons_per_round: int = 10
    max_neurons: int = 500
    stop_when: StopCriterion | None = field(default=None, repr=False, compare=False)
    device: str = "auto"


class KnowledgeNeurons(UnlearningMethod):
    name = "ig"

    def __init__(self, settings: KnowledgeNeuronSettings | None = None):
        self.settings = settings or KnowledgeNeuronSettings()

    def unlearn(self, model, tokenizer, forget_texts, retain_texts=None) -> UnlearningResult:
        settings = self.settings
        device = resolve_device(settings.device)
        forget_ids = tokenize(tokenizer, forget_texts, model_context_length(model), "forget")
        layers = parse_layers(settings.layers, num_layers(model))
        record = UnlearningRecord(method=self.name, total_parameters=count_parameters(model))
        with measured(record, device):
            model.to(device).eval()
            scores, record.steps = self.attribution_scores(model, forget_ids, layers, device)
            zeroed = self.zero_neurons(model, scores, layers)
        record.extra = {"neurons_zeroed": zeroed, "neurons_total": int(scores.numel())}
        return UnlearningResult(model, record)

    def attribution_scores(self, model, forget_ids: list[list[int]], layers: list[int], device) -> tuple[torch.Tensor, int]:
        """[len(layers), d_ff] summed normalized attributions, and the number of gradient passes."""
        scores = None
        passes = 0
        requires_grad = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(False)
        try:
            for sample in forget_ids:
                for t in self._target_positions(len(sample)):
                    prefix = torch.tensor(sample[:t], device=device)
                    per_layer = torch.stack([self._token_attribution(model, layer, prefix, sample[t]) for layer in layers])
                    per_layer = per_layer / per_layer.abs().max().clamp(min=1e-12)
                    scores = per_layer if scores is None else scores + per_layer
                    passes += len(layers)
        finally:
            for p, flag in zip(model.parameters(), requires_grad):
                p.requires_grad_(flag)
        return scores, passes

    def _target_positions(self, length: int) -> list[int]:
        targets = list(range(1, length))
        count = self.settings.positions_per_sample
        if count is None or count >= len(targets):
            return targets
        return [targets[i] for i in np.linspace(0, len(targets) - 1, count).round().astype(int)]

    def _token_attribution(self, model, layer: int, prefix: torch.Tensor, target: int) -> torch.Tensor:
        """IG of p(target | prefix) w.r.t. layer ``layer``'s FFN activation at the last prefix position."""
        steps = self.settings.steps
        alphas = torch.arange(1, steps + 1, device=prefix.device, dtype=torch.float32) / steps
        captured = {}

        def scale_last_position(module, inputs, output):
            original = output[:, -1].detach()
            scaled = (alphas[:, None] * original).requires_grad_(True)
            captured["original"], captured["scaled"] = original[0], scaled
            return torch.cat([output[:, :-1], scaled.unsqueeze(1).to(output.dtype)], dim=1)

        handle = activation_module(model, layer).register_forward_hook(scale_last_position)
        try:
            with torch.enable_grad():
                logits = model(input_ids=prefix.unsqueeze(0).expand(steps, -1)).logits[:, -1]
                probability = F.softmax(logits.float(), dim=-1)[:, target].sum()
                (gradient,) = torch.autograd.grad(probability, captured["scaled"])
        finally:
            handle.remove()
        return captured["original"].float() * gradient.float().mean(0)

    @torch.no_grad()
    def zero_neurons(self, model, scores: torch.Tensor, layers: list[int]) -> int:
        """Zero the highest-scoring neurons round by round; the number zeroed."""
        settings = self.settings
        width = scores.shape[1]
        order = scores.flatten().argsort(descending=True)[: settings.max_neurons].tolist()
        zeroed = 0
        while zeroed < len(order) and not (settings.stop_when is not None and settings.stop_when(model)):
            for flat in order[zeroed: zeroed + settings.neurons_per_round]:
                layer, neuron = layers[flat // width], flat % width
                projection_weight(output_projection(model, layer))[:, neuron] = 0
            zeroed = min(zeroed + settings.neurons_per_round, len(order))
        return zeroed
