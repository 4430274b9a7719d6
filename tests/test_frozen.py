"""The deployed mask (Eq. 14): a deterministic pyvene intervention that saves, loads and generates."""

import json
import subprocess
import sys

import pytest
import pyvene as pv
import torch

from neumuter_interv.intervenable import intervened_generate, intervened_logits, interventions_by_layer
from neumuter_interv.interventions import FrozenScaling
from neumuter_interv.methods.neumuter import NeuronSet, Selection, freeze
from neumuter_interv.serialization import save_intervenable

IDS = [[5, 9, 12, 7, 3, 21, 8], [4, 4, 17, 30, 6, 2, 11]]


def example_selection(model_type: str = "gpt_neo") -> Selection:
    return Selection(
        {0: NeuronSet([1, 7, 40], [0.0, 0.05, 0.01]), 1: NeuronSet([3], [0.02])},
        ffn_width=64, num_model_layers=2, model_type=model_type,
    )


def test_unselected_neurons_are_exactly_one_and_selected_keep_their_scale():
    scaling = FrozenScaling(embed_dim=8, neuron_indices=[2, 5], neuron_scales=[0.0, 0.5])
    assert scaling.dense_scale().tolist() == [1, 1, 0, 1, 1, 0.5, 1, 1]
    base = torch.randn(2, 3, 8)
    out = scaling(base)
    assert torch.equal(out[..., [0, 1, 3, 4, 6, 7]], base[..., [0, 1, 3, 4, 6, 7]])
    assert torch.equal(out[..., 2], torch.zeros(2, 3)) and torch.equal(out[..., 5], base[..., 5] * 0.5)
    assert not scaling.training


def test_freezing_matches_scaling_the_output_projection_columns(make_model):
    model = make_model("gpt_neo")
    ids = torch.tensor(IDS)
    frozen_logits = intervened_logits(freeze(model, example_selection()), ids, torch.ones_like(ids))
    edited = make_model("gpt_neo")
    with torch.no_grad():
        for layer, neurons in example_selection().layers.items():
            edited.transformer.h[layer].mlp.c_proj.weight[:, neurons.indices] *= torch.tensor(neurons.scales)
    torch.testing.assert_close(frozen_logits, edited(input_ids=ids).logits, atol=1e-6, rtol=0)


def test_generate_gates_the_prompt_too(make_model):
    model = make_model("gpt_neo")
    selection = Selection({layer: NeuronSet(list(range(64)), [0.0] * 64) for layer in (0, 1)}, 64, 2, "gpt_neo")
    pv_model = freeze(model, selection)
    ids = torch.tensor(IDS)
    generated = intervened_generate(pv_model, ids, torch.ones_like(ids), max_new_tokens=1, do_sample=False)
    first_token_gated = intervened_logits(pv_model, ids, torch.ones_like(ids))[:, -1].argmax(-1)
    assert torch.equal(generated[:, -1], first_token_gated)


LOAD_AND_RUN = """
import json, sys, torch, transformers
from neumuter_interv.intervenable import load, intervened_logits, intervened_generate, interventions_by_layer
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
pv_model = load(sys.argv[2], model)
ids = torch.tensor(json.loads(sys.argv[3])); mask = torch.ones_like(ids)
logits = intervened_logits(pv_model, ids, mask)
generated = intervened_generate(pv_model, ids, mask, max_new_tokens=5, do_sample=False)
modes = [iv.training for iv in interventions_by_layer(pv_model).values()]
torch.save({"logits": logits, "generated": generated, "modes": modes}, sys.argv[4])
"""


@pytest.mark.parametrize("architecture", ["gpt_neo", "phi3"])
def test_save_then_load_in_a_fresh_process_gives_identical_logits_and_generations(make_model, tmp_path, architecture):
    model = make_model(architecture)
    model.save_pretrained(tmp_path / "model")
    pv_model = freeze(model, example_selection(architecture))
    save_intervenable(pv_model, tmp_path / "frozen")
    ids = torch.tensor(IDS)
    logits = intervened_logits(pv_model, ids, torch.ones_like(ids))
    generated = intervened_generate(pv_model, ids, torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(tmp_path / "model"), str(tmp_path / "frozen"),
                    json.dumps(IDS), str(tmp_path / "out.pt")], check=True)
    fresh = torch.load(tmp_path / "out.pt")
    assert torch.equal(fresh["logits"], logits)
    assert torch.equal(fresh["generated"], generated)
    assert fresh["modes"] == [False, False]


def test_pyvene_itself_round_trips_the_sparse_mask(make_model, tmp_path):
    model = make_model("gpt_neo")
    freeze(model, example_selection()).save(str(tmp_path / "frozen"))
    loaded = interventions_by_layer(pv.IntervenableModel.load(str(tmp_path / "frozen"), model))
    assert loaded[0].neuron_indices.tolist() == [1, 7, 40]
    assert loaded[1].neuron_scales.tolist() == pytest.approx([0.02])


def test_composed_masks_multiply_per_neuron():
    first = example_selection()
    second = Selection({0: NeuronSet([7, 9], [0.5, 0.0])}, 64, 2, "gpt_neo")
    composed = first.compose(second)
    assert composed.layers[0].indices == [1, 7, 9, 40]
    assert composed.layers[0].scales == pytest.approx([0.0, 0.025, 0.0, 0.01])
    assert composed.layers[1].indices == [3]
