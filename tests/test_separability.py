"""Specs of the separability measures (``neumuter_interv.separability``) and of the TOFU-like
pretrain-then-inject testbed world they are studied on."""

from __future__ import annotations

import pytest
import torch
from conftest import FORGET, RETAIN

from neumuter_interv.architectures import ffn_width, num_layers
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.methods.attribution import attribution_ratio, neuron_attribution, top_fraction_selection
from neumuter_interv.metrics import memorization_accuracy
from neumuter_interv.separability import specificity
from neumuter_interv.testbed import TestbedConfig, build_testbed


def test_attribution_has_one_nonnegative_score_per_ffn_neuron_and_leaves_the_model_as_it_was(memorized):
    model, tokenizer = memorized
    weights = {name: p.clone() for name, p in model.state_dict().items()}
    attribution = neuron_attribution(model, tokenizer, FORGET, batch_size=3)
    assert sorted(attribution) == list(range(num_layers(model)))
    for scores in attribution.values():
        assert scores.shape == (ffn_width(model),)
        assert (scores >= 0).all() and scores.sum() > 0
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(p, weights[name]) for name, p in model.state_dict().items())


def test_a_neuron_whose_activation_is_always_zero_gets_zero_attribution(memorized):
    model, tokenizer = memorized
    with torch.no_grad():  # pre-activation 0 for neuron 5 of layer 1: gelu(0) = 0 at every position
        model.transformer.h[1].mlp.c_fc.weight[5] = 0
        model.transformer.h[1].mlp.c_fc.bias[5] = 0
    attribution = neuron_attribution(model, tokenizer, FORGET, layers=[1])
    assert list(attribution) == [1]
    assert attribution[1][5] == 0 and attribution[1].sum() > 0


def test_attribution_does_not_depend_on_batching(memorized):
    """Padding adds nothing and the per-token normalization spans the whole set, not one batch."""
    model, tokenizer = memorized
    one = neuron_attribution(model, tokenizer, FORGET + RETAIN, batch_size=1)
    all_at_once = neuron_attribution(model, tokenizer, FORGET + RETAIN, batch_size=8)
    for layer in one:
        torch.testing.assert_close(one[layer], all_at_once[layer], rtol=1e-4, atol=1e-7)


def test_attribution_ratio_per_neuron_and_its_quantiles():
    forget = {0: torch.tensor([2.0, 1.0]), 1: torch.tensor([9.0, 4.0])}  # both sets total 16
    retain = {0: torch.tensor([1.0, 1.0]), 1: torch.tensor([6.0, 8.0])}
    ratio = attribution_ratio(forget, retain, eps=0.0)
    torch.testing.assert_close(ratio.per_layer[0], torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(ratio.per_layer[1], torch.tensor([1.5, 0.5]))
    # sorted ratios 0.5, 1, 1.5, 2: median 1.25; q99 = 1.5 + 0.97 x 0.5 (linear interpolation)
    assert ratio.median == pytest.approx(1.25)
    assert ratio.q99 == pytest.approx(1.985)
    assert ratio.q999 == pytest.approx(1.9985)
    assert ratio.max == pytest.approx(2.0)
    assert ratio.summary() == {"median": ratio.median, "q99": ratio.q99, "q99.9": ratio.q999, "max": ratio.max}


def test_attribution_ratio_compares_shares_so_a_better_known_set_does_not_shift_every_neuron():
    forget = {0: torch.tensor([2.0, 1.0]), 1: torch.tensor([9.0, 4.0])}
    retain = {0: torch.tensor([1.0, 1.0]), 1: torch.tensor([6.0, 8.0])}
    scaled = attribution_ratio({layer: 0.3 * value for layer, value in forget.items()}, retain, eps=0.0)
    for layer, value in attribution_ratio(forget, retain, eps=0.0).per_layer.items():
        torch.testing.assert_close(scaled.per_layer[layer], value)


def test_attribution_ratio_floor_is_relative_to_the_mean_share():
    forget = {0: torch.tensor([0.0, 6.0, 0.0])}  # shares 0, 1, 0
    retain = {0: torch.tensor([0.0, 2.0, 4.0])}  # shares 0, 1/3, 2/3
    ratio = attribution_ratio(forget, retain, eps=0.5)  # mean share 1/3: floor 1/6
    torch.testing.assert_close(ratio.per_layer[0], torch.tensor([1.0, 7.0 / 3.0, 0.2]))


def test_specificity_from_two_evaluations():
    before = {"forget_ma": 0.9, "retain_ma": 0.8, "heldout_ppl": 20.0}
    after = {"forget_ma": 0.5, "retain_ma": 0.7, "heldout_ppl": 25.0}
    result = specificity(before, after)
    assert result["forget_ma_drop"] == pytest.approx(0.4)
    assert result["retain_ma_drop"] == pytest.approx(0.1)
    assert result["specificity"] == pytest.approx(4.0)
    assert result["heldout_ppl_change"] == pytest.approx(0.25)


def test_specificity_guards_an_untouched_or_improved_retain_set():
    before = {"forget_ma": 0.9, "retain_ma": 0.8, "heldout_ppl": 20.0}
    untouched = specificity(before, {"forget_ma": 0.5, "retain_ma": 0.8, "heldout_ppl": 20.0})
    improved = specificity(before, {"forget_ma": 0.5, "retain_ma": 0.85, "heldout_ppl": 20.0})
    assert untouched["specificity"] == pytest.approx(40.0) == improved["specificity"]
    assert improved["retain_ma_drop"] == pytest.approx(-0.05)


def test_inject_epochs_is_validated_and_keeps_old_cache_keys():
    with pytest.raises(NeuMuterError, match="inject_epochs"):
        TestbedConfig.tiny(inject_epochs=-1)
    assert TestbedConfig.tiny(inject_epochs=0).cache_key() == TestbedConfig.tiny().cache_key()
    assert TestbedConfig.tiny(inject_epochs=2).cache_key() != TestbedConfig.tiny().cache_key()


@pytest.mark.slow
def test_pretrain_then_inject_memorizes_the_forget_people_on_top_of_the_oracle(tmp_path):
    """TOFU's recipe: the oracle (general text + retain people) is the pretrained model; the injected
    model recalls the forget people far better than it, and keeps the retain people."""
    config = TestbedConfig.tiny(n_forget=4, n_retain=8, n_heldout=4, general_heldout_chunks=10, epochs=6,
                                inject_epochs=4)
    world = build_testbed(config, cache_dir=tmp_path, progress=False)
    tokenizer = world.load_tokenizer()
    model, oracle = world.load_model(), world.load_oracle()

    def ma(lm, texts):
        return float(memorization_accuracy(lm, tokenizer, texts).mean())

    assert ma(model, world.forget_texts) > ma(oracle, world.forget_texts) + 0.15
    assert ma(model, world.retain_texts) > ma(oracle, world.retain_texts) - 0.05
    assert world.manifest["sequences"]["inject_epochs"] == 4


def test_top_fraction_selection_mutes_the_highest_scoring_neurons_across_layers(make_model):
    model = make_model("gpt_neo")  # 2 layers x FFN 64: 128 neurons, 3% of them = 4
    scores = {0: torch.zeros(64), 1: torch.zeros(64)}
    scores[0][[7, 9]] = torch.tensor([5.0, 1.0])
    scores[1][[0, 63]] = torch.tensor([4.0, 3.0])
    selection = top_fraction_selection(model, scores, 0.03)
    assert selection.per_layer_counts() == {0: 2, 1: 2}
    assert selection.layers[0].indices == [7, 9] and selection.layers[1].indices == [0, 63]
    assert selection.layers[0].scales == [0.0, 0.0]
    assert selection.neurons_muted_fraction == pytest.approx(4 / 128)
