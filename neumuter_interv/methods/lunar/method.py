"""LUNAR-like unlearning by neural activation redirection (Shen et al., NeurIPS 2025, "LUNAR: LLM
Unlearning via Neural Activation Redirection").

1. direction = mean residual stream after layer ``layer`` at the last token of refusal /
   "I don't know" prompts minus the same mean over the forget samples;
2. cache the inputs and outputs of that layer's FFN output projection on forget and retain texts;
3. change the projection's weight so that, in mean squared error, forget inputs give (original
   output + ``coefficient`` x direction) and retain inputs give the original output. LUNAR trains a
   copy with Adam on this MSE; the objective is linear least squares, so we solve it exactly (the
   minimum-norm change, through the pseudo-inverse of the cached activations): no learning rate or
   epochs to tune, and no under-training on small sets;
4. write the trained weights back (``apply_as="weight"``), or keep the model untouched and return a
   ``pyvene.IntervenableModel`` with an exactly equivalent ``ProjectionEdit`` (``apply_as="intervention"``).

Because the projection's output is added to the residual stream, shifting it by the direction moves
the residual stream of forget inputs towards the refusal region. Difference from LUNAR: the
redirection is trained at every token of a forget text, not only at the last prompt token, since
memorized text is reproduced at every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...architectures import num_layers, output_projection
from ...data import TokenBatch, batches, pad_id_of, tokenize
from ...intervenable import attach
from ...lm import resolve_device
from ..base import UnlearningMethod, UnlearningRecord, UnlearningResult, count_parameters, measured
from ..ffn_weights import projection_weight
from ..finetune import prepare_data
from .intervention import ProjectionEdit

REFUSALS = (
    "I don't know.",
    "I'm not able to answer that.",
    "I cannot share that information.",
    "Sorry, I have no information about that.",
    "I am not sure, I don't have that information.",
)
APPLY_AS = ("weight", "intervention")


@dataclass
class LUNARSettings:
    """``layer`` None is the middle layer (LUNAR edits one mid-to-late layer: 22 of 32 for Llama-3-8B).
    ``coefficient`` 2.0 is LUNAR's README example."""

    layer: int | None = None
    coefficient: float = 2.0
    refusal_prompts: tuple[str, ...] = REFUSALS
    apply_as: str = "weight"
    device: str = "auto"
    seed: int = 0

    def __post_init__(self):
        if self.apply_as not in APPLY_AS:
            raise ValueError(f"apply_as must be one of {APPLY_AS}, got {self.apply_as!r}")


class LUNAR(UnlearningMethod):
    name = "lunar"
    needs_retain = True

    def __init__(self, settings: LUNARSettings | None = None):
        self.settings = settings or LUNARSettings()

    def unlearn(self, model, tokenizer, forget_texts, retain_texts=None) -> UnlearningResult:
        settings = self.settings
        device = resolve_device(settings.device)
        torch.manual_seed(settings.seed)
        # One batch per set: activations of every forget and retain token are cached at once.
        data = prepare_data(model, tokenizer, forget_texts, retain_texts, None, device, True)
        layer = num_layers(model) // 2 if settings.layer is None else settings.layer
        record = UnlearningRecord(method=self.name, total_parameters=count_parameters(model), uses_retain_set=True)
        with measured(record, device):
            model.to(device).eval()
            projection = output_projection(model, layer)
            refusal_ids = tokenize(tokenizer, list(settings.refusal_prompts), None, "refusal prompt")
            refusals = batches(refusal_ids, len(refusal_ids), pad_id_of(tokenizer))[0].to(device)
            direction = _last_token_mean(model, refusals, layer) - _last_token_mean(model, data.forget_batches[0], layer)
            forget_inputs = _projection_inputs(model, projection, data.forget_batches[0])
            retain_inputs = _projection_inputs(model, projection, data.retain_batches[0])
            weight_delta = solve_redirection(forget_inputs, settings.coefficient * direction, retain_inputs)
            result_model = self._apply(model, layer, projection, weight_delta)
        record.steps = 1
        record.trainable_parameters = projection_weight(projection).numel()
        record.extra = {"layer": layer, "direction_norm": float(direction.norm())}
        return UnlearningResult(result_model, record)

    @torch.no_grad()
    def _apply(self, model, layer: int, projection, weight_delta: torch.Tensor):
        weight = projection_weight(projection)
        if self.settings.apply_as == "weight":
            weight.add_(weight_delta.to(weight.dtype))
            return model
        lift = torch.linalg.pinv(weight.float())
        return attach(model, [layer], lambda _, width: ProjectionEdit(weight_delta=weight_delta, lift=lift, embed_dim=width))


def solve_redirection(forget_inputs: torch.Tensor, shift: torch.Tensor, retain_inputs: torch.Tensor) -> torch.Tensor:
    """The smallest dW [hidden, d_ff] (minimum Frobenius norm) minimizing
    ||(W + dW) a_f + b - (W a_f + b + shift)||^2 + ||(W + dW) a_r + b - (W a_r + b)||^2,
    i.e. the exact minimizer of LUNAR's MSE objective: least squares on the cached activations."""
    inputs = torch.cat([forget_inputs, retain_inputs]).double()
    residuals = torch.cat([shift.expand(len(forget_inputs), -1), torch.zeros(len(retain_inputs), shift.numel(),
                                                                             device=shift.device)]).double()
    return (torch.linalg.pinv(inputs) @ residuals).T.float()


@torch.no_grad()
def _last_token_mean(model, batch: TokenBatch, layer: int) -> torch.Tensor:
    """Mean residual stream after ``layer`` at each sample's last non-pad token (right padding)."""
    hidden = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   output_hidden_states=True).hidden_states[layer + 1]
    last = batch.attention_mask.sum(1) - 1
    return hidden[torch.arange(len(hidden), device=hidden.device), last].float().mean(0)


@torch.no_grad()
def _projection_inputs(model, projection, batch: TokenBatch) -> torch.Tensor:
    """Inputs of ``projection`` (FFN activations) at the non-pad tokens of ``batch``: [tokens, d_ff]."""
    captured = {}

    def capture(module, inputs, output):
        captured["in"] = inputs[0]

    handle = projection.register_forward_hook(capture)
    try:
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    keep = batch.attention_mask.bool()
    return captured["in"][keep].float()

