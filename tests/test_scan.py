"""``neumuter scan``: on a tiny model that memorized a few texts, the scan finds exactly those."""

import json
import os
import random

import pytest
from conftest import FORGET, HELDOUT, RETAIN

from neumuter_interv.cli import main
from neumuter_interv.corpora import Document, read_documents
from neumuter_interv.data import read_texts
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.scan import ScanConfig, cut_windows, fold_near_duplicates, scan, write_scan

WORDS = sorted({word for text in FORGET + RETAIN + HELDOUT for word in text.split()})
SMALL = ScanConfig(window=32, stride=16, min_tokens=8, reference_neighbours=24, top_k=4, el_n=3, el_prefix_stride=2,
                   extraction_prefix=4, extraction_suffix=6)


def unseen_texts(count: int, seed: int) -> list[str]:
    """Texts of the known words in an order no model was trained on."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, 17)) for _ in range(count)]


def test_the_scan_finds_exactly_the_memorized_texts(memorized):
    model, tokenizer = memorized
    candidates = [Document(text, f"doc{i}") for i, text in enumerate(FORGET + RETAIN + unseen_texts(6, 1))]
    result = scan(model, tokenizer, candidates, [Document(t, "held") for t in unseen_texts(24, 2)], SMALL,
                  progress=False, log=lambda message: None)
    assert sorted(w.text for w in result.memorized) == sorted(FORGET + RETAIN)
    top = result.memorized[:SMALL.top_k]
    assert all(w.el10 is not None and w.extracted is not None for w in top)
    assert all(w.el10 is None for w in result.memorized[SMALL.top_k:]), "extraction checks for the top only"
    assert all(w.ma > w.threshold for w in result.memorized)
    assert all(0 < w.p_value <= 1 for w in result.candidates)


def test_windows_cover_a_document_and_near_duplicates_fold_into_one(tokenizer):
    text = " ".join(FORGET)  # 4 sentences, ~70 tokens
    windows = cut_windows(tokenizer, [Document(text, "a")], SMALL)
    n_tokens = len(tokenizer(text)["input_ids"])
    assert windows[0].start == 0 and windows[-1].start + SMALL.window == n_tokens, "nothing skipped at the end"
    assert all(len(tokenizer(w.text)["input_ids"]) == SMALL.window for w in windows)
    copy = [Document(text, "b"), Document(text.replace("alice", "erin"), "c")]
    folded = fold_near_duplicates(cut_windows(tokenizer, [Document(text, "a")] + copy, SMALL), tokenizer, 4, 0.8)
    assert len(folded) == len(windows)
    assert folded[0].copies == ["b", "c"]


def test_the_scan_writes_memorized_jsonl_usable_as_a_forget_file_and_a_report(memorized, tmp_path):
    model, tokenizer = memorized
    candidates = [Document(text, f"doc{i}") for i, text in enumerate(FORGET + unseen_texts(4, 3))]
    result = scan(model, tokenizer, candidates, [Document(t, "held") for t in unseen_texts(16, 4)], SMALL,
                  progress=False, log=lambda message: None)
    write_scan(tmp_path / "out", result, "tiny")
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"memorized.jsonl", "scan.json", "report.md", "ma_distributions.png"}
    assert read_texts(out / "memorized.jsonl") == [w.text for w in result.memorized]
    summary = json.loads((out / "scan.json").read_text())["summary"]
    assert summary["memorized_windows"] == len(FORGET) and summary["heldout_windows"] == 16
    assert "doc0" in (out / "report.md").read_text()


def test_the_scan_command_reads_files_directories_and_globs(memorized_dir, tmp_path, capsys):
    (tmp_path / "cand").mkdir()
    for i, text in enumerate(FORGET):
        (tmp_path / "cand" / f"f{i}.txt").write_text(text)
    not_utf8 = os.fsdecode(os.fsencode(tmp_path / "cand" / "f0.txt")[:-4] + b"-caf\xe9.txt")  # names are data
    os.rename(tmp_path / "cand" / "f0.txt", not_utf8)
    (tmp_path / "more.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in unseen_texts(3, 5)))
    (tmp_path / "held").mkdir()
    for i, text in enumerate(unseen_texts(12, 6)):
        (tmp_path / "held" / f"h{i}.md").write_text(text)
    documents = read_documents([str(tmp_path / "cand"), str(tmp_path / "*.jsonl")])
    assert len(documents) == len(FORGET) + 3 and documents[-1].source.endswith("more.jsonl:2")
    code = main(["scan", "--model", str(memorized_dir), "--candidates", str(tmp_path / "cand"), str(tmp_path / "*.jsonl"),
                 "--heldout", str(tmp_path / "held" / "*.md"), "--out", str(tmp_path / "out"), "--window", "32",
                 "--stride", "16", "--min-tokens", "8", "--reference-neighbours", "24", "--top-k", "2", "--el-n", "3",
                 "--extraction-prefix", "4", "--extraction-suffix", "6", "--no-progress"])
    assert code == 0
    assert sorted(read_texts(tmp_path / "out" / "memorized.jsonl")) == sorted(FORGET)
    assert "f0-caf\\udce9.txt" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_a_pattern_that_names_no_file_is_refused_before_any_work(tmp_path, capsys):
    code = main(["scan", "--candidates", str(tmp_path / "nothing*.txt"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "names no file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_settings_are_refused():
    with pytest.raises(NeuMuterError, match="min_tokens"):
        ScanConfig(window=16, min_tokens=32)
    with pytest.raises(NeuMuterError, match="max_windows_per_document"):
        ScanConfig(max_windows_per_document=0)

