"""Reading forget sets: the knowledge-unlearning files as they are, and clear errors otherwise."""

import pytest
from conftest import SHARED_DATA

from neumuter_interv import NeuMuterError
from neumuter_interv.data import pad_batch, read_texts, tokenize

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not beside the repository")


@needs_shared
def test_the_papers_forget_sets_read_as_they_are():
    from transformers import AutoTokenizer

    texts = read_texts(SHARED_DATA / "knowledge-unlearning" / "main" / "lm_extraction_32_0.csv")
    assert len(texts) == 32
    tokenizer = AutoTokenizer.from_pretrained(SHARED_DATA / "gpt2-tokenizer")
    lengths = [len(ids) for ids in tokenize(tokenizer, texts, max_length=2048)]
    assert 150 <= min(lengths) and max(lengths) <= 260  # 200 GPT-Neo tokens each, re-tokenized from text


def test_jsonl_and_txt_forget_files(tmp_path):
    (tmp_path / "f.jsonl").write_text('{"text": "first sample"}\n\n{"text": "second sample"}\n')
    (tmp_path / "f.txt").write_text("one\n\ntwo\n")
    assert read_texts(tmp_path / "f.jsonl") == ["first sample", "second sample"]
    assert read_texts(tmp_path / "f.txt") == ["one", "two"]


def test_samples_are_split_on_newlines_only(tmp_path):
    (tmp_path / "f.txt").write_bytes("page one\fpage two\r\nline\u2028separator\n".encode())
    (tmp_path / "f.jsonl").write_bytes('{"text": "a\u2028b"}\n'.encode())
    assert read_texts(tmp_path / "f.txt") == ["page one\fpage two", "line\u2028separator"]
    assert read_texts(tmp_path / "f.jsonl") == ["a\u2028b"]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", '{"text": "ok"}\n{"body": "no text"}\n', "bad.jsonl:2: missing 'text' field"),
    ("bad2.jsonl", "not json\n", "not valid JSON"),
    ("notes.md", "text\n", "use .txt"),
    ("null.jsonl", '{"text": null}\n', "null.jsonl:1: the 'text' field is NoneType, not a string"),
    ("list.jsonl", '{"text": ["a", "b"]}\n', "the 'text' field is list, not a string"),
    ("twice.jsonl", '{"text": "a", "text": "b"}\n', "twice.jsonl:1: the key 'text' appears twice"),
    ("digits.jsonl", '{"text": "a", "n": ' + "9" * 5000 + '}\n', "not usable JSON"),
    ("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
    ("two-columns.csv", "text,text\na,b\n", "the column 'text' appears twice"),
])
def test_malformed_forget_files_name_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(NeuMuterError, match=message):
        read_texts(tmp_path / name)


def test_left_and_right_padding():
    right = pad_batch([[1, 2, 3], [4]], pad_id=0)
    left = pad_batch([[1, 2, 3], [4]], pad_id=0, side="left")
    assert right.input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert left.input_ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert right.labels.tolist() == [[1, 2, 3], [4, -100, -100]]


def test_one_string_given_for_a_list_of_texts_is_refused_not_split_into_characters():
    with pytest.raises(NeuMuterError, match="the forget set must be a list of texts, got one string"):
        tokenize(None, "The MIT License")
