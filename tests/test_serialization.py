"""Safe loading of saved interventions: allow-listed classes only, weights only from safetensors,
clear refusals for tampered or malformed directories, nothing imported or unpickled on the way."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import pyvene as pv
import torch
from conftest import FORGET

from neumuter_interv import serialization
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.intervenable import intervened_logits, load
from neumuter_interv.methods.neumuter import NeuronSet, Selection, freeze
from neumuter_interv.serialization import (
    WEIGHTS_FILE,
    load_intervenable,
    register_safe_intervention,
    safe_intervention_classes,
    save_intervenable,
)

SELECTION = Selection({0: NeuronSet([1, 5, 9], [0.01, 0.05, 0.0]), 1: NeuronSet([3], [0.07])}, 64, 2, "gpt_neo")


@pytest.fixture
def inputs():
    input_ids = torch.randint(3, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


@pytest.fixture
def saved(tmp_path, make_model):
    """A frozen NeuMuter intervention saved with ``save_intervenable`` (safetensors, no pickles)."""
    directory = tmp_path / "saved"
    save_intervenable(freeze(make_model("gpt_neo"), SELECTION), directory)
    return directory


def rewrite_config(directory, change) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def test_save_writes_one_safetensors_file_and_pyvenes_config_only(saved):
    assert sorted(path.name for path in saved.iterdir()) == ["config.json", WEIGHTS_FILE]


def test_round_trip_reproduces_the_logits_in_eval_mode(saved, make_model, inputs):
    expected = intervened_logits(freeze(make_model("gpt_neo"), SELECTION), **inputs)
    loaded = load(saved, make_model("gpt_neo"))
    assert not any(intervention.training for intervention in loaded.interventions.values())
    torch.testing.assert_close(intervened_logits(loaded, **inputs), expected, atol=0, rtol=0)


def test_a_class_outside_the_allow_list_is_refused_without_importing_it(saved, make_model, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    (tmp_path / "payload_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Payload: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rewrite_config(saved, lambda c: c["intervention_types"].__setitem__(0, "<class 'payload_module.Payload'>"))

    with pytest.raises(NeuMuterError, match=r"config.json names intervention class <class 'payload_module.Payload'>, "
                                            "which is not in the allow-list"):
        load_intervenable(saved, make_model("gpt_neo"))
    assert not marker.exists() and "payload_module" not in sys.modules


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_directory_with_only_pickled_weights_is_refused_without_unpickling(tmp_path, make_model):
    directory = tmp_path / "pickled"
    freeze(make_model("gpt_neo"), SELECTION).save(str(directory))  # pyvene's own format: intkey_*.bin
    marker = tmp_path / "unpickled"
    for weights in directory.glob("intkey_*.bin"):
        weights.write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker)))

    with pytest.raises(NeuMuterError, match=r"holds its weights only as pickles \(intkey_layer_0_.*\.bin, .*\); "
                                            "refusing to unpickle"):
        load(directory, make_model("gpt_neo"))
    assert not marker.exists()


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda path: path.write_text("{not json"), "not valid JSON"),
    (lambda path: path.write_text("[1, 2]"), "is not a pyvene intervention config"),
    (lambda path: path.write_text(json.dumps({"intervention_types": [], "representations": []})),
     "is not a pyvene intervention config"),
    (lambda path: path.unlink(), "has no config.json"),
])
def test_a_malformed_config_is_refused_clearly(saved, make_model, tamper, message):
    tamper(saved / "config.json")
    with pytest.raises(NeuMuterError, match=message):
        load_intervenable(saved, make_model("gpt_neo"))


def test_a_representation_that_names_its_own_intervention_is_refused(saved, make_model):
    rewrite_config(saved, lambda c: c["representations"][0].__setitem__(5, "<class 'os.system'>"))
    with pytest.raises(NeuMuterError, match="names its own intervention"):
        load_intervenable(saved, make_model("gpt_neo"))


def test_tensors_that_do_not_fit_the_model_are_refused(saved, make_model):
    rewrite_config(saved, lambda c: c["representations"][1].__setitem__(0, 5))
    with pytest.raises(NeuMuterError, match="does not fit this GPTNeoForCausalLM"):
        load_intervenable(saved, make_model("gpt_neo"))


def test_a_corrupt_weights_file_is_refused(saved, make_model):
    (saved / WEIGHTS_FILE).write_bytes(b"\x00" * 16)
    with pytest.raises(NeuMuterError, match="is not a readable safetensors file"):
        load_intervenable(saved, make_model("gpt_neo"))


class Doubling(pv.ConstantSourceIntervention):
    """A user-defined intervention: allowed only once registered."""

    def forward(self, base, source=None, subspaces=None, **kwargs):
        return base * 2


def test_the_allow_list_is_extensible_and_pyvene_built_ins_load(tmp_path, make_model, inputs, monkeypatch):
    monkeypatch.setattr(serialization, "_SAFE_INTERVENTIONS", safe_intervention_classes())  # registration is process-wide
    config = pv.IntervenableConfig(representations=[
        pv.RepresentationConfig(layer=0, component="block_output", unit="pos", intervention=Doubling()),
        pv.RepresentationConfig(layer=1, component="block_output", unit="pos",
                                intervention=pv.AdditionIntervention(source_representation=torch.randn(32), embed_dim=32)),
    ])
    model = make_model("gpt_neo")
    original = pv.IntervenableModel(config, model=model)
    save_intervenable(original, tmp_path / "custom")
    expected = original(dict(inputs), unit_locations=None)[1].logits

    with pytest.raises(NeuMuterError, match="Doubling'>, which is not in the allow-list"):
        load_intervenable(tmp_path / "custom", make_model("gpt_neo"))
    register_safe_intervention(Doubling)
    loaded = load_intervenable(tmp_path / "custom", make_model("gpt_neo"))
    torch.testing.assert_close(loaded(dict(inputs), unit_locations=None)[1].logits, expected, atol=0, rtol=0)


def rewrite_tensors(directory, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(directory / WEIGHTS_FILE))
    change(tensors)
    save_file(tensors, str(directory / WEIGHTS_FILE))


@pytest.fixture
def saved_gates(tmp_path, make_model):
    """Trainable NeuMuter gates saved as they are mid-run."""
    from neumuter_interv.methods.neumuter import NeuMuterConfig
    from neumuter_interv.methods.neumuter.localize import attach_gates

    directory = tmp_path / "gates"
    save_intervenable(attach_gates(make_model("gpt_neo"), NeuMuterConfig()), directory)
    return directory


def test_a_gate_with_a_nan_is_refused_instead_of_scoring_as_perfect_forgetting(saved_gates, make_model):
    def poison(tensors):
        key = next(name for name in tensors if name.endswith("log_alpha"))
        tensors[key][3] = float("nan")

    rewrite_tensors(saved_gates, poison)
    with pytest.raises(NeuMuterError, match="NaN or infinite"):
        load_intervenable(saved_gates, make_model("gpt_neo"))


def test_gate_constants_outside_the_hard_concrete_family_are_refused(saved_gates, make_model):
    def stretch_inwards(tensors):
        key = next(name for name in tensors if name.endswith("hard_concrete_constants"))
        tensors[key] = torch.tensor([1 / 3, 0.1, 1.1], dtype=torch.float64)

    rewrite_tensors(saved_gates, stretch_inwards)
    with pytest.raises(NeuMuterError, match="gamma < 0"):
        load_intervenable(saved_gates, make_model("gpt_neo"))


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_indices_stored_in_a_narrower_integer_type_load_and_run(saved, make_model, inputs, dtype):
    def narrow(tensors):
        for name in tensors:
            if name.endswith("neuron_indices"):
                tensors[name] = tensors[name].to(dtype)

    rewrite_tensors(saved, narrow)
    expected = intervened_logits(freeze(make_model("gpt_neo"), SELECTION), **inputs)
    torch.testing.assert_close(intervened_logits(load(saved, make_model("gpt_neo")), **inputs), expected, atol=0, rtol=0)


def test_an_unknown_intervention_mode_is_refused(saved, make_model):
    rewrite_config(saved, lambda c: c.__setitem__("mode", "sideways"))
    with pytest.raises(NeuMuterError, match="unknown mode 'sideways'"):
        load_intervenable(saved, make_model("gpt_neo"))


def test_a_saved_run_reloads_on_its_model_generates_as_trained_and_refuses_other_weights(memorized, make_model, tmp_path):
    """``load_run(dir, model)`` gives back the run: the same mask, the same continuations; on a model with
    other weights it is refused by the fingerprint ``save`` recorded."""
    from neumuter_interv import NeuMuter, NeuMuterConfig, NeuMuterError, load_run

    model, tokenizer = memorized
    config = NeuMuterConfig(layers="0-1", epochs=2, selection="fraction", fraction=0.05, kl_weight=0.3, progress=False)
    run = NeuMuter(config, log=lambda message: None).run(model, tokenizer, FORGET[:2])
    run.save(tmp_path / "run")
    reloaded = load_run(tmp_path / "run", model)
    assert reloaded.selection.to_dict() == run.selection.to_dict()
    assert reloaded.config == run.config and reloaded.localization.steps == run.localization.steps
    prompts = [text.split()[0] for text in FORGET[:2]]
    assert reloaded.generate(tokenizer, prompts, max_new_tokens=5) == run.generate(tokenizer, prompts, max_new_tokens=5)
    with pytest.raises(NeuMuterError, match="other weights"):
        load_run(tmp_path / "run", make_model("gpt_neo"))


def test_a_run_whose_metrics_are_not_numbers_is_refused_in_one_line(memorized, tmp_path):
    from neumuter_interv import NeuMuter, NeuMuterConfig, NeuMuterError, load_run

    model, tokenizer = memorized
    config = NeuMuterConfig(layers="0", epochs=1, selection="fraction", fraction=0.05, progress=False)
    NeuMuter(config, log=lambda message: None).run(model, tokenizer, FORGET[:1]).save(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").write_text('{"steps": "many"}')
    with pytest.raises(NeuMuterError, match="must be numbers"):
        load_run(tmp_path / "run", model)
