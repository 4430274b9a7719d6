"""The GRUN-like gated ReFT intervention: orthonormal rotation, a gate that separates forget from
retain data, pyvene save/load with non-default shapes, and composition with FrozenScaling."""

from __future__ import annotations

import copy

import pyvene as pv
import torch
import transformers
from conftest import FORGET, RETAIN

from neumuter_interv.intervenable import intervened_logits, set_intervention_mode
from neumuter_interv.interventions import FrozenScaling
from neumuter_interv.methods.grun import GRUN, GatedReFT, GRUNSettings, attach_gated_reft


def encode(tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def mean_gate(pv_model, tokenizer, texts) -> float:
    ids, mask = encode(tokenizer, texts)
    with torch.no_grad():
        intervened_logits(pv_model, ids, mask)
    gates = torch.stack([iv.last_gate for iv in pv_model.interventions.values()])
    return float((gates * mask).sum() / (mask.sum() * len(gates)))


def test_trained_gate_opens_on_forget_and_closes_on_retain(memorized):
    model, tokenizer = memorized
    settings = GRUNSettings(layers=[1], gate_hidden=8, forget_loss="npo", gate_weight=5.0, learning_rate=1e-2,
                            max_epochs=20, device="cpu")
    untrained = mean_gate(attach_gated_reft(copy.deepcopy(model), settings), tokenizer, FORGET)
    result = GRUN(settings).unlearn(model, tokenizer, FORGET, RETAIN)
    # The test texts share most words (templated pairs), so 20 steps separate them only partly.
    forget_gate, retain_gate = mean_gate(result.model, tokenizer, FORGET), mean_gate(result.model, tokenizer, RETAIN)
    assert forget_gate > retain_gate + 0.05
    assert forget_gate > untrained
    for intervention in result.model.interventions.values():
        rotation = intervention.rotation.weight
        torch.testing.assert_close(rotation @ rotation.T, torch.eye(intervention.rank), atol=1e-5, rtol=0)
    assert result.record.trainable_parameters == sum(
        p.numel() for iv in result.model.interventions.values() for p in iv.parameters())


def random_gated_reft(hidden: int, rank: int, gate_hidden: int) -> GatedReFT:
    intervention = GatedReFT(rank=rank, gate_hidden=gate_hidden, embed_dim=hidden)
    with torch.no_grad():
        for parameter in intervention.parameters():
            parameter.normal_(0, 0.5)
    return intervention


def test_saves_and_loads_through_pyvene_alongside_frozen_scaling(memorized, memorized_dir, tmp_path):
    model, tokenizer = memorized
    hidden = model.config.hidden_size
    scaling = FrozenScaling(neuron_indices=[3, 7], neuron_scales=[0.0, 0.5], embed_dim=256)
    representations = [
        pv.RepresentationConfig(layer=0, component="mlp_activation", unit="pos", intervention=scaling),
        pv.RepresentationConfig(layer=1, component="block_output", unit="pos",
                                intervention=random_gated_reft(hidden, rank=2, gate_hidden=8)),
    ]
    pv_model = pv.IntervenableModel(pv.IntervenableConfig(representations=representations), model=model)
    ids, mask = encode(tokenizer, FORGET)
    expected = intervened_logits(pv_model, ids, mask)
    assert not torch.allclose(expected, model(input_ids=ids, attention_mask=mask).logits, atol=1e-3)

    pv_model.save(str(tmp_path))
    fresh = transformers.AutoModelForCausalLM.from_pretrained(memorized_dir).eval()
    loaded = pv.IntervenableModel.load(str(tmp_path), fresh)  # rebuilt with default rank 4 and a Linear gate
    set_intervention_mode(loaded, False)
    gated = [iv for iv in loaded.interventions.values() if isinstance(iv, GatedReFT)]
    assert [(iv.rank, iv.gate_hidden) for iv in gated] == [(2, 8)]
    torch.testing.assert_close(intervened_logits(loaded, ids, mask), expected, atol=1e-5, rtol=1e-5)


def test_the_safe_loader_accepts_gated_reft_without_importing_it_first(memorized, memorized_dir, tmp_path):
    import subprocess
    import sys

    model, tokenizer = memorized
    representations = [pv.RepresentationConfig(layer=1, component="block_output", unit="pos",
                                               intervention=random_gated_reft(model.config.hidden_size, rank=2, gate_hidden=8))]
    pv_model = pv.IntervenableModel(pv.IntervenableConfig(representations=representations), model=model)
    ids, mask = encode(tokenizer, FORGET)
    torch.save(intervened_logits(pv_model, ids, mask), tmp_path / "expected.pt")
    torch.save((ids, mask), tmp_path / "inputs.pt")
    from neumuter_interv.serialization import save_intervenable

    save_intervenable(pv_model, tmp_path / "package")
    script = (
        "import sys, torch, transformers\n"
        "from neumuter_interv.intervenable import load, intervened_logits\n"
        "model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()\n"
        "ids, mask = torch.load(sys.argv[2] + '/inputs.pt')\n"
        "logits = intervened_logits(load(sys.argv[2] + '/package', model), ids, mask)\n"
        "torch.testing.assert_close(logits, torch.load(sys.argv[2] + '/expected.pt'), atol=1e-5, rtol=1e-5)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(memorized_dir), str(tmp_path)], check=True)
