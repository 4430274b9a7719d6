"""Token-selective forgetting: the ascent trains only on forget tokens whose n-gram is in no reference text,
and a run that takes its reference from retained text says so."""

from types import SimpleNamespace

import pytest
import torch
from conftest import FORGET, RETAIN

from neumuter_interv.data import IGNORE_INDEX, pad_batch
from neumuter_interv.demo import DemoConfig, neumuter_method
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.methods.neumuter import NeuMuter, NeuMuterConfig
from neumuter_interv.methods.neumuter.localize import _local_batches
from neumuter_interv.methods.neumuter.token_selection import distinct_targets


def test_a_token_is_skipped_exactly_when_the_ngram_ending_at_it_occurs_in_a_reference():
    forget = [[1, 2, 3, 4, 5, 6, 7]]
    reference = [[9, 2, 3, 4, 9], [5, 6, 7]]
    # t=0 is never a target; t=1 has too little context to be called shared; (1,2,3) is not in the reference;
    # (2,3,4) is; (3,4,5) is not; (4,5,6) is not (5,6 alone is no 3-gram); (5,6,7) is
    assert distinct_targets(forget, reference, 3) == [[False, True, True, False, True, True, False]]
    assert distinct_targets(forget, [], 3) == [[False] + [True] * 6]  # no reference: every target kept


def test_skipped_tokens_are_no_targets_of_the_loss_and_do_not_count_in_its_mean():
    batch = pad_batch([[1, 2, 3], [4, 5]], pad_id=0, targets=[[False, True, False], [False, True]])
    assert batch.labels.tolist() == [[IGNORE_INDEX, 2, IGNORE_INDEX], [IGNORE_INDEX, 5, IGNORE_INDEX]]
    forget = [[1, 2, 3, 4], [5, 6, 7]]
    targets = [[False, True, False, True], [False, False, True]]
    forget_batches, _, counts = _local_batches(forget, [], 0, 2, 0, range(2), targets)
    assert counts == [(3, 0)]
    assert (forget_batches[0].labels[:, 1:] != IGNORE_INDEX).sum() == 3
    _, _, all_counts = _local_batches(forget, [], 0, 2, 0, range(2))
    assert all_counts == [(5, 0)]  # without targets: every token but the first of each sample


def test_distinct_needs_reference_texts_and_a_meaningful_ngram(memorized):
    model, tokenizer = memorized
    with pytest.raises(NeuMuterError, match="reference_texts"):  # refused before any work
        NeuMuter(NeuMuterConfig(forget_tokens="distinct", progress=False)).run(model, tokenizer, FORGET[:1])
    with pytest.raises(NeuMuterError, match="distinct_ngram"):
        NeuMuterConfig(forget_tokens="distinct", distinct_ngram=1)
    with pytest.raises(NeuMuterError, match="forget_tokens"):
        NeuMuterConfig(forget_tokens="rare")


def test_a_reference_that_covers_every_forget_token_is_refused_before_training(memorized):
    model, tokenizer = memorized
    method = NeuMuter(NeuMuterConfig(forget_tokens="distinct", distinct_ngram=2, progress=False),
                      reference_texts=FORGET, log=lambda message: None)
    with pytest.raises(NeuMuterError, match="nothing is left to forget"):
        method.run(model, tokenizer, FORGET[:1], RETAIN[:1])


def test_the_gates_train_on_the_selected_tokens_only(memorized):
    """With the whole forget text but one word as reference, only what that word's n-grams touch moves the
    gates: a run on it differs from a run on every token."""
    model, tokenizer = memorized
    config = dict(epochs=2, batch_size=1, learning_rate=0.3, kl_weight=0.3, sparsity_weight=0, progress=False,
                  selection="top_k", top_k=4)
    everything = NeuMuter(NeuMuterConfig(**config), log=lambda m: None).run(model, tokenizer, FORGET[:1], RETAIN[:1])
    selective = NeuMuter(NeuMuterConfig(**config, forget_tokens="distinct", distinct_ngram=2),
                         reference_texts=[FORGET[0].rsplit(" ", 3)[0]], log=lambda m: None).run(
        model, tokenizer, FORGET[:1], RETAIN[:1])
    first = torch.cat(list(everything.localization.log_alpha.values()))
    second = torch.cat(list(selective.localization.log_alpha.values()))
    assert not torch.equal(first, second)
    assert selective.localization.history[0]["forget_ce"] != everything.localization.history[0]["forget_ce"]


@pytest.mark.parametrize("settings", [{"anchors_per_sample": 1}, {"forget_tokens": "distinct"},
                                      {"ranking": "contrastive"}])
def test_neumuter_with_the_worlds_anchors_in_any_role_is_marked_as_using_retained_text(settings):
    world = SimpleNamespace(criterion=object(), neighbours=lambda *args: [], attribution_reference=["other licence"])
    config = DemoConfig()
    for name, value in settings.items():
        setattr(config.neumuter, name, value)
    method = neumuter_method(world, config)
    assert method.uses_retained_text
    assert method.reference_texts == ([] if "anchors_per_sample" in settings else ["other licence"])
    assert not neumuter_method(world, DemoConfig()).uses_retained_text
