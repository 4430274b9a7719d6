"""Every comparison method behind the ``UnlearningMethod`` interface, on the tiny memorized GPT-Neo:
it moves the forget loss the right way, fills its record, saves, reloads and evaluates."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import pyvene as pv
import torch
import transformers
from conftest import FORGET, RETAIN

from neumuter_interv.intervenable import set_intervention_mode
from neumuter_interv.lm import as_language_model
from neumuter_interv.methods.registry import METHODS, make_method
from neumuter_interv.metrics import memorization_accuracy, sample_losses

# Small budgets and large learning rates: each method must visibly unlearn in a few seconds.
FAST = {
    "ga": dict(learning_rate=1e-3, max_epochs=5, device="cpu"),
    "sga": dict(learning_rate=1e-3, max_epochs=10, device="cpu"),
    "ta": dict(learning_rate=1e-3, max_epochs=5, device="cpu"),
    "di": dict(learning_rate=1e-3, max_epochs=5, device="cpu"),
    "gd": dict(learning_rate=1e-3, max_epochs=5, device="cpu"),
    "kl": dict(learning_rate=1e-3, max_epochs=5, device="cpu"),
    "npo": dict(learning_rate=1e-3, max_epochs=5, device="cpu"),
    "ig": dict(steps=5, positions_per_sample=4, neurons_per_round=40, max_neurons=200, device="cpu"),
    "grun": dict(learning_rate=1e-2, max_epochs=20, device="cpu"),
    "lunar": dict(coefficient=4.0, device="cpu"),
    "attribution": dict(fraction=0.3, layers="all", reference_texts=tuple(RETAIN)),
}
COMPARISON_METHODS = [name for name in METHODS if name != "neumuter"]
# zeroing 30% of a tiny model's FFN neurons by attribution moves its forget loss 0.004 -> 0.06 (the model is
# redundant and nothing is trained); the real-world tests run the baseline at NeuMuter's share
MIN_RISE = {"attribution": 0.05}
REFERENCE_TEXT_METHODS = {"attribution"}  # no retain set to train on, but retained text in its settings: marked †


def forget_loss(model, tokenizer) -> float:
    return float(sample_losses(model, tokenizer, FORGET).mean())


def logits(model, tokenizer, texts) -> torch.Tensor:
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return as_language_model(model).logits(encoded["input_ids"], encoded["attention_mask"])


def test_registry_covers_every_method_with_paper_defaults():
    assert set(METHODS) == {"neumuter", "attribution", "ga", "sga", "ta", "di", "ig", "gd", "kl", "npo", "grun",
                            "lunar"}
    assert set(FAST) == set(COMPARISON_METHODS)
    assert make_method("ga").settings.learning_rate == 5e-5
    assert (make_method("sga").settings.memorization_limit, make_method("sga").settings.top_k) == (0.70, 1)
    assert make_method("ta").settings.tau == 3.0
    assert make_method("di").settings.tau == 8.0
    assert make_method("npo").settings.beta == 0.1
    assert make_method("ig").settings.steps == 20
    assert make_method("grun").settings.rank == 4
    needs_retain = {name for name in METHODS if make_method(name).needs_retain}
    assert needs_retain == {"gd", "kl", "grun", "lunar"}


@pytest.mark.parametrize("name", COMPARISON_METHODS)
def test_method_unlearns_saves_and_evaluates(name, memorized, memorized_dir, tmp_path):
    model, tokenizer = memorized
    before = forget_loss(model, tokenizer)
    method = make_method(name, **FAST[name])
    result = method.unlearn(model, tokenizer, FORGET, RETAIN if method.needs_retain else None)

    after = forget_loss(result.model, tokenizer)
    assert after > before + MIN_RISE.get(name, 0.5), f"{name}: forget loss {before:.3f} -> {after:.3f}"

    record = result.record
    assert record.method == name
    assert record.seconds > 0 and record.steps > 0
    assert record.total_parameters == sum(p.numel() for p in model.parameters())
    assert 0 <= record.trainable_parameters <= record.total_parameters or name == "grun"
    assert record.uses_retain_set == (method.needs_retain or name in REFERENCE_TEXT_METHODS)

    expected = logits(result.model, tokenizer, RETAIN)
    fresh = transformers.AutoModelForCausalLM.from_pretrained(memorized_dir).eval()
    if isinstance(result.model, transformers.PreTrainedModel):
        result.model.save_pretrained(tmp_path)
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    else:
        result.model.save(str(tmp_path))  # pyvene's own format: rebuilt from config.json + intkey_*.bin
        reloaded = pv.IntervenableModel.load(str(tmp_path), fresh)
        set_intervention_mode(reloaded, False)
    torch.testing.assert_close(logits(reloaded, tokenizer, RETAIN), expected, atol=1e-4, rtol=1e-4)


def test_stop_criterion_ends_fine_tuning_once_it_holds(memorized):
    model, tokenizer = memorized
    before = float(memorization_accuracy(model, tokenizer, FORGET).mean())
    seen = []

    def forgotten(candidate) -> bool:
        ma = float(memorization_accuracy(candidate, tokenizer, FORGET).mean())
        seen.append(ma)
        return ma <= 0.5

    result = make_method("ga", learning_rate=1e-3, max_epochs=50, device="cpu", stop_when=forgotten).unlearn(model, tokenizer, FORGET)
    assert before > 0.9
    assert result.record.extra["criterion_met"]
    assert seen[-1] <= 0.5 and all(ma > 0.5 for ma in seen[:-1])
    assert result.record.steps == len(seen) - 1  # checked before the first epoch and after each one


def test_stop_criterion_that_already_holds_means_no_training(memorized):
    model, tokenizer = memorized
    original = copy.deepcopy(model.state_dict())
    result = make_method("npo", device="cpu", stop_when=lambda m: True).unlearn(model, tokenizer, FORGET)
    assert result.record.steps == 0 and result.record.extra["criterion_met"]
    for name, tensor in result.model.state_dict().items():
        torch.testing.assert_close(tensor, original[name])


def test_sga_stops_by_itself_under_the_memorization_limit(memorized):
    model, tokenizer = memorized
    result = make_method("sga", learning_rate=1e-3, max_epochs=40, memorization_limit=0.7, device="cpu").unlearn(
        model, tokenizer, FORGET)
    assert result.record.extra["criterion_met"]
    assert float(memorization_accuracy(result.model, tokenizer, FORGET).mean()) <= 0.7


def test_methods_that_need_a_retain_set_refuse_to_run_without_one(memorized):
    model, tokenizer = memorized
    for name in ("gd", "kl", "grun", "lunar"):
        with pytest.raises(ValueError, match="retain"):
            make_method(name, device="cpu").unlearn(model, tokenizer, FORGET)


def test_unknown_method_or_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown method"):
        make_method("rmu")
    with pytest.raises(ValueError, match="bad setting"):
        make_method("ga", tau=3)


def test_each_step_pairs_the_forget_batch_with_the_next_retain_batch():
    from neumuter_interv.methods.finetune import FineTuneSettings, run_training

    weight = torch.nn.Parameter(torch.zeros(1))
    seen = []

    def loss_of(forget, retain):
        seen.append(retain)
        return (weight * 0).sum()

    forget = SimpleNamespace(input_ids=torch.zeros(1, 2, dtype=torch.long))
    run_training([weight], loss_of, lambda: [forget], ["r0", "r1", "r2"], FineTuneSettings(max_epochs=5),
                 lambda: False, lambda training: None)
    assert seen == ["r0", "r1", "r2", "r0", "r1"], "a retain set larger than one batch is seen in turn"


def test_fine_tuning_runs_in_bf16_autocast_when_asked(memorized):
    model, tokenizer = memorized
    record = make_method("ga", max_epochs=1, dtype="bfloat16", device="cpu").unlearn(
        copy.deepcopy(model), tokenizer, FORGET).record
    assert record.steps == 1
    with pytest.raises(Exception, match="dtype must be float32, bfloat16, float16 or auto"):
        make_method("ga", dtype="fp8")


def test_a_records_peak_memory_holds_a_peak_that_no_sample_saw(monkeypatch):
    """Every record's ``peak_memory_bytes`` on a CPU is the kernel's high-water mark of the block where Linux
    keeps one, so an allocation freed between two samples of the resident size still counts."""
    import ctypes
    import sys

    from neumuter_interv.methods import base
    from neumuter_interv.methods.base import UnlearningRecord, measured

    if not sys.platform.startswith("linux"):
        pytest.skip("the high-water mark is Linux's")
    monkeypatch.setattr(base._ResidentPeak, "interval", 60.0)  # no sample is taken within the block
    record = UnlearningRecord(method="probe")
    size = 256 << 20
    with measured(record, "cpu"):
        block = ctypes.create_string_buffer(size)  # zero-filled: every page resident
        del block
    assert record.memory_kind == "cpu-rss" and record.peak_memory_bytes >= 0.95 * size
