"""The localization loop (Eq. 13) and neuron selection (Section 3.3) on tiny models."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import FORGET, RETAIN

from neumuter_interv.hard_concrete import HardConcreteParams
from neumuter_interv.intervenable import interventions_by_layer
from neumuter_interv.methods.neumuter import NeuMuter, NeuMuterConfig, select_neurons
from neumuter_interv.metrics import memorization_accuracy

QUIET = dict(progress=False)


def quiet(message):
    pass


def test_only_the_gates_train_and_the_base_weights_stay_bit_identical(memorized):
    model, tokenizer = memorized
    before = copy.deepcopy(model.state_dict())
    seen_gradients = []

    def check(epoch, record, pv_model):
        seen_gradients.extend(name for name, p in pv_model.model.named_parameters() if p.grad is not None)
        for gate in interventions_by_layer(pv_model).values():
            assert gate.log_alpha.grad is not None
        return False

    NeuMuter(NeuMuterConfig(epochs=3, batch_size=2, kl_weight=0.3, sparsity_weight=0, **QUIET),
             on_epoch_end=check, log=quiet).run(model, tokenizer, FORGET, RETAIN)
    assert seen_gradients == []
    after = model.state_dict()  # on the GPU when there is one: the run moves the model there
    assert all(torch.equal(before[name], after[name].cpu()) for name in before)


def test_the_same_seed_selects_the_same_neurons(memorized_dir):
    import transformers

    def run(seed):
        model = transformers.AutoModelForCausalLM.from_pretrained(memorized_dir)
        tokenizer = transformers.AutoTokenizer.from_pretrained(memorized_dir)
        config = NeuMuterConfig(epochs=4, batch_size=1, kl_weight=0.3, sparsity_weight=0, seed=seed,
                                selection="fraction", fraction=0.05, **QUIET)
        return NeuMuter(config, log=quiet).run(model, tokenizer, FORGET, None).selection.to_dict()["layers"]

    first, second, other = run(0), run(0), run(1)
    assert first == second
    assert any(first[layer]["indices"] for layer in first)
    assert first != other


def test_localization_lowers_forget_accuracy_more_than_it_moves_the_neighbours(memorized):
    model, tokenizer = memorized
    reference = copy.deepcopy(model)
    forget_ma_before = memorization_accuracy(model, tokenizer, FORGET).mean()
    config = NeuMuterConfig(epochs=30, batch_size=1, kl_weight=0.3, sparsity_weight=0, **QUIET)
    run = NeuMuter(config, log=quiet).run(model, tokenizer, FORGET, RETAIN)
    forget_ma_after = memorization_accuracy(run.frozen, tokenizer, FORGET).mean()
    assert forget_ma_before == 1.0
    assert forget_ma_after <= forget_ma_before - 0.1
    neighbour_kl = kl_from(reference, run.frozen, tokenizer, RETAIN)
    assert neighbour_kl < 1.0  # nats per token (0.2-0.6: CPU and GPU draw different gate noise)
    assert neighbour_kl < kl_from(reference, run.frozen, tokenizer, FORGET)
    assert 0 < run.selection.neurons_muted_fraction < 0.5
    assert [r["epoch"] for r in run.localization.history] == list(range(1, 31))


def kl_from(reference, frozen, tokenizer, texts):
    from neumuter_interv.lm import as_language_model

    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        original = F.log_softmax(reference(**encoded).logits, -1)
    unlearned = F.log_softmax(as_language_model(frozen).logits(encoded["input_ids"], encoded["attention_mask"]).cpu(), -1)
    per_token = (original.exp() * (original - unlearned)).sum(-1)
    mask = encoded["attention_mask"].float()
    return float((per_token * mask).sum() / mask.sum())


def test_the_energy_rule_of_the_paper_selects_the_lowest_gates(make_model):
    model = make_model("gpt_neo")  # 2 layers x 64 neurons
    params = HardConcreteParams()
    log_alpha = {0: torch.full((64,), 3.0), 1: torch.full((64,), 3.0)}
    log_alpha[0][[3, 5]] = -6.0  # gate 0
    log_alpha[1][7] = -1.0  # gate ~0.22
    selection = select_neurons(model, log_alpha, params, NeuMuterConfig(selection="energy", energy=0.05))
    assert selection.layers[0].indices == [3, 5] and selection.layers[1].indices == [7]
    assert selection.layers[0].scales == [0.0, 0.0]
    assert abs(selection.layers[1].scales[0] - (1.2 * torch.sigmoid(torch.tensor(-1.0)).item() - 0.1)) < 1e-6
    assert selection.neurons_muted_fraction == 3 / 128


def test_threshold_and_top_k_rules(make_model):
    model = make_model("gpt_neo")
    log_alpha = {0: torch.linspace(-4, 4, 64), 1: torch.full((64,), 3.0)}
    params = HardConcreteParams()
    threshold = select_neurons(model, log_alpha, params, NeuMuterConfig(selection="threshold", threshold=0.15))
    expected = (torch.sigmoid(log_alpha[0]) < 0.15).nonzero().flatten().tolist()
    assert threshold.layers[0].indices == expected and threshold.layers[1].indices == []
    top = select_neurons(model, log_alpha, params, NeuMuterConfig(selection="top_k", top_k=5))
    assert top.layers[0].indices == [0, 1, 2, 3, 4]
    assert all(s < 0.08 for s in threshold.layers[0].scales)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (CI has none; run on the device machine)")
def test_on_a_gpu_the_gates_train_select_and_freeze_there(memorized):
    """Gates trained on the GPU are ranked on the CPU; the frozen mask runs where the model is."""
    model, tokenizer = memorized
    config = NeuMuterConfig(epochs=30, batch_size=1, kl_weight=0.3, sparsity_weight=0, device="cuda", **QUIET)
    run = NeuMuter(config, log=quiet).run(model, tokenizer, FORGET, RETAIN)
    assert next(run.frozen.model.parameters()).device.type == "cuda"
    assert 0 < run.selection.neurons_muted_fraction < 0.5
    assert memorization_accuracy(run.frozen, tokenizer, FORGET).mean() <= 0.9
