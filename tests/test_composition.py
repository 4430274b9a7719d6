"""Composition: NeuMuter masks multiply per neuron (order-independent, union of layers), a composed
mask equals stacking both masks as pyvene interventions, and the frozen mask runs inside one
IntervenableModel next to other pyvene interventions (steering, collection)."""

from __future__ import annotations

import pytest
import pyvene as pv
import torch

from neumuter_interv.export import compose
from neumuter_interv.intervenable import intervened_logits
from neumuter_interv.interventions import FrozenScaling
from neumuter_interv.methods.neumuter import NeuronSet, Selection, freeze

FIRST = Selection({0: NeuronSet([1, 5], [0.01, 0.05])}, 64, 2, "gpt_neo")
SECOND = Selection({0: NeuronSet([5, 7], [0.5, 0.02]), 1: NeuronSet([3], [0.0])}, 64, 2, "gpt_neo")


@pytest.fixture
def inputs():
    input_ids = torch.randint(3, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def frozen_scaling(selection: Selection, layer: int) -> FrozenScaling:
    neurons = selection.layers[layer]
    return FrozenScaling(embed_dim=selection.ffn_width, neuron_indices=neurons.indices, neuron_scales=neurons.scales)


def on_ffn_activation(layer: int, intervention) -> pv.RepresentationConfig:
    return pv.RepresentationConfig(layer=layer, component="mlp_activation", unit="pos", intervention=intervention)


def test_scales_multiply_per_neuron_over_the_union_of_layers():
    composed = compose([FIRST, SECOND])
    assert composed.layers[0].indices == [1, 5, 7]
    assert composed.layers[0].scales == pytest.approx([0.01, 0.05 * 0.5, 0.02])
    assert composed.layers[1].indices == [3] and composed.layers[1].scales == [0.0]


def test_composition_does_not_depend_on_the_order():
    forwards, backwards = compose([FIRST, SECOND]), compose([SECOND, FIRST])
    assert {k: (v.indices, v.scales) for k, v in forwards.layers.items()} == \
        {k: (v.indices, v.scales) for k, v in backwards.layers.items()}


def test_one_composed_mask_equals_both_masks_stacked_as_pyvene_interventions(make_model, inputs):
    model = make_model("gpt_neo")
    stacked = pv.IntervenableModel(pv.IntervenableConfig(representations=[
        on_ffn_activation(0, frozen_scaling(FIRST, 0)),
        on_ffn_activation(0, frozen_scaling(SECOND, 0)),  # a second intervention on the same activation
        on_ffn_activation(1, frozen_scaling(SECOND, 1)),
    ]), model=model)
    composed = freeze(model, compose([FIRST, SECOND]))
    torch.testing.assert_close(intervened_logits(stacked, **inputs), intervened_logits(composed, **inputs),
                               atol=1e-6, rtol=0)


def test_the_frozen_mask_runs_with_steering_and_collection_in_one_intervenable_model(make_model, inputs):
    """Checked against the same three edits written as plain PyTorch forward hooks."""
    model = make_model("gpt_neo")
    steering = torch.randn(32, generator=torch.Generator().manual_seed(1))
    combined = pv.IntervenableModel(pv.IntervenableConfig(representations=[
        on_ffn_activation(0, frozen_scaling(FIRST, 0)),
        pv.RepresentationConfig(layer=1, component="block_output", unit="pos",
                                intervention=pv.AdditionIntervention(source_representation=steering, embed_dim=32)),
        pv.RepresentationConfig(layer=0, component="block_output", unit="pos", intervention=pv.CollectIntervention()),
    ]), model=model)
    (_, collected), outputs = combined(dict(inputs), unit_locations=None)

    scale, captured = frozen_scaling(FIRST, 0).dense_scale(), {}
    hooks = [
        model.transformer.h[0].mlp.act.register_forward_hook(lambda module, args, output: output * scale),
        model.transformer.h[1].register_forward_hook(lambda module, args, output: (output[0] + steering, *output[1:])),
        model.transformer.h[0].register_forward_hook(lambda module, args, output: captured.update(block0=output[0])),
    ]
    with torch.no_grad():
        expected = model(**inputs).logits
    for hook in hooks:
        hook.remove()

    torch.testing.assert_close(outputs.logits, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(collected[0], captured["block0"], atol=1e-6, rtol=0)
    assert not torch.allclose(outputs.logits, intervened_logits(freeze(model, FIRST), **inputs), atol=1e-3)
