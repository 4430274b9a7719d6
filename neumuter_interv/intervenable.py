"""Glue between our FFN interventions and ``pyvene.IntervenableModel``.

pyvene keys interventions by strings such as ``layer_3_comp_mlp_activation_unit_pos_nunit_1#0``;
everything here speaks in 0-based layer indices instead.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence

import pyvene as pv
import torch

from .architectures import COMPONENT, activation_module, architecture_of, ffn_width, num_layers, parse_layers


def attach(model: torch.nn.Module, layers: Sequence[int], make: Callable[[int, int], pv.Intervention]) -> pv.IntervenableModel:
    """Wrap ``model`` with ``make(layer, ffn_width)`` on the FFN activation of each layer.

    The base model is frozen by pyvene (``requires_grad=False``, eval mode); only the interventions train.
    """
    architecture_of(model)  # clear error for unknown architectures, pyvene registration for the rest
    parse_layers(list(layers), num_layers(model))  # a layer the model lacks, or not an integer: one line naming it
    width = ffn_width(model)
    device = next(model.parameters()).device
    representations = [
        pv.RepresentationConfig(layer=int(layer), component=COMPONENT, unit="pos",
                                intervention=make(int(layer), width).to(device))
        for layer in layers
    ]
    pv_model = pv.IntervenableModel(pv.IntervenableConfig(representations=representations), model=model)
    pv_model.disable_model_gradients()
    for layer in layers:
        guard_saved_output(activation_module(model, int(layer)))
    return pv_model


def guard_saved_output(module: torch.nn.Module) -> None:
    """Let pyvene write into ``module``'s output without breaking the backward pass.

    pyvene's setter scatters the intervened activation INTO the module's output tensor, in place. An
    activation whose backward reads its own output (ReLU, as in OPT; tanh, sigmoid) then fails with
    "modified by an inplace operation". A guarded module returns a copy whenever the operation that made
    its output saved that output for backward; GELU and SiLU (which save their input) pay nothing.
    pyvene removes every forward hook of the model on each call, so the guard is the module's own
    ``forward`` (bound to the module, so a deep copy guards its copy). Idempotent.
    """
    if not getattr(module, "_neumuter_output_guard", False):
        module.forward = types.MethodType(_forward_with_unsaved_output, module)
        module._neumuter_output_guard = True


def _forward_with_unsaved_output(self, *args, **kwargs):
    output = type(self).forward(self, *args, **kwargs)
    if isinstance(output, torch.Tensor) and hasattr(output.grad_fn, "_saved_result"):
        return output.clone()
    return output


def interventions_by_layer(pv_model: pv.IntervenableModel) -> dict[int, pv.Intervention]:
    """``{layer: intervention}`` for every FFN-activation intervention of ``pv_model``."""
    layers = {}
    for representation, intervention in zip(pv_model.representations.values(), pv_model.interventions.values()):
        if representation.component == COMPONENT:
            layers[int(representation.layer)] = intervention
    return dict(sorted(layers.items()))


def set_intervention_mode(pv_model: pv.IntervenableModel, training: bool) -> None:
    """pyvene's ``train()``/``eval()`` switch only the base model; this switches the interventions."""
    for intervention in pv_model.interventions.values():
        intervention.train(training)


def intervened_logits(pv_model: pv.IntervenableModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits with every intervention applied at every position."""
    _, outputs = pv_model({"input_ids": input_ids, "attention_mask": attention_mask}, unit_locations=None)
    return outputs.logits


def intervened_generate(pv_model: pv.IntervenableModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> torch.Tensor:
    """``generate`` with the interventions on every position, the prompt included (pyvene's default
    skips the prompt pass, leaving the first new token un-intervened)."""
    _, sequences = pv_model.generate(
        {"input_ids": input_ids, "attention_mask": attention_mask},
        unit_locations=None,
        intervene_on_prompt=True,
        **kwargs,
    )
    return sequences


def load(directory: str, model: torch.nn.Module) -> pv.IntervenableModel:
    """Load saved interventions safely (allow-listed classes, safetensors weights only), in eval mode.

    ``pyvene.IntervenableModel.load`` would import any class named in ``config.json`` and unpickle
    ``intkey_*.bin``; see ``serialization.load_intervenable``.
    """
    from .serialization import load_intervenable

    return load_intervenable(directory, model)
