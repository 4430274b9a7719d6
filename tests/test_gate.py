"""The hard-concrete gate (Eq. 10-12) and its pyvene intervention."""

import math

import pytest
import torch

from neumuter_interv.hard_concrete import HardConcreteParams, deterministic_gate, l0_penalty, sample_gate
from neumuter_interv.intervenable import (
    attach,
    intervened_logits,
    interventions_by_layer,
    set_intervention_mode,
)
from neumuter_interv.interventions import HardConcreteGate


def test_the_initial_gate_is_exactly_one():
    params = HardConcreteParams()
    log_alpha = torch.full((1000,), params.initial_log_alpha())
    assert math.isclose(params.initial_log_alpha(), math.log(11.0), rel_tol=1e-12)  # the official init
    assert torch.equal(deterministic_gate(log_alpha, params), torch.ones(1000))


def test_training_gates_are_stochastic_and_eval_gates_deterministic_both_in_unit_interval():
    gate = HardConcreteGate(embed_dim=256)
    with torch.no_grad():
        gate.log_alpha.uniform_(-4, 4)
    gate.train()
    first, second = gate.gate(), gate.gate()
    assert not torch.equal(first, second)
    gate.eval()
    assert torch.equal(gate.gate(), gate.gate())
    for values in (first, second, gate.gate()):
        assert values.min() >= 0 and values.max() <= 1


def test_sampled_gates_put_mass_on_exactly_zero_and_exactly_one():
    params = HardConcreteParams()
    samples = sample_gate(torch.zeros(20000), params, torch.Generator().manual_seed(0))
    assert (samples == 0).any() and (samples == 1).any()


def test_l0_penalty_is_the_expected_fraction_of_closed_gates():
    params = HardConcreteParams()
    open_gates = torch.full((10,), 10.0)
    closed_gates = torch.full((10,), -10.0)
    assert l0_penalty(open_gates, params) < 1e-3
    assert l0_penalty(closed_gates, params) > 0.999
    # Monte-Carlo check of P(m = 0) at log_alpha = 0
    samples = sample_gate(torch.zeros(200000), params, torch.Generator().manual_seed(1))
    assert abs(float((samples == 0).float().mean()) - float(l0_penalty(torch.zeros(1), params))) < 0.01


@pytest.mark.parametrize("architecture", ["gpt_neo", "llama", "phi3"])  # phi3 is not mapped by pyvene itself
def test_untrained_gates_leave_the_model_unchanged(make_model, architecture):
    model = make_model(architecture)
    ids = torch.randint(3, 40, (2, 12))
    mask = torch.ones_like(ids)
    base = model(input_ids=ids, attention_mask=mask).logits
    pv_model = attach(model, [0, 1], lambda layer, width: HardConcreteGate(embed_dim=width))
    set_intervention_mode(pv_model, False)
    torch.testing.assert_close(intervened_logits(pv_model, ids, mask), base, atol=1e-6, rtol=0)


def test_hard_concrete_constants_survive_pyvene_save_and_load(make_model, tmp_path):
    import pyvene as pv

    model = make_model("gpt_neo")
    pv_model = attach(model, [1], lambda layer, width: HardConcreteGate(embed_dim=width, beta=0.3, gamma=-0.2, zeta=1.2))
    with torch.no_grad():
        interventions_by_layer(pv_model)[1].log_alpha.normal_()
    pv_model.save(str(tmp_path / "gates"))
    loaded = interventions_by_layer(pv.IntervenableModel.load(str(tmp_path / "gates"), model))[1]
    assert loaded.params == HardConcreteParams(0.3, -0.2, 1.2)
    assert torch.equal(loaded.log_alpha, interventions_by_layer(pv_model)[1].log_alpha)


@pytest.mark.parametrize("flattened", [False, True])
def test_row_groups_give_each_group_its_own_sample_drawn_in_group_order(flattened):
    gate = HardConcreteGate(embed_dim=6)
    with torch.no_grad():
        gate.log_alpha.uniform_(-2.0, 2.0)
    gate.train(True)
    gate.row_groups = (2, 3)
    gate.generator = torch.Generator().manual_seed(7)
    base = torch.ones(5, 4, 6)
    if flattened:  # an FFN that flattens [batch, positions] into rows (OPT)
        base = base.reshape(20, 6)
    gated = gate(base).reshape(5, 4, 6)
    generator = torch.Generator().manual_seed(7)
    first, second = (sample_gate(gate.log_alpha, gate.params, generator) for _ in range(2))
    assert torch.equal(gated[:2], first.expand(2, 4, 6)) and torch.equal(gated[2:], second.expand(3, 4, 6))
    assert not torch.equal(first, second)
