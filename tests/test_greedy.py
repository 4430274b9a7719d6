"""``LanguageModel.greedy`` (a plain loop over the KV cache) continues every row exactly as ``generate`` does,
with and without interventions, on left-padded batches of several architectures."""

import pytest
import torch
from conftest import tiny_model_of

from neumuter_interv.architectures import ffn_width
from neumuter_interv.intervenable import intervened_generate
from neumuter_interv.lm import LanguageModel
from neumuter_interv.methods.neumuter import NeuronSet, Selection, freeze

PROMPTS = [[5, 9, 12, 7, 3], [4, 17], [30, 6, 2, 11, 8, 21, 14]]


def left_padded(prompts):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    return ids, torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])


@pytest.mark.parametrize("model_type", ["gpt_neo", "llama", "gpt2", "opt", "phi3"])
@pytest.mark.parametrize("intervened", [False, True])
def test_greedy_equals_generate_with_forced_length(tokenizer, model_type, intervened):
    model = tiny_model_of(model_type, len(tokenizer), seed=3)
    target = model
    if intervened:
        target = freeze(model, Selection({0: NeuronSet([1, 5, 9], [0.0, 0.2, 0.0]), 1: NeuronSet([3], [0.5])},
                                         ffn_width(model), 2, model.config.model_type))
    ids, mask = left_padded(PROMPTS)
    ours = LanguageModel(target).greedy(ids, mask, 12)
    settings = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    if intervened:
        reference = intervened_generate(target, ids, mask, **settings)[:, ids.shape[1]:]
    else:
        reference = model.generate(input_ids=ids, attention_mask=mask, **settings)[:, ids.shape[1]:]
    assert torch.equal(ours, reference)
    assert not (ours == model.config.eos_token_id).any()  # the forced length never ends early


@pytest.mark.parametrize("model_type", ["gpt_neo", "llama", "opt"])
@pytest.mark.parametrize("intervened", [False, True])
def test_rows_that_have_their_length_leave_the_batch_with_the_same_tokens(tokenizer, model_type, intervened):
    """Per-row lengths: each row gets exactly the tokens of decoding the whole batch to the longest length,
    cut to its own; the forwards after a row's last token no longer carry it."""
    model = tiny_model_of(model_type, len(tokenizer), seed=3)
    target = model
    if intervened:
        target = freeze(model, Selection({0: NeuronSet([1, 5, 9], [0.0, 0.2, 0.0])}, ffn_width(model), 2,
                                         model.config.model_type))
    ids, mask = left_padded(PROMPTS)
    whole = LanguageModel(target).greedy(ids, mask, 12)
    rows_per_forward = []
    lm = LanguageModel(target)
    forward = lm._forward
    lm._forward = lambda step_ids, *rest: (rows_per_forward.append(step_ids.shape[0]), forward(step_ids, *rest))[1]
    cut = lm.greedy(ids, mask, 12, lengths=[3, 12, 7])
    for row, length in enumerate([3, 12, 7]):
        assert torch.equal(cut[row, :length], whole[row, :length])
        assert (cut[row, length:] == -1).all()
    assert rows_per_forward == [3] * 3 + [2] * 4 + [1] * 5


@pytest.mark.parametrize("model_type", ["llama", "gpt_neo", "opt"])
def test_under_autocast_greedy_casts_frozen_weights_once_and_leaves_the_model_as_it_was(tokenizer, model_type):
    """Frozen weights cast once for the decoding loop (autocast's cache) give the tokens of autocast re-casting
    them at every step; afterwards the weights are frozen again and a change to them is seen by the next call
    inside the same autocast block (the cache does not outlive the loop)."""
    model = tiny_model_of(model_type, len(tokenizer), seed=5).requires_grad_(False)
    ids, mask = left_padded(PROMPTS)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        recast_every_step = LanguageModel(model).greedy(ids, mask, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast_once = LanguageModel(model).greedy(ids, mask, 12)
        assert not any(p.requires_grad for p in model.parameters())
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(-1.0)
        after_change = LanguageModel(model).greedy(ids, mask, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        changed = LanguageModel(model).greedy(ids, mask, 12)
    assert torch.equal(cast_once, recast_every_step)
    assert torch.equal(after_change, changed) and not torch.equal(changed, cast_once)
