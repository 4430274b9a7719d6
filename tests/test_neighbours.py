"""Neighbour generation with a tiny BERT masked LM built in the test (word-level WordPiece vocabulary)."""

import pytest
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM, BertTokenizer

from neumuter_interv.errors import NeuMuterError
from neumuter_interv.neighbours import generate_neighbours, mlm_neighbours, random_replacement_neighbours

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ("the a cat dog sat ran on under mat rug house garden red blue big small and then quickly "
         "slowly zebra").split()
TEXTS = [
    "the cat sat on the mat",
    "a big red dog ran quickly under the blue house and then sat",
    "the small cat ran",
]
CONTEXT = 16  # max_position_embeddings of the tiny BERT: 14 content tokens per window


@pytest.fixture(scope="module")
def tokenizer():
    """WordPiece tokenizer over a word vocabulary (every word one token)."""
    return BertTokenizer(vocab={token: i for i, token in enumerate(SPECIAL + WORDS)}, do_lower_case=True)


def _bert(tokenizer, boost: str | None = None) -> BertForMaskedLM:
    """Random tiny BERT; with ``boost`` its argmax is always that word, special tokens aside."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=CONTEXT)
    model = BertForMaskedLM(config).eval()
    if boost is not None:
        with torch.no_grad():
            model.cls.predictions.bias[tokenizer.convert_tokens_to_ids(boost)] += 100.0
            for special in ("[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]"):
                model.cls.predictions.bias[tokenizer.convert_tokens_to_ids(special)] += 1000.0
    return model


@pytest.fixture(scope="module")
def bert(tokenizer):
    return _bert(tokenizer)


def test_k_neighbours_per_sample_without_special_tokens(bert, tokenizer):
    out = mlm_neighbours(TEXTS, bert, tokenizer, k=3, ratio=1.0, seed=0)
    assert [len(group) for group in out] == [3, 3, 3]
    for text, group in zip(TEXTS, out):
        for neighbour in group:
            assert len(neighbour.split()) == len(text.split())
            assert not any(s in neighbour for s in SPECIAL)
    assert any(n != t for t, group in zip(TEXTS, out) for n in group)


def test_ratio_zero_keeps_text(bert, tokenizer):
    assert mlm_neighbours(TEXTS, bert, tokenizer, k=2, ratio=0.0) == [[t, t] for t in TEXTS]


def test_ratio_one_visits_every_position_and_bans_special_tokens(tokenizer):
    zebra = _bert(tokenizer, boost="zebra")  # specials have the highest logits but are banned
    out = mlm_neighbours(TEXTS, zebra, tokenizer, k=1, ratio=1.0)
    assert out == [[" ".join(["zebra"] * len(t.split()))] for t in TEXTS]
    half = mlm_neighbours(["the cat sat on the mat and then ran"], zebra, tokenizer, ratio=0.5)[0][0]
    assert half.split().count("zebra") == round(0.5 * 9)


def test_special_tokens_in_text_are_not_replaced(tokenizer):
    zebra = _bert(tokenizer, boost="zebra")
    (neighbour,), = mlm_neighbours(["the cat [SEP] sat"], zebra, tokenizer, ratio=1.0)
    assert neighbour == "zebra zebra zebra"  # [SEP] kept in place, then dropped by decoding


def test_batched_equals_one_at_a_time(bert, tokenizer):
    batched = mlm_neighbours(TEXTS, bert, tokenizer, k=2, ratio=0.7, seed=3, batch_size=4)
    sequential = [mlm_neighbours([t], bert, tokenizer, k=2, ratio=0.7, seed=3, batch_size=1)[0] for t in TEXTS]
    assert batched == sequential


def test_seed_determinism_and_order(bert, tokenizer):
    first = mlm_neighbours(TEXTS, bert, tokenizer, k=2, ratio=0.5, seed=7)
    assert first == mlm_neighbours(TEXTS, bert, tokenizer, k=2, ratio=0.5, seed=7)
    others = [mlm_neighbours(TEXTS, bert, tokenizer, k=2, ratio=0.5, seed=s) for s in (8, 9)]
    assert any(o != first for o in others)
    sequential = mlm_neighbours(TEXTS, bert, tokenizer, k=1, ratio=1.0, order="sequential")
    assert [len(g[0].split()) for g in sequential] == [len(t.split()) for t in TEXTS]


def test_input_longer_than_context(bert, tokenizer):
    long_text = " ".join((WORDS[:-1] * 3)[:40])  # 40 tokens > 14 content tokens per window
    (neighbour,), = mlm_neighbours([long_text], bert, tokenizer, ratio=1.0)
    assert len(neighbour.split()) == 40
    zebra = _bert(tokenizer, boost="zebra")
    (all_zebra,), = mlm_neighbours([long_text], zebra, tokenizer, ratio=1.0)
    assert all_zebra == " ".join(["zebra"] * 40)


def test_generate_neighbours_loads_by_path_and_caches(bert, tokenizer, tmp_path, monkeypatch):
    bert.save_pretrained(tmp_path / "mlm")
    tokenizer.save_pretrained(tmp_path / "mlm")
    cache = tmp_path / "cache"
    out = generate_neighbours(TEXTS, str(tmp_path / "mlm"), k=2, ratio=0.5, seed=1, cache_dir=cache, device="cpu")
    assert out == mlm_neighbours(TEXTS, bert, tokenizer, k=2, ratio=0.5, seed=1)
    assert len(list(cache.glob("neighbours-*.json"))) == 1

    def no_loading(*args, **kwargs):
        raise AssertionError("the cached result should have been used")

    monkeypatch.setattr(transformers.AutoModelForMaskedLM, "from_pretrained", no_loading)
    assert generate_neighbours(TEXTS, str(tmp_path / "mlm"), k=2, ratio=0.5, seed=1, cache_dir=cache) == out
    with pytest.raises(AssertionError):
        generate_neighbours(TEXTS, str(tmp_path / "mlm"), k=2, ratio=0.5, seed=2, cache_dir=cache)


def test_random_replacement_neighbours():
    ids = [[0, 5, 6, 7, 8, 9, 1], [0, 4, 4, 1]]
    out = random_replacement_neighbours(ids, vocab_size=20, ratio=1.0, k=3, seed=0, special_ids=[0, 1, 2])
    assert [len(g) for g in out] == [3, 3]
    for original, group in zip(ids, out):
        for neighbour in group:
            assert len(neighbour) == len(original)
            assert neighbour[0] == 0 and neighbour[-1] == 1
            assert all(t not in (0, 1, 2) for t in neighbour[1:-1])
    # deterministic, keyed by content rather than list position, and tensors are accepted
    alone = random_replacement_neighbours(torch.tensor([ids[0]]), 20, ratio=1.0, k=3, seed=0, special_ids=[0, 1, 2])
    assert alone == out[:1]
    assert random_replacement_neighbours(ids, 20, ratio=0.0, k=1) == [[ids[0]], [ids[1]]]
    half = random_replacement_neighbours([list(range(3, 13))], 1000, ratio=0.5, k=1, seed=4, special_ids=[0, 1, 2])
    assert sum(t >= 13 for t in half[0][0]) == 5


def test_bad_input_raises(bert, tokenizer):
    with pytest.raises(NeuMuterError):
        mlm_neighbours([], bert, tokenizer)
    with pytest.raises(NeuMuterError):
        mlm_neighbours(TEXTS, bert, tokenizer, ratio=1.5)
    with pytest.raises(NeuMuterError):
        mlm_neighbours(TEXTS, bert, tokenizer, k=0)
    with pytest.raises(NeuMuterError):
        random_replacement_neighbours([[1, 2]], vocab_size=3, ratio=1.0, special_ids=[0, 1, 2])


# ---------------------------------------------------------------------------------------------
# Self-neighbours: written by the causal LM itself
# ---------------------------------------------------------------------------------------------

def _causal_lm(vocab_size: int = 40):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


SEQUENCES = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [20, 21, 22, 0, 23, 24, 25], [30, 31, 32, 33, 34, 35, 36, 37, 38]]


def test_self_neighbours_replace_the_planned_share_and_never_keep_the_original_token():
    from neumuter_interv.neighbours import self_neighbours

    model = _causal_lm()
    out = self_neighbours(SEQUENCES, model, k=2, ratio=0.5, top_k=5, seed=3, special_ids=[0])
    for sequence, group in zip(SEQUENCES, out):
        eligible = [p for p in range(1, len(sequence)) if sequence[p] != 0]
        for neighbour in group:
            assert len(neighbour) == len(sequence) and neighbour[0] == sequence[0]
            changed = [p for p in range(len(sequence)) if neighbour[p] != sequence[p]]
            assert len(changed) == round(0.5 * len(eligible)), "every replaced position holds another token"
            assert set(changed) <= set(eligible), "position 0 and special tokens are never replaced"
            assert 0 not in [neighbour[p] for p in changed], "special tokens are never written"
        assert group[0] != group[1], "the k neighbours of a sample differ"


def test_self_neighbours_are_deterministic_for_a_seed_and_independent_of_batching():
    from neumuter_interv.neighbours import self_neighbours

    model = _causal_lm()
    first = self_neighbours(SEQUENCES, model, k=2, ratio=0.6, seed=1, batch_size=4)
    assert self_neighbours(SEQUENCES, model, k=2, ratio=0.6, seed=1, batch_size=1) == first
    assert self_neighbours(SEQUENCES[::-1], model, k=2, ratio=0.6, seed=1)[::-1] == first, "content, not position"
    assert self_neighbours(SEQUENCES, model, k=2, ratio=0.6, seed=2) != first


def test_self_neighbours_follow_the_rewritten_left_context():
    """A model that always predicts "the previous token + 1" (top_k 1: its first choice) rewrites a run of
    replaced positions as a chain from the first replacement, which only a left context that includes the
    earlier replacements produces."""
    from neumuter_interv.neighbours import self_neighbours

    class NextToken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, past_key_values=None, use_cache=True):
            previous = (past_key_values or []) + input_ids.tolist()[0]
            logits = torch.full((1, input_ids.shape[1], 50), -1e9)
            logits[0, :, (input_ids[0] + 1) % 50] = 0.0
            return transformers.modeling_outputs.CausalLMOutputWithPast(logits=logits, past_key_values=previous)

    sequence = [10, 40, 40, 40, 40]
    out = self_neighbours([sequence], NextToken(), ratio=1.0, top_k=1, seed=0)[0][0]
    assert out == [10, 11, 12, 13, 14]


def test_generate_self_neighbours_decodes_and_caches(tmp_path, tokenizer):
    from neumuter_interv.neighbours import generate_self_neighbours

    model = _causal_lm(len(tokenizer))
    first = generate_self_neighbours(TEXTS, model, tokenizer, model_key="tiny", ratio=0.5, seed=0, cache_dir=tmp_path)
    assert len(first) == len(TEXTS) and all(len(group) == 1 and isinstance(group[0], str) for group in first)
    assert len(list(tmp_path.glob("self-neighbours-*.json"))) == 1
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # a cache hit must not look at the model
    assert generate_self_neighbours(TEXTS, model, tokenizer, model_key="tiny", ratio=0.5, seed=0, cache_dir=tmp_path) == first


def test_anchors_join_each_samples_neighbours_round_robin():
    from neumuter_interv.neighbours import with_anchors

    neighbours = ["n0a", "n0b", "n1a", "n1b", "n2a", "n2b"]  # k = 2 per forget sample
    assert with_anchors(neighbours, 2, ["A", "B", "C", "D", "E"], 2) == [
        "n0a", "n0b", "A", "B", "n1a", "n1b", "C", "D", "n2a", "n2b", "E", "A"]
    assert with_anchors(neighbours, 2, ["A"], 0) == neighbours
    with pytest.raises(NeuMuterError, match="no anchor texts"):
        with_anchors(neighbours, 2, [], 1)
