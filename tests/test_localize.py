"""The localization loop (Eq. 13) and neuron selection (Section 3.3) on tiny models."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import FORGET, RETAIN

from neumuter_interv.hard_concrete import HardConcreteParams
from neumuter_interv.intervenable import interventions_by_layer
from neumuter_interv.methods.neumuter import CoefficientSchedule, NeuMuter, NeuMuterConfig, select_neurons
from neumuter_interv.metrics import memorization_accuracy, teacher_forced_scores

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


def test_the_distillation_forget_term_is_minimized_and_takes_probability_off_the_forget_text(memorized):
    model, tokenizer = memorized
    _, losses_before = teacher_forced_scores(model, tokenizer, FORGET)
    config = NeuMuterConfig(epochs=30, batch_size=1, kl_weight=0.3, sparsity_weight=0, forget_loss="distill", **QUIET)
    run = NeuMuter(config, log=quiet).run(model, tokenizer, FORGET, RETAIN)
    history = run.localization.history
    assert history[-1]["forget_ce"] < 0.8 * history[0]["forget_ce"], "the KL from DI's teacher falls: no ascent"
    _, losses_after = teacher_forced_scores(run.frozen, tokenizer, FORGET)
    assert (losses_after > 3 * losses_before).all(), "every forget text's true tokens lost probability"
    assert 0 < run.selection.neurons_muted_fraction < 0.5


def test_an_unknown_forget_loss_is_named():
    with pytest.raises(Exception, match="forget_loss must be one of ascent, distill"):
        NeuMuterConfig(forget_loss="descent")


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


class MutesAnything:
    """A stand-in stopping rule: met as soon as the frozen mask mutes any neuron; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, frozen) -> bool:
        self.calls += 1
        return any(len(scaling.neuron_indices) for scaling in interventions_by_layer(frozen).values())


def run_schedule(memorized, schedule: CoefficientSchedule):
    """NeuMuter with the official coefficients in stages of ``schedule``, stopped by ``MutesAnything``."""
    model, tokenizer = memorized
    stop_when = MutesAnything()
    run = NeuMuter(NeuMuterConfig(batch_size=1, **QUIET), stop_when=stop_when, schedule=schedule, log=quiet).run(
        model, tokenizer, FORGET, RETAIN)
    return run, stop_when


def test_the_schedule_relaxes_kl_and_l0_stage_by_stage_until_the_rule_is_met(memorized):
    run, stop_when = run_schedule(memorized, CoefficientSchedule(stage_epochs=30, max_stages=8, check_every=5))
    stages = run.calibration["stages"]
    assert run.calibration["met"] and run.selection.neurons_muted > 0
    assert 1 < len(stages) < 8  # the official 500 / 5 move no gate on a saturated model; a relaxed stage does
    assert [s["kl_weight"] for s in stages] == [max(5 * 0.5 ** i, 0.1) for i in range(len(stages))]
    assert [s["sparsity_weight"] for s in stages] == pytest.approx([500 * 0.1 ** i for i in range(len(stages))])
    assert run.calibration["final_kl_weight"] == stages[-1]["kl_weight"]
    assert [c["met"] for s in stages for c in s["checks"]][-1] is True
    assert stop_when.calls == 2  # the empty mask once, then the first mask that mutes a neuron


def test_a_mask_checked_before_is_not_checked_again(memorized):
    run, stop_when = run_schedule(memorized, CoefficientSchedule(stage_epochs=6, max_stages=2, check_every=1))
    checks = [c for s in run.calibration["stages"] for c in s["checks"]]
    assert len(checks) == 12 and not run.calibration["met"]  # 500 / 5 and 2.5 / 50 mute nothing here
    assert stop_when.calls == 1  # twelve checks of the same empty mask, i.e. of the unchanged model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU (CI has none; run on the device machine)")
def test_on_a_gpu_the_gates_train_select_and_freeze_there(memorized):
    """Gates trained on the GPU are ranked on the CPU; the frozen mask runs where the model is."""
    model, tokenizer = memorized
    config = NeuMuterConfig(epochs=30, batch_size=1, kl_weight=0.3, sparsity_weight=0, device="cuda", **QUIET)
    run = NeuMuter(config, log=quiet).run(model, tokenizer, FORGET, RETAIN)
    assert next(run.frozen.model.parameters()).device.type == "cuda"
    assert 0 < run.selection.neurons_muted_fraction < 0.5
    assert memorization_accuracy(run.frozen, tokenizer, FORGET).mean() <= 0.9


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # layer 1's input needs no grad: as intended
def test_the_backward_pass_stops_at_the_lowest_gated_layer(memorized):
    """Below the lowest gate nothing requires grad (the model is frozen), so autograd never runs there."""
    from neumuter_interv.methods.neumuter import localize

    model, tokenizer = memorized
    backward_calls = {0: 0, 1: 0}
    for layer, block in enumerate(model.transformer.h):
        block.register_full_backward_hook(lambda module, grad_in, grad_out, layer=layer: backward_calls.__setitem__(
            layer, backward_calls[layer] + 1))
    forget = [tokenizer(t)["input_ids"] for t in FORGET]
    config = NeuMuterConfig(epochs=1, batch_size=4, layers="1", neighbour_source="random", **QUIET)
    localize(model, forget, [tokenizer(t)["input_ids"] for t in RETAIN], config, tokenizer.pad_token_id, log=quiet)
    assert backward_calls == {0: 0, 1: 1}


@pytest.mark.parametrize(("length_buckets", "pads", "counts"), [(False, 14, [(9, 11), (9, 11)]),
                                                                (True, 0, [(2, 4), (16, 18)])])
def test_length_buckets_batch_samples_of_similar_length(length_buckets, pads, counts):
    from neumuter_interv.methods.neumuter.localize import _local_batches

    forget = [[5, 6], [5, 6, 7, 8, 9, 10, 11, 12, 13], [7, 8], [7, 8, 9, 10, 11, 12, 13, 14, 15]]
    neighbours = [list(reversed(sample)) for sample in forget]
    order = sorted(range(4), key=lambda i: len(forget[i])) if length_buckets else range(4)
    forget_batches, neighbour_batches, batch_counts = _local_batches(forget, neighbours, 1, 2, 0, order)
    assert sum(int((batch.attention_mask == 0).sum()) for batch in forget_batches) == pads
    assert batch_counts == counts  # predicted forget tokens, neighbour tokens: the denominators of CE and KL
    for forget_batch, neighbour_batch in zip(forget_batches, neighbour_batches):  # neighbours follow their samples
        rows = [row[mask.bool()].tolist() for row, mask in zip(forget_batch.input_ids, forget_batch.attention_mask)]
        assert [row[mask.bool()].flip(0).tolist()
                for row, mask in zip(neighbour_batch.input_ids, neighbour_batch.attention_mask)] == rows


@pytest.mark.parametrize("architecture", ["llama", "gpt_neo", "opt"])
def test_under_autocast_a_backward_through_the_frozen_model_keeps_no_cast_copy_of_its_weights(make_model,
                                                                                              architecture):
    """Autograd keeps each linear's bf16-cast weight for the input gradient: a second copy of the frozen model
    at the peak of a step. ``frozen_weights_unsaved`` (on during localization) keeps none and re-casts in the
    backward, for the same gradients."""
    from neumuter_interv.lm import frozen_weights_unsaved

    model = make_model(architecture)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    ids = torch.randint(2, 30, (3, 9), generator=torch.Generator().manual_seed(0))
    embeddings = model.get_input_embeddings()(ids).detach()

    def gradient_and_saved():
        saved = []
        inputs = embeddings.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(inputs_embeds=inputs).logits
            logits.float().logsumexp(-1).sum().backward()
        cast_weights = sum(any(t.dtype == torch.bfloat16 and view.shape == w.shape and torch.equal(view, w.to(torch.bfloat16))
                               for t in saved if t.dim() == 2 for view in (t, t.T)) for w in weights)
        return inputs.grad, cast_weights

    plain_gradient, plain_casts = gradient_and_saved()
    with frozen_weights_unsaved(model):
        gradient, casts = gradient_and_saved()
    assert plain_casts == len(weights) and casts == 0
    torch.testing.assert_close(gradient, plain_gradient, rtol=0, atol=0)
    assert all("forward" not in vars(m) for m in model.modules())  # the layers are as they were after the block


@pytest.mark.parametrize("forget_loss", ["ascent", "distill"])
def test_the_gates_do_not_depend_on_the_form_the_originals_distributions_are_kept_in(memorized, forget_loss):
    """fp32 log-probabilities where they fit in ``reference_cache_bytes``, else the logits read chunk by chunk
    (recomputed at every step where even those do not fit): the same gates to the bit."""
    from neumuter_interv.methods.neumuter import localize

    model, tokenizer = memorized
    forget = [tokenizer(t)["input_ids"] for t in FORGET]
    neighbours = [tokenizer(t)["input_ids"] for t in RETAIN]
    gates = []
    for budget in (2 << 30, 0):
        config = NeuMuterConfig(epochs=2, batch_size=2, layers="0-1", dtype="bfloat16", forget_loss=forget_loss,
                                reference_cache_bytes=budget, **QUIET)
        _, result = localize(copy.deepcopy(model), forget, neighbours, config, tokenizer.pad_token_id, log=quiet)
        gates.append(result.log_alpha)
    assert all(torch.equal(gates[0][layer], gates[1][layer]) for layer in gates[0])
