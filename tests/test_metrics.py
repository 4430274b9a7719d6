"""Metrics against hand-computed cases (a table-driven fake model) and against slow reference loops
on a tiny random GPT-Neo."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from neumuter_interv import metrics
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.evaluation import EvaluationSet, evaluate
from neumuter_interv.lm import LanguageModel

# Fake model: the next token is TABLE[current token], with logit log(3) on it and 0 elsewhere, so
# P(predicted) = 3 / (3 + V - 1) and P(any other) = 1 / (3 + V - 1).
TABLE = [1, 2, 3, 0, 0]  # token 4 is [UNK] in the word tokenizer below
V = len(TABLE)
P_HIT, P_MISS = 3 / (V + 2), 1 / (V + 2)


class TableLM(LanguageModel):
    def __init__(self, context: int = 1000):
        self.intervenable = None
        self.model = None
        self.table = torch.tensor(TABLE)
        self.context = context

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def config(self):
        return SimpleNamespace(max_position_embeddings=self.context)

    def logits(self, input_ids, attention_mask=None):
        out = torch.zeros(*input_ids.shape, V)
        return out.scatter(-1, self.table[input_ids].unsqueeze(-1), math.log(3))

    def greedy(self, input_ids, attention_mask, max_new_tokens, lengths=None):
        """Every row to ``max_new_tokens`` (``lengths`` only saves work in ``LanguageModel``; callers cut)."""
        current, new = input_ids[:, -1], []
        for _ in range(max_new_tokens):
            current = self.table[current]
            new.append(current)
        return torch.stack(new, 1)


def test_memorization_accuracy_hand_computed():
    # [0,1,2,0,1]: predictions 1,2,3,1 vs targets 1,2,0,1 -> 3/4; [3,3]: predicts 0 vs 3 -> 0.
    ma = metrics.memorization_accuracy(TableLM(), None, [[0, 1, 2, 0, 1], [3, 3]], batch_size=2)
    assert ma.tolist() == pytest.approx([0.75, 0.0])


def test_losses_perplexity_and_mia_hand_computed():
    lm = TableLM()
    seq_hits, seq_miss = [0, 1, 2, 0, 1], [3, 3]
    loss_a = (3 * -math.log(P_HIT) - math.log(P_MISS)) / 4
    loss_b = -math.log(P_MISS)
    assert metrics.sample_losses(lm, None, [seq_hits, seq_miss]).tolist() == pytest.approx([loss_a, loss_b])
    ppl = metrics.perplexity(lm, None, [seq_hits, seq_miss])
    assert ppl == pytest.approx(math.exp((4 * loss_a + loss_b) / 5))
    # Windows of 3 tokens: [0,1,2], [0,1] and [3,3]: hits 0->1, 1->2, 0->1 and the miss 3->3.
    windowed = metrics.perplexity(lm, None, [seq_hits, seq_miss], context_length=3)
    assert windowed == pytest.approx(math.exp((3 * -math.log(P_HIT) - math.log(P_MISS)) / 4))
    mia = metrics.loss_mia(lm, None, [seq_hits], [seq_miss, [0, 1]])
    heldout = (loss_b - math.log(P_HIT)) / 2
    assert mia["heldout_mean_loss"] == pytest.approx(heldout)
    assert mia["distances"].tolist() == pytest.approx([abs(loss_a - heldout)])
    assert mia["mean_distance"] == pytest.approx(abs(loss_a - heldout))


class RecordingTableLM(TableLM):
    """The table model, recording the shape of every batch it scores."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def logits(self, input_ids, attention_mask=None):
        self.batches.append(tuple(input_ids.shape))
        return super().logits(input_ids, attention_mask)


def test_teacher_forced_batches_longest_first_and_answers_in_the_order_given():
    """Texts of mixed lengths are batched longest first, so a batch pads to lengths close to its own, and each
    text's scores come back in its place, equal to scoring it alone."""
    lm = RecordingTableLM()
    samples = [[3, 3], [0, 1, 2, 0, 1], [0, 1, 2], [1, 2, 0, 1, 2, 3]]
    together = metrics.memorization_accuracy(lm, None, samples, batch_size=2)
    assert lm.batches == [(2, 6), (2, 3)]  # lengths 6 and 5, then 3 and 2
    alone = [float(metrics.memorization_accuracy(TableLM(), None, [sample])[0]) for sample in samples]
    assert together.tolist() == pytest.approx(alone)
    assert alone == pytest.approx([0.0, 0.75, 1.0, 0.8])


def test_an_evaluation_scores_each_text_once_whatever_groups_share_it(word_tokenizer):
    """The retain set's halves and the held-out text (MIA reference and a group of its own) overlap other
    groups: every distinct text is teacher-forced once, and each group's mean is that of its own texts."""
    lm = RecordingTableLM()
    forget, heldout, kept, other = ["a b c a b", "a b c d"], ["d d c", "c a b"], ["a b c", "b c"], ["d a b c"]
    data = EvaluationSet(forget, heldout, retain_texts=kept + other,
                         ma_groups={"retain_kept": kept, "retain_other": other, "heldout": heldout},
                         settings={"el_n": 2, "el_prefix_stride": 1, "batch_size": 64})
    scores = evaluate(lm, word_tokenizer, data, {"ma": 0.5, "el2": 0.5})
    teacher_forced_rows = lm.batches[0][0]
    assert teacher_forced_rows == len(forget + heldout + kept + other)  # 7 distinct texts in one pass
    alone = {text: float(metrics.memorization_accuracy(TableLM(), word_tokenizer, [text])[0])
             for text in forget + heldout + kept + other}
    for name, texts in (("forget_ma", forget), ("retain_ma", kept + other), ("retain_kept_ma", kept),
                        ("retain_other_ma", other), ("heldout_ma", heldout)):
        assert scores[name] == pytest.approx(sum(alone[text] for text in texts) / len(texts)), name


def test_el_decodes_only_where_a_run_of_correct_predictions_ends(monkeypatch):
    decoded = []
    original = metrics.memorization.greedy_continuations

    def spy(lm, prompts, lengths, batch_size):
        decoded.extend(prompts)
        return original(lm, prompts, lengths, batch_size)

    monkeypatch.setattr(metrics.memorization, "greedy_continuations", spy)
    # [0,1,2,3,0,1] is what the table generates from 0: no prefix needs decoding. In [0,1,2,0,1] the model
    # predicts 3 after 2: every prefix up to x_<3 continues into the decode of x_<3 = [0,1,2].
    el = metrics.extraction_likelihood(TableLM(), None, [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1]], n=2)
    assert decoded == [[0, 1, 2]]
    assert el[0] == pytest.approx(1.0)


def test_ngram_overlap_counts_generated_ngrams_with_multiplicity():
    assert metrics.ngram_overlap([5, 5, 5], [5, 5, 6], 2) == 1.0
    assert metrics.ngram_overlap([1, 2, 3, 0], [1, 2, 0, 1], 2) == pytest.approx(1 / 3)
    assert metrics.ngram_overlap([1, 2], [1], 2) == 0.0


def test_extraction_likelihood_hand_computed():
    # n=2, x=[0,1,2,0,1]: t=1 gen [1,2,3,0] vs [1,2,0,1] -> 1/3; t=2 [2,3,0] vs [2,0,1] -> 0;
    # t=3 [3,0] vs [0,1] -> 0; EL = (1/3) / 3. A sequence the table generates itself scores 1.
    el = metrics.extraction_likelihood(TableLM(), None, [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0, 1]], n=2, batch_size=3)
    assert el.tolist() == pytest.approx([1 / 9, 1.0])
    strided = metrics.extraction_likelihood(TableLM(), None, [[0, 1, 2, 0, 1]], n=2, prefix_stride=2)
    assert strided.tolist() == pytest.approx([1 / 6])  # t = 1, 3 only
    with pytest.raises(NeuMuterError):
        metrics.extraction_likelihood(TableLM(), None, [[0, 1]], n=2)


def test_forgetting_criterion():
    thresholds = metrics.forgetting_thresholds(TableLM(), None, [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0, 1]], n=2)
    assert thresholds == pytest.approx({"ma": (0.75 + 1.0) / 2, "el2": (1 / 9 + 1) / 2})
    ma, el = torch.tensor([0.2, 0.2, 0.9, 0.5]), torch.tensor([0.01, 0.3, 0.01, 0.05])
    limits = {"ma": 0.5, "el10": 0.05}
    assert metrics.forgotten_mask(ma, el, limits).tolist() == [True, False, False, True]
    assert metrics.forgotten_fraction(ma, el, limits) == 0.5
    with pytest.raises(NeuMuterError):
        metrics.forgotten_mask(ma, el, {"ma": 0.5})


def test_qa_exposure_hand_computed(word_tokenizer):
    out = metrics.qa_exposure(TableLM(), word_tokenizer, [("a b", "c d"), {"question": "a", "answer": "c"}])
    # "a b" -> greedy "c d" (contains, both answer tokens hit); "a" -> "b" (miss).
    assert out["contains"].tolist() == [1.0, 0.0]
    assert out["token_accuracy"].tolist() == [1.0, 0.0]
    assert out["probability"].tolist() == pytest.approx([P_HIT, P_MISS])
    assert out["generations"] == ["c d", "b"]


def test_truth_ratio_and_forget_quality(word_tokenizer):
    ratios = metrics.truth_ratio(TableLM(), word_tokenizer, ["a", "a"], ["b", "c"], [["c", "d"], ["b"]])
    # (P_MISS + P_MISS) / 2 / P_HIT = 1/3 ; P_HIT / P_MISS = 3
    assert ratios.tolist() == pytest.approx([1 / 3, 3.0])
    assert metrics.truth_ratio_score(torch.tensor([1 / 3, 2.0]), forget_set=True) == pytest.approx(5 / 12)
    assert metrics.truth_ratio_score(torch.tensor([1 / 3, 2.0]), forget_set=False) == pytest.approx(1 / 3)
    same = torch.arange(10.0)
    assert metrics.forget_quality(same, same) == pytest.approx(1.0)
    assert metrics.forget_quality(same, same + 100) == pytest.approx(2 / math.comb(20, 10))


def test_rouge_l_recall_is_the_longest_common_word_subsequence_over_the_reference():
    assert metrics.rouge_l_recall("the phone is 555 1234", "555-1234") == 0.0  # punctuation glues 5551234
    assert metrics.rouge_l_recall("She works for Acme, Inc. now", "Acme Inc") == 1.0
    assert metrics.rouge_l_recall("b a c", "a b c d") == pytest.approx(2 / 4)  # "a c" or "b c"
    assert metrics.rouge_l_recall("", "a b") == 0.0
    with pytest.raises(NeuMuterError, match="no words"):
        metrics.rouge_l_recall("a", "...")


def test_qa_rouge_recall_scores_the_greedy_answer(word_tokenizer):
    # TableLM continues a -> b -> c -> d -> a: the answer to "a" is "b c" with two new tokens.
    recall = metrics.qa_rouge_recall(TableLM(), word_tokenizer, [("a", "b c"), ("a", "c a")], max_new_tokens=2)
    assert recall.tolist() == pytest.approx([1.0, 0.5])


def test_model_utility_is_the_harmonic_mean():
    assert metrics.model_utility({"p": 0.5, "r": 0.25}) == pytest.approx(2 / (2 + 4))
    assert metrics.model_utility({"p": 0.5, "r": 0.0}) == 0.0
    with pytest.raises(NeuMuterError, match=r"\[0, 1\]"):
        metrics.model_utility({"ppl": 12.0})


def test_generation_examples(word_tokenizer):
    (example,) = metrics.generation_examples(TableLM(), word_tokenizer, ["a b c a b"], prefix_length=2)
    assert example["prefix"] == "a b"
    assert example["generation_ids"] == [2, 3, 0]
    assert example["true_suffix"] == "c a b"
    assert example["token_matches"] == pytest.approx(1 / 3)


def test_bad_input_raises():
    with pytest.raises(NeuMuterError):
        metrics.memorization_accuracy(TableLM(), None, [])
    with pytest.raises(NeuMuterError):
        metrics.memorization_accuracy(TableLM(), None, ["text without a tokenizer"])
    with pytest.raises(NeuMuterError):
        metrics.memorization_accuracy(TableLM(), None, [[1]])


# ---------------------------------------------------------------------------------------------
# Tiny random GPT-Neo: batched metrics == slow per-token reference loops
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_neo():
    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                          attention_types=[[["global", "local"], 1]], window_size=6, max_position_embeddings=64,
                          bos_token_id=39, eos_token_id=39, pad_token_id=39)
    return GPTNeoForCausalLM(config).double().eval()


@pytest.fixture(scope="module")
def neo_samples(tiny_neo):
    """Samples the model partly memorizes (its own greedy continuations, some tokens changed) and
    random ones, of different lengths."""
    g = torch.Generator().manual_seed(1)
    samples = []
    for length in (14, 9, 12):
        prompt = torch.randint(0, 39, (1, 3), generator=g)
        own = tiny_neo.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=length - 3,
                                do_sample=False, pad_token_id=39)[0]
        own[5] = (own[5] + 1) % 39
        samples.append(own.tolist())
    samples.append(torch.randint(0, 39, (10,), generator=g).tolist())
    return samples


def test_ma_equals_generate_loop(tiny_neo, neo_samples):
    fast = metrics.memorization_accuracy(tiny_neo, None, neo_samples, batch_size=3)
    slow = []
    for seq in neo_samples:
        ids = torch.tensor([seq])
        hits = [
            int(tiny_neo.generate(ids[:, :t], attention_mask=torch.ones_like(ids[:, :t]), max_new_tokens=1,
                                  do_sample=False, pad_token_id=39)[0, -1]) == seq[t]
            for t in range(1, len(seq))
        ]
        slow.append(sum(hits) / len(hits))
    assert fast.tolist() == pytest.approx(slow)
    assert max(slow) > 0.5  # the comparison covers hits as well as misses


def _reference_el(model, seq, n):
    """knowledge-unlearning's loop, one prefix at a time, without cache; EOS banned as in greedy."""
    total = 0.0
    for t in range(1, len(seq) - n + 1):
        current = list(seq[:t])
        while len(current) < len(seq):
            logits = model(torch.tensor([current])).logits[0, -1]
            logits[model.config.eos_token_id] = -math.inf
            current.append(int(logits.argmax()))
        pred, label = current[t:], seq[t:]
        label_grams = {tuple(label[i:i + n]) for i in range(len(label) - n + 1)}
        tp = sum(tuple(pred[i:i + n]) in label_grams for i in range(len(pred) - n + 1))
        total += tp / (len(label) - n + 1)
    return total / (len(seq) - n)


def test_el_equals_slow_reference(tiny_neo, neo_samples):
    fast = metrics.extraction_likelihood(tiny_neo, None, neo_samples, n=3, batch_size=7)
    slow = [_reference_el(tiny_neo, seq, 3) for seq in neo_samples]
    assert fast.tolist() == pytest.approx(slow)
    assert max(slow) > 0.3


def test_el_decodes_texts_as_long_as_the_context_in_mixed_batches():
    """A batch decodes every row to its longest continuation: beside short prompts with long continuations,
    a long prompt must not be decoded past the model's last position. Texts filling the 16-position context
    score as the one-prefix-at-a-time reference does; a longer text is refused in one line."""
    torch.manual_seed(0)
    config = GPTNeoConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                          attention_types=[[["global"], 2]], max_position_embeddings=16,
                          bos_token_id=39, eos_token_id=39, pad_token_id=39)
    model = GPTNeoForCausalLM(config).double().eval()
    g = torch.Generator().manual_seed(2)
    samples = [torch.randint(0, 39, (length,), generator=g).tolist() for length in (16, 16, 5, 12)]
    fast = metrics.extraction_likelihood(model, None, samples, n=3, batch_size=7)
    assert fast.tolist() == pytest.approx([_reference_el(model, seq, 3) for seq in samples])
    with pytest.raises(NeuMuterError, match="sample 1 is 17 tokens long, longer than the model's context of 16"):
        metrics.memorization_accuracy(model, None, [samples[2], samples[0] + [1]])
    with pytest.raises(NeuMuterError, match="longer than the model's context of 16"):
        metrics.extraction_likelihood(model, None, [samples[0] + [1]], n=3)


def test_intervened_model_scores_like_the_equivalent_weight_edit(tiny_neo, neo_samples):
    """Zeroing FFN neurons through a pyvene intervention == zeroing their c_proj columns."""
    import copy

    from neumuter_interv import FrozenScaling
    from neumuter_interv.intervenable import attach

    neurons = [0, 3, 5, 7, 11]
    intervened = attach(copy.deepcopy(tiny_neo), [0, 1], lambda layer, width: FrozenScaling(
        neuron_indices=neurons, neuron_scales=[0.0] * len(neurons), embed_dim=width))
    edited = copy.deepcopy(tiny_neo)
    with torch.no_grad():
        for block in edited.transformer.h:
            block.mlp.c_proj.weight[:, neurons] = 0.0
    original_losses = metrics.sample_losses(tiny_neo, None, neo_samples)
    assert metrics.sample_losses(edited, None, neo_samples).tolist() != pytest.approx(original_losses.tolist())
    for metric in (metrics.memorization_accuracy, metrics.sample_losses):
        assert metric(intervened, None, neo_samples).tolist() == pytest.approx(metric(edited, None, neo_samples).tolist())
    el_intervened = metrics.extraction_likelihood(intervened, None, neo_samples, n=3, batch_size=7)
    el_edited = metrics.extraction_likelihood(edited, None, neo_samples, n=3, batch_size=7)
    assert el_intervened.tolist() == pytest.approx(el_edited.tolist())


def test_a_score_from_nan_logits_is_an_error_not_a_number(make_model, tokenizer):
    from neumuter_interv.errors import NeuMuterError
    from neumuter_interv.metrics import memorization_accuracy

    model = make_model("gpt_neo")
    with torch.no_grad():
        model.lm_head.weight[5] = float("nan")
    with pytest.raises(NeuMuterError, match="NaN"):
        memorization_accuracy(model, tokenizer, ["alice smith was born on may third"])
