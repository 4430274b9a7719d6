"""LUNAR-like redirection: the pyvene intervention equals the weight edit, and retain text moves
much less than forget text."""

from __future__ import annotations

import torch
import transformers
from conftest import FORGET, RETAIN

from neumuter_interv.lm import as_language_model
from neumuter_interv.methods.lunar import LUNAR, LUNARSettings


def logits(model, tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return as_language_model(model).logits(encoded["input_ids"], encoded["attention_mask"])


def test_intervention_equals_weight_edit_and_spares_retain(memorized_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(memorized_dir)

    def run(apply_as):
        model = transformers.AutoModelForCausalLM.from_pretrained(memorized_dir).eval()
        settings = LUNARSettings(layer=1, coefficient=4.0, apply_as=apply_as, device="cpu")
        return LUNAR(settings).unlearn(model, tokenizer, FORGET, RETAIN)

    edited, intervened = run("weight"), run("intervention")
    for texts in (FORGET, RETAIN):
        torch.testing.assert_close(logits(intervened.model, tokenizer, texts), logits(edited.model, tokenizer, texts),
                                   atol=1e-3, rtol=1e-3)
    original = transformers.AutoModelForCausalLM.from_pretrained(memorized_dir).eval()
    forget_shift = (logits(edited.model, tokenizer, FORGET) - logits(original, tokenizer, FORGET)).abs().mean()
    retain_shift = (logits(edited.model, tokenizer, RETAIN) - logits(original, tokenizer, RETAIN)).abs().mean()
    assert forget_shift > 3 * retain_shift
    assert edited.record.trainable_parameters == 256 * 64
