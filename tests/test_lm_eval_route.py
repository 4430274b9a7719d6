"""The lm-eval-harness route: a merged (unlearned) checkpoint, as ``neumuter export --to merged`` writes it,
scored by lm-eval on local LAMBADA and PubMedQA tasks over the knowledge-unlearning validation files,
offline."""

from __future__ import annotations

import csv
import os
import sys

import pytest
import torch
import transformers
from conftest import SHARED_DATA, tiny_config
from test_export import random_selection

from neumuter_interv.errors import NeuMuterError
from neumuter_interv.export import ExportJob, write_export
from neumuter_interv.lm_eval_tasks import LAMBADA_TASK, PUBMEDQA_TASK, run_lm_eval, write_local_tasks

VALIDATION = SHARED_DATA / "knowledge-unlearning" / "validation_data"
TOKENIZER = SHARED_DATA / "gpt2-tokenizer"
LIMIT = 8

needs_shared = pytest.mark.skipif(not (VALIDATION.is_dir() and TOKENIZER.is_dir()),
                                  reason="../shared/data (knowledge-unlearning validation_data, gpt2-tokenizer) "
                                         "is not beside the repository")


def first_rows(name: str, count: int = LIMIT) -> list[dict[str, str]]:
    with (VALIDATION / name).open(newline="", encoding="utf-8") as handle:
        return [row for row, _ in zip(csv.DictReader(handle), range(count))]


def tiny_gpt_neo_that_mostly_says(word: str, tokenizer) -> transformers.PreTrainedModel:
    """The tiny random GPT-Neo of ``conftest`` (2 layers, 32 wide) over GPT-2's vocabulary, made to predict
    ``word`` (one token) nearly everywhere: the final layer norm's bias points at that token's row of an
    untied output layer. A purely random model scores 0 on LAMBADA, which could not tell a right count of
    greedy hits from a wrong one; this one is right on the rows that end in ``word`` only."""
    config = tiny_config("gpt_neo", len(tokenizer))
    config.max_position_embeddings = 512  # the first LAMBADA rows are up to 225 GPT-2 tokens: none is cut
    config.tie_word_embeddings = False
    config.pad_token_id = config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    (token,) = tokenizer.encode(" " + word)
    direction = torch.randn(config.hidden_size, generator=torch.Generator().manual_seed(1)).sign()
    with torch.no_grad():
        model.transformer.ln_f.bias.copy_(direction)
        model.lm_head.weight[token] = direction
    return model


@pytest.fixture(scope="module")
def unlearned_dir(tmp_path_factory):
    """A merged checkpoint written by the project's own export (a NeuMuter mask folded into both layers'
    FFN down-projections), saved with its GPT-2 tokenizer."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(TOKENIZER)
    model = tiny_gpt_neo_that_mostly_says("clean", tokenizer)
    out = tmp_path_factory.mktemp("lm-eval") / "unlearned"
    job = ExportJob(model, tokenizer, random_selection(model, seed=0, layers=[0, 1]), "tiny-random-gpt-neo")
    write_export(job, "merged", out, runs=[], location=str(out))
    return out


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lm-eval-tasks")
    assert write_local_tasks(VALIDATION, directory, limit=LIMIT) == [LAMBADA_TASK, PUBMEDQA_TASK]
    return directory


@pytest.fixture(scope="module")
def results(unlearned_dir, task_dir):
    with pytest.MonkeyPatch.context() as patch:  # run_lm_eval switches the Hub off for the process: undo it after
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            patch.delenv(name, raising=False)
        scores = run_lm_eval(unlearned_dir, [LAMBADA_TASK, PUBMEDQA_TASK], task_dir, limit=LIMIT)
        assert os.environ.get("HF_HUB_OFFLINE") == os.environ.get("HF_DATASETS_OFFLINE") == "1", "the Hub was on"
    return scores


def greedy_last_word_accuracy(model_dir, texts: list[str]) -> float:
    """By hand, with a plain transformers forward: the share of texts whose last space-separated word is
    what greedy decoding continues the rest with (every token of the word the argmax, teacher-forced)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    hits = 0
    for text in texts:
        context, word = text.rsplit(" ", 1)
        context_ids, whole = tokenizer.encode(context), tokenizer.encode(context + " " + word)
        assert whole[:len(context_ids)] == context_ids and len(whole) <= model.config.max_position_embeddings
        with torch.no_grad():
            logits = model(torch.tensor([whole])).logits[0]
        hits += logits[len(context_ids) - 1:len(whole) - 1].argmax(-1).tolist() == whole[len(context_ids):]
    return hits / len(texts)


@needs_shared
def test_both_local_tasks_report_an_accuracy_in_0_1_over_the_limited_rows(results):
    assert set(results) == {LAMBADA_TASK, PUBMEDQA_TASK}
    for task in (LAMBADA_TASK, PUBMEDQA_TASK):
        assert 0.0 <= results[task]["acc"] <= 1.0
        assert float(results[task]["acc"] * LIMIT).is_integer(), "acc is a mean over the 8 rows"
        assert all(type(value) is float for value in results[task].values())


@needs_shared
def test_lambada_accuracy_is_the_greedy_last_word_match_computed_by_hand(results, unlearned_dir):
    by_hand = greedy_last_word_accuracy(unlearned_dir, [row["text"] for row in first_rows("lambada.csv")])
    assert 0.0 < by_hand < 1.0, "the model must be right on some rows and wrong on others for the check to bite"
    assert results[LAMBADA_TASK]["acc"] == pytest.approx(by_hand, abs=1e-12)


@needs_shared
def test_the_task_files_build_the_knowledge_unlearning_prompts_and_targets(task_dir):
    import lm_eval.tasks

    manager = lm_eval.tasks.TaskManager(include_path=str(task_dir), include_defaults=False)
    tasks = lm_eval.tasks.get_task_dict([LAMBADA_TASK, PUBMEDQA_TASK], manager)

    lambada, row = tasks[LAMBADA_TASK], first_rows("lambada.csv", 1)[0]
    doc = next(iter(lambada.test_docs()))
    context, word = row["text"].rsplit(" ", 1)
    assert (lambada.doc_to_text(doc), lambada.doc_to_target(doc)) == (context, " " + word)

    pubmedqa, row = tasks[PUBMEDQA_TASK], first_rows("pubmed_qa.csv", 1)[0]
    docs = list(pubmedqa.test_docs())
    assert len(docs) == LIMIT, "write_local_tasks(limit=8) reads only the first 8 rows"
    prompt = pubmedqa.doc_to_text(docs[0])
    assert prompt == f"Context: {row['abstract']}\nQuestion: {row['question']}\nAnswer:"
    requests = pubmedqa.construct_requests(docs[0], prompt)
    assert [request.arguments for request in requests] == [(prompt, " yes"), (prompt, " maybe"), (prompt, " no")]
    assert [pubmedqa.doc_to_target(doc) for doc in docs] == \
        [("yes", "maybe", "no").index(row["final_decision"]) for row in first_rows("pubmed_qa.csv")]


def test_a_missing_validation_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(NeuMuterError) as missing_directory:
        write_local_tasks(tmp_path / "nowhere", tmp_path / "tasks")
    (tmp_path / "lambada.csv").write_text("id,token_length,text,task\n0,3,a b c,lambada\n")
    with pytest.raises(NeuMuterError) as missing_file:
        write_local_tasks(tmp_path, tmp_path / "tasks")
    for error, name in ((missing_directory, "lambada.csv"), (missing_file, "pubmed_qa.csv")):
        message = str(error.value)
        assert name in message and "does not exist" in message and "\n" not in message
    assert not (tmp_path / "tasks").exists(), "nothing is written when a file is missing"


def test_without_lm_eval_installed_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    with pytest.raises(NeuMuterError, match="pip install lm-eval"):
        run_lm_eval(tmp_path, [LAMBADA_TASK], tmp_path)
