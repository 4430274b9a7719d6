"""The architecture table and layer specifications."""

import pytest
import torch
import transformers
from conftest import FORGET, tiny_model_of

from neumuter_interv import NeuMuterError, describe_layers, parse_layers
from neumuter_interv.architectures import ARCHITECTURES, activation_module, architecture_of, ffn_width
from neumuter_interv.methods.neumuter import NeuMuter, NeuMuterConfig


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("all", [0, 1, 2, 3, 4, 5]), ("3", [3]), ("1-3", [1, 2, 3]), ("0-1,4", [0, 1, 4]), ("2-", [2, 3, 4, 5]),
     ([5, 1, 1], [1, 5]), (2, [2])],
)
def test_layer_specs_are_zero_based(spec, expected):
    assert parse_layers(spec, 6) == expected


@pytest.mark.parametrize("spec", ["6", "0-9", [7], "-1,x", "4-2", "", [0.7], ["1"], "²", "٠"])
def test_bad_layer_specs_name_the_problem(spec):
    with pytest.raises(NeuMuterError, match="layer"):
        parse_layers(spec, 6)


def test_out_of_range_layer_error_states_the_valid_range():
    with pytest.raises(NeuMuterError, match=r"6 layers, numbered 0-5 \(0-based\)"):
        parse_layers("2-8", 6)


def test_selected_layers_are_described_in_both_numberings():
    assert describe_layers([1, 2, 3, 4, 5, 6, 7]) == "0-based 1-7 (paper blocks 2-8)"
    assert describe_layers([9, 10, 11, 12, 13, 14, 15, 20]) == "0-based 9-15,20 (paper blocks 10-16,21)"


@pytest.mark.parametrize("architecture", ["gpt_neo", "llama", "phi3", "opt"])
def test_every_table_entry_points_at_an_activation_of_the_ffn_width(make_model, architecture):
    model = make_model(architecture)
    assert ffn_width(model) == 64
    assert isinstance(activation_module(model, 1), model.get_submodule(architecture_of(model).activation_path(0)).__class__)


def test_an_unknown_architecture_is_refused_with_a_hint():
    model = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1,
                                                                  num_attention_heads=1, intermediate_size=8))
    with pytest.raises(NeuMuterError, match="register_architecture"):
        architecture_of(model)


# every family of the table, plus ReLU FFNs (OPT's own, GPT-2 and GPT-Neo configured with relu), whose backward
# reads the activation's output that pyvene writes into
TRAINABLE = [(model_type, {}) for model_type in ARCHITECTURES] + [
    ("gpt_neo", {"activation_function": "relu"}), ("gpt2", {"activation_function": "relu"})]


@pytest.mark.parametrize(("model_type", "overrides"), TRAINABLE,
                         ids=[f"{t}-{o['activation_function']}" if o else t for t, o in TRAINABLE])
def test_neumuter_trains_the_gates_of_every_architecture_of_the_table(tokenizer, model_type, overrides):
    model = tiny_model_of(model_type, len(tokenizer), **overrides)
    before = {name: p.clone() for name, p in model.named_parameters()}
    config = NeuMuterConfig(epochs=1, batch_size=2, learning_rate=0.5, neighbour_source="random",
                            selection="fraction", fraction=0.05, progress=False)
    run = NeuMuter(config).run(model, tokenizer, FORGET)
    assert run.localization.steps == 2
    assert all(bool((alpha != alpha.flatten()[0]).any()) for alpha in run.localization.log_alpha.values())
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # the model stays frozen


def test_attaching_to_a_layer_the_model_lacks_names_the_layer(make_model):
    from neumuter_interv.intervenable import attach
    from neumuter_interv.interventions import FrozenScaling

    with pytest.raises(NeuMuterError, match="layer 9 is out of range"):
        attach(make_model("gpt_neo"), [9], lambda layer, width: FrozenScaling(embed_dim=width))
