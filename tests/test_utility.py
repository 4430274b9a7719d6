"""The paper's utility metrics (Appendix B) against hand-computed cases, the knowledge-unlearning file
formats read as they are (a small copy written here, and the real shared files where present), and
``--utility`` through ``neumuter eval``."""

import json
import math
from pathlib import Path

import pytest
import torch
from test_metrics import P_HIT, P_MISS, TableLM

from neumuter_interv import metrics
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.evaluation import EvaluationSet
from neumuter_interv.utility import (
    UtilityConfig,
    check_utility,
    dialogue_prompt,
    evaluate_utility,
    fitted,
    load_utility,
    normalize_reply,
    pubmedqa_prompt,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "knowledge-unlearning" / "validation_data"


# --- hand-computed metrics on the table model (next token of a, b, c, d is b, c, d, a) -------------------

def test_continuation_scores_sum_the_log_probabilities_and_mark_greedy_continuations(word_tokenizer):
    scores = metrics.continuation_scores(TableLM(), word_tokenizer, ["a", "a"], [" b c", " d"])
    assert scores["log_likelihood"].tolist() == pytest.approx([2 * math.log(P_HIT), math.log(P_MISS)])
    assert scores["greedy"].tolist() == [1.0, 0.0]
    assert scores["tokens"].tolist() == [2, 1]


def test_lambada_scores_the_last_word_given_the_rest(word_tokenizer):
    # "a b": after a the model predicts b (hit); "a c": it predicts b, not c; "b c d": c then d both follow.
    assert metrics.lambada_accuracy(TableLM(), word_tokenizer, ["a b", "a c", "b c d"]).tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(NeuMuterError, match="last word after a space"):
        metrics.lambada_accuracy(TableLM(), word_tokenizer, ["abc"])


def test_multiple_choice_picks_the_highest_unnormalized_log_likelihood(word_tokenizer):
    lm = TableLM()
    # " b" (one hit) beats " c" and " d" (one miss each); " b" also beats " b c" (two hits sum lower).
    accuracy = metrics.multiple_choice_accuracy(lm, word_tokenizer, ["a", "a", "a"],
                                                [[" b", " c", " d"], [" b", " c", " d"], [" b", " b c"]], [0, 1, 0])
    assert accuracy.tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(NeuMuterError, match="answer index 3"):
        metrics.multiple_choice_accuracy(lm, word_tokenizer, ["a"], [[" b", " c"]], [3])


def test_unigram_f1_is_squad_f1_without_articles_and_punctuation():
    assert metrics.unigram_f1("The cat sat.", "a cat sat down") == pytest.approx(0.8)  # P = 1, R = 2/3
    assert metrics.unigram_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # counts, not sets
    assert metrics.unigram_f1("dog", "cat") == 0.0
    assert metrics.unigram_f1("", "cat") == 0.0


def test_dialogue_scores_the_greedy_reply_and_the_reference_cross_entropy(word_tokenizer):
    # Prompt "a": the reference " b c" is two hits (CE = -log P_HIT); the greedy reply of 3 tokens is
    # "b c d": F1 against "b c" is 2 * (2/3 * 1) / (2/3 + 1) = 0.8.
    result = metrics.dialogue_scores(TableLM(), word_tokenizer, ["a"], [" b c"], max_new_tokens=3)
    assert result["ce"] == pytest.approx(-math.log(P_HIT))
    assert result["generations"] == ["b c d"]
    assert result["f1"].tolist() == pytest.approx([0.8])


def test_dialogue_ce_is_averaged_over_all_reply_tokens(word_tokenizer):
    # Two hits for " b c" after a, one miss for " a" after a: token-weighted mean of three losses.
    result = metrics.dialogue_scores(TableLM(), word_tokenizer, ["a", "a"], [" b c", " a"], max_new_tokens=1)
    assert result["ce"] == pytest.approx((-2 * math.log(P_HIT) - math.log(P_MISS)) / 3)


def test_long_contexts_are_cut_from_the_left(word_tokenizer):
    # With room for 3 tokens, "d a b c a" + " b" keeps "c a" + "b": the hit after a, whatever came first.
    scores = metrics.continuation_scores(TableLM(), word_tokenizer, ["d a b c a"], [" b"], max_length=3)
    assert scores["log_likelihood"].tolist() == pytest.approx([math.log(P_HIT)])
    with pytest.raises(NeuMuterError, match="no shorter than"):
        metrics.continuation_scores(TableLM(), word_tokenizer, ["a"], [" b c d"], max_length=3)


# --- the knowledge-unlearning formats -----------------------------------------------------------------

def test_replies_are_normalized_as_parlai_does():
    assert normalize_reply("i think so") == "I think so."
    assert normalize_reply("hello . how are you ?") == "Hello. How are you?"
    assert normalize_reply("That's great!") == "That's great!"


def test_a_dialogue_becomes_alternating_turns_and_the_next_speakers_reply():
    prompt, reply = dialogue_prompt(["hi there", "hello", "how are you"])
    assert prompt == "User 1: Hi there.\nUser 2: Hello.\nUser 1:"
    assert reply == " How are you."
    prompt, reply = dialogue_prompt(["hi", "bye"])
    assert prompt == "User 1: Hi.\nUser 2:" and reply == " Bye."


def test_pubmedqa_prompt_and_answer_index():
    prompt, answer = pubmedqa_prompt({"abstract": "Cells grow.", "question": "Do cells grow?", "final_decision": "maybe"})
    assert prompt == "Context: Cells grow.\nQuestion: Do cells grow?\nAnswer:" and answer == 1
    with pytest.raises(NeuMuterError, match="yes, maybe or no"):
        pubmedqa_prompt({"abstract": "", "question": "", "final_decision": "perhaps"})


def write_validation_dir(root: Path) -> Path:
    """A miniature validation_data directory in the knowledge-unlearning formats (pandas' to_json for the
    dialogue files, CSVs with their original columns)."""
    root.mkdir()
    (root / "pile.csv").write_text("doc_id,text,corpus\n0,a b c d a b,Pile-CC\n1,\"b c\nd a\",Github\n")
    (root / "wikitext.csv").write_text(",text\n0, \n1,c d a b c\n")
    (root / "lambada.csv").write_text("id,token_length,text,task\n0,3,a b,lambada\n1,3,a c,lambada\n")
    (root / "pubmed_qa.csv").write_text("pubid,question,context,long_answer,final_decision,abstract\n"
                                        "1,b,\"{}\",x,yes,a\n2,c,\"{}\",x,no,a\n")
    dialogue = {"text": {"0": ["a", "b c"], "1": ["only one turn"], "2": ["c", "d a", "b"]}}
    for name in ("wizard_of_wikipedia", "wizard_of_internet", "blended_skill_talk", "empathetic_dialogues"):
        (root / f"{name}.json").write_text(json.dumps(dialogue))
    return root


def test_every_task_is_read_and_scored_from_a_validation_directory(tmp_path, word_tokenizer):
    data = load_utility(UtilityConfig(str(write_validation_dir(tmp_path / "validation"))))
    assert data.ppl["wikitext"] == ["c d a b c"]  # the blank row is dropped
    assert data.lambada == ["a b", "a c"]
    assert [answer for _, answer in data.pubmedqa] == [0, 2]
    assert len(data.dialogues["wizard_of_wikipedia"]) == 2  # the one-turn dialogue has no reply to score
    scores = evaluate_utility(TableLM(), word_tokenizer, data)
    assert scores["lambada_acc"] == 0.5
    # PubMedQA: the word tokenizer maps the prompt to unknown tokens; the three choices are single tokens
    # after the same context, so both questions pick the same choice: one of the two answers is right.
    assert scores["pubmedqa_acc"] == 0.5 and scores["classification_acc"] == 0.5
    assert scores["wikitext_ppl"] == pytest.approx(1 / P_HIT)  # c d a b c: four hits
    assert {"pile_ppl", "dialogue_f1", "dialogue_ce", "empathetic_dialogues_f1"} <= set(scores)
    assert scores["dialogue_f1"] == pytest.approx(sum(scores[f"{n}_f1"] for n in data.dialogues) / 4)


def test_dialogue_sets_scored_in_one_call_give_each_sets_own_scores(tmp_path, word_tokenizer):
    """The sets share one decoding loop, yet each set's F1 and CE are what scoring it alone gives."""
    root = write_validation_dir(tmp_path / "validation")
    (root / "blended_skill_talk.json").write_text(json.dumps({"text": {"0": ["b", "c d"]}}))  # unlike the others
    data = load_utility(UtilityConfig(str(root)))
    scores = evaluate_utility(TableLM(), word_tokenizer, data)
    for name, pairs in data.dialogues.items():
        prompts, replies = zip(*pairs)
        alone = metrics.dialogue_scores(TableLM(), word_tokenizer, prompts, replies, max_new_tokens=32,
                                        max_length=256)
        assert scores[f"{name}_f1"] == pytest.approx(float(alone["f1"].mean()))
        assert scores[f"{name}_ce"] == pytest.approx(alone["ce"])
    assert scores["blended_skill_talk_ce"] != scores["wizard_of_wikipedia_ce"]


def test_the_fingerprint_follows_the_files_and_the_sample_counts(tmp_path):
    root = write_validation_dir(tmp_path / "validation")
    first = load_utility(UtilityConfig(str(root))).fingerprint
    assert load_utility(UtilityConfig(str(root), lambada_samples=1)).fingerprint != first
    (root / "lambada.csv").write_text("id,token_length,text,task\n0,3,a d,lambada\n")
    assert load_utility(UtilityConfig(str(root))).fingerprint != first


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "lambada.csv").unlink(), "lambada.csv' does not exist"),
    (lambda root: (root / "blended_skill_talk.json").write_text("[1, 2]"), "not a knowledge-unlearning dialogue file"),
    (lambda root: (root / "pubmed_qa.csv").write_text("pubid,question\n1,q\n"), "missing 'abstract' and 'final_decision' column"),
])
def test_a_missing_or_malformed_file_is_named_in_one_line(tmp_path, change, message):
    root = write_validation_dir(tmp_path / "validation")
    change(root)
    with pytest.raises(NeuMuterError, match=message):
        load_utility(UtilityConfig(str(root)))


def test_bad_settings_are_refused():
    with pytest.raises(NeuMuterError, match="unknown utility task"):
        UtilityConfig("x", tasks=("mmlu",))
    with pytest.raises(NeuMuterError, match="lambada_samples must be at least 1"):
        UtilityConfig("x", lambada_samples=0)
    with pytest.raises(NeuMuterError, match="does not exist or is not a directory"):
        load_utility(UtilityConfig("/nonexistent/validation_data"))


def test_a_model_with_a_short_context_scores_what_fits(shared_validation):
    from conftest import tiny_model_of
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(shared_validation.parents[1] / "gpt2-tokenizer"))
    model = tiny_model_of("gpt_neo", len(tokenizer))  # a context of 64 tokens, under the default 256
    data = load_utility(UtilityConfig(str(shared_validation), lambada_samples=2, pubmedqa_samples=1,
                                      dialogues_per_set=1, ppl_texts=1, reply_tokens=8))
    assert fitted(data.config, model).max_length == 64 and fitted(data.config, model).ppl_tokens == 64
    check_utility(model, tokenizer, data)
    assert {"pile_ppl", "lambada_acc", "pubmedqa_acc", "dialogue_f1"} <= set(evaluate_utility(model, tokenizer, data))


@pytest.mark.parametrize("change, message", [
    (lambda root: (root / "lambada.csv").write_text("id,token_length,text,task\n0,3,a b,lambada\n1,1,word,lambada\n"),
     "lambada.csv row 1 needs a context and a last word"),
    (lambda root: (root / "wikitext.csv").write_text(",text\n0,a\n"), "wikitext.csv: no text of two or more tokens"),
])
def test_what_a_task_cannot_score_is_refused_before_any_scoring_naming_the_file(tmp_path, word_tokenizer, change,
                                                                                 message):
    root = write_validation_dir(tmp_path / "validation")
    change(root)
    data = load_utility(UtilityConfig(str(root)))
    with pytest.raises(NeuMuterError, match=message):
        EvaluationSet(["a b c"], ["b c d"], settings={"el_n": 2, "el_prefix_stride": 1, "batch_size": 8},
                      utility=data).check(TableLM(), word_tokenizer)


def test_a_context_too_short_for_a_dialogue_reply_is_refused_up_front(tmp_path, word_tokenizer):
    data = load_utility(UtilityConfig(str(write_validation_dir(tmp_path / "validation")), reply_tokens=32))
    with pytest.raises(NeuMuterError, match="context of 8 tokens is too short for the dialogue"):
        check_utility(TableLM(context=8), word_tokenizer, data)


# --- the real shared files --------------------------------------------------------------------------

@pytest.fixture
def shared_validation():
    if not SHARED.is_dir():
        pytest.skip(f"the shared knowledge-unlearning data is not at {SHARED}")
    return SHARED


def test_the_shared_files_read_as_knowledge_unlearning_builds_them(shared_validation):
    data = load_utility(UtilityConfig(str(shared_validation), lambada_samples=3, pubmedqa_samples=2,
                                      dialogues_per_set=1, ppl_texts=2))
    prompt, reply = data.dialogues["blended_skill_talk"][0]
    assert prompt.startswith("User 1: That sounds dangerous. Is it worth doing such a dangerous job?\nUser 2: ")
    assert prompt.endswith("\nUser 2:") and reply == " I feel you. Stretch along the halls."
    assert data.pubmedqa[0][0].startswith("Context: ") and "\nQuestion: Pap smears" in data.pubmedqa[0][0]
    assert data.lambada[0].startswith("With Tristran's next step") and len(data.ppl["pile"]) == 2


def test_dialogue_f1_ce_and_lambada_on_the_shared_files_with_a_real_tokenizer(shared_validation):
    from conftest import tiny_model_of
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(shared_validation.parents[1] / "gpt2-tokenizer"))
    model = tiny_model_of("gpt_neo", len(tokenizer))  # a context of 64 tokens
    data = load_utility(UtilityConfig(str(shared_validation), tasks=("lambada", "empathetic_dialogues"),
                                      lambada_samples=4, dialogues_per_set=2, reply_tokens=4, max_length=64))
    scores = evaluate_utility(model, tokenizer, data)
    assert 0.0 <= scores["lambada_acc"] <= 1.0 and 0.0 <= scores["empathetic_dialogues_f1"] <= 1.0
    # An untrained model over 50,257 tokens: about uniform, so the CE is near log(vocabulary size).
    assert scores["empathetic_dialogues_ce"] == pytest.approx(math.log(len(tokenizer)), rel=0.1)
    assert torch.isfinite(torch.tensor(scores["dialogue_ce"]))
