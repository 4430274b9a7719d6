"""`neumuter export`: every format reproduces the frozen NeuMuter intervention, loads with the
libraries it promises (checked in fresh processes), composes several runs, writes all or nothing,
and pushes exactly the written folder to the Hub (HfApi patched: the Hub is never contacted)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from huggingface_hub import snapshot_download

from neumuter_interv.cli import main
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.export import ExportJob, compose, read_run, write_export
from neumuter_interv.intervenable import intervened_generate, intervened_logits, load
from neumuter_interv.methods.neumuter import NeuronSet, Selection, freeze

MAX_NEW_TOKENS = 6
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def random_selection(model, seed: int, layers: list[int], count: int = 8, pool: int = 16) -> Selection:
    """``count`` distinct neurons drawn from the first ``pool`` of each layer, scales in [0, 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    width, n_layers = model.config.intermediate_size, model.config.num_hidden_layers
    chosen = {}
    for layer in layers:
        indices = sorted(torch.randperm(pool, generator=generator)[:count].tolist())
        chosen[layer] = NeuronSet(indices, (torch.rand(count, generator=generator) * 0.1).tolist())
    return Selection(chosen, width, n_layers, model.config.model_type, {"rule": "random-for-tests"})


def write_run(directory: Path, selection: Selection, base_model_dir: Path, metrics: dict | None = None) -> Path:
    """A run directory as ``neumuter unlearn`` writes it (only the JSON files export reads)."""
    directory.mkdir(parents=True)
    selection.save(directory / "selection.json")
    forget = f"forget set of {directory.name}"
    (directory / "config.json").write_text(json.dumps({
        "neumuter": {}, "model": str(base_model_dir), "forget_file": "forget.txt", "forget_samples": 3,
        "forget_sha256": hashlib.sha256(forget.encode()).hexdigest(),
    }))
    (directory / "metrics.json").write_text(json.dumps(metrics or {"neurons_muted": selection.neurons_muted}))
    return directory


@pytest.fixture
def saved_base(tmp_path, make_model, tokenizer):
    """``save_base(architecture)``: (in-memory model, its saved directory with tokenizer)."""

    def save(architecture: str):
        model = make_model(architecture)
        directory = tmp_path / f"base-{architecture}"
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return model, directory

    return save


@pytest.fixture
def two_runs(tmp_path, saved_base):
    """``two_runs(architecture)``: model, base dir, and two runs whose masks overlap on layer 1."""

    def make(architecture: str):
        model, base_dir = saved_base(architecture)
        first = random_selection(model, seed=1, layers=[0, 1])
        second = random_selection(model, seed=2, layers=[1])
        assert set(first.layers[1].indices) & set(second.layers[1].indices), "the test needs overlapping neurons"
        metrics = {"before": {"MA": 0.93, "EL_10": 0.41}, "after": {"MA": 0.12, "EL_10": 0.02}}
        runs = [write_run(tmp_path / "run-a", first, base_dir, metrics), write_run(tmp_path / "run-b", second, base_dir)]
        return model, base_dir, runs

    return make


def prompt_inputs(vocab_size: int) -> dict[str, torch.Tensor]:
    input_ids = torch.randint(3, vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def run_python(script: str, *args) -> None:
    """Run ``script`` in a fresh interpreter of this venv (offline), failing with its stderr."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=OFFLINE, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


# Plain PEFT and transformers: neither neumuter_interv nor pyvene may be imported.
PLAIN_LOADERS = """
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base_dir, ia3_dir, merged_dir, inputs_file, out_file, max_new = sys.argv[1:]
inputs = torch.load(inputs_file)

def logits_and_generation(model):
    with torch.no_grad():
        logits = model(**inputs).logits
        sequences = model.generate(**inputs, max_new_tokens=int(max_new), do_sample=False, pad_token_id=0)
    return logits, sequences

results = {
    "peft-ia3": logits_and_generation(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), ia3_dir).eval()),
    "merged": logits_and_generation(AutoModelForCausalLM.from_pretrained(merged_dir).eval()),
}
assert "neumuter_interv" not in sys.modules and "pyvene" not in sys.modules, "a plain loader imported our code"
torch.save(results, out_file)
"""

# Plain pyvene: IntervenableModel.load imports our intervention class and torch.load-s intkey_*.bin.
PYVENE_LOADER = """
import sys, torch, pyvene as pv
from transformers import AutoModelForCausalLM
base_dir, package_dir, inputs_file, out_file, max_new = sys.argv[1:]
inputs = torch.load(inputs_file)
unlearned = pv.IntervenableModel.load(package_dir, AutoModelForCausalLM.from_pretrained(base_dir).eval())
with torch.no_grad():
    _, outputs = unlearned(dict(inputs), unit_locations=None)
    _, sequences = unlearned.generate(dict(inputs), unit_locations=None, intervene_on_prompt=True,
                                      max_new_tokens=int(max_new), do_sample=False, pad_token_id=0)
torch.save({"pyvene": (outputs.logits, sequences)}, out_file)
"""


@pytest.mark.parametrize("architecture", ["gpt_neo", "llama"])
def test_every_format_reproduces_the_composed_frozen_intervention_in_a_fresh_process(architecture, two_runs, tmp_path):
    model, base_dir, runs = two_runs(architecture)
    for export_format in ("pyvene", "peft-ia3", "merged"):
        assert main(["export", *map(str, runs), "--to", export_format, "--out", str(tmp_path / export_format)]) == 0
    inputs = prompt_inputs(model.config.vocab_size)
    torch.save(inputs, tmp_path / "inputs.pt")
    frozen = freeze(model, compose([read_run(run).selection for run in runs]))
    with torch.no_grad():
        expected_logits = intervened_logits(frozen, **inputs)
        expected_sequences = intervened_generate(frozen, **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                                 pad_token_id=0)

    run_python(PLAIN_LOADERS, base_dir, tmp_path / "peft-ia3", tmp_path / "merged", tmp_path / "inputs.pt",
               tmp_path / "plain.pt", MAX_NEW_TOKENS)
    run_python(PYVENE_LOADER, base_dir, tmp_path / "pyvene", tmp_path / "inputs.pt", tmp_path / "pyvene.pt",
               MAX_NEW_TOKENS)

    results = {**torch.load(tmp_path / "plain.pt"), **torch.load(tmp_path / "pyvene.pt")}
    assert set(results) == {"pyvene", "peft-ia3", "merged"}
    for export_format, (logits, sequences) in results.items():
        torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0, msg=f"{export_format} logits")
        assert torch.equal(sequences, expected_sequences), export_format
    assert not torch.allclose(expected_logits, model(**inputs).logits, atol=1e-3), "the mask must change the logits"


def test_pyvene_package_holds_safetensors_pickles_selection_and_card(two_runs, tmp_path):
    model, base_dir, runs = two_runs("gpt_neo")
    out = tmp_path / "package"
    assert main(["export", *map(str, runs), "--to", "pyvene", "--out", str(out)]) == 0

    names = {path.name for path in out.iterdir()}
    assert {"config.json", "interventions.safetensors", "selection.json", "README.md"} <= names
    assert {name for name in names if name.endswith(".bin")} == {
        "intkey_layer_0_comp_mlp_activation_unit_pos_nunit_1#0.bin",
        "intkey_layer_1_comp_mlp_activation_unit_pos_nunit_1#0.bin",
    }
    composed = compose([read_run(run).selection for run in runs])
    assert Selection.load(out / "selection.json").to_dict() == composed.to_dict()
    for pickle in out.glob("*.bin"):
        assert all(isinstance(t, torch.Tensor) for t in torch.load(pickle, weights_only=True).values())

    card = (out / "README.md").read_text()
    assert f"base_model: {base_dir}" in card
    assert "0-based 0-1 (paper blocks 1-2)" in card
    assert f"Neurons muted: {composed.neurons_muted} of {composed.neurons_total}" in card
    assert read_run(runs[0]).config["forget_sha256"] in card and "| 3 |" in card
    assert "| MA | 0.93 | 0.12 |" in card
    assert "Composed of 2 runs" in card
    assert f'load(snapshot_download("{out}"), model)' in card


def test_pyvene_package_loads_safely_from_a_hub_snapshot_layout(two_runs, tmp_path, make_model):
    """A pushed package, as ``snapshot_download`` lays it out in the HF cache (files are symlinks to blobs)."""
    model, _, runs = two_runs("gpt_neo")
    package = tmp_path / "package"
    assert main(["export", *map(str, runs), "--to", "pyvene", "--out", str(package)]) == 0
    repo = tmp_path / "hf-cache" / "models--someone--unlearned"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    for file in package.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(file.read_bytes())
        link = repo / "snapshots" / revision / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))

    snapshot = snapshot_download("someone/unlearned", cache_dir=tmp_path / "hf-cache", local_files_only=True)
    unlearned = load(snapshot, make_model("gpt_neo"))

    assert not any(intervention.training for intervention in unlearned.interventions.values())
    inputs = prompt_inputs(model.config.vocab_size)
    expected = intervened_logits(freeze(model, compose([read_run(run).selection for run in runs])), **inputs)
    torch.testing.assert_close(intervened_logits(unlearned, **inputs), expected, atol=1e-6, rtol=0)


def test_push_creates_the_repo_and_uploads_exactly_the_written_folder(two_runs, tmp_path):
    _, _, runs = two_runs("gpt_neo")
    out = tmp_path / "adapter"
    uploaded = {}

    def record_upload(**kwargs):
        uploaded["files"] = sorted(path.name for path in Path(kwargs["folder_path"]).iterdir())
        return mock.Mock(commit_url="https://huggingface.co/someone/unlearned/commit/1")

    with mock.patch("neumuter_interv.export.hub.HfApi") as hf_api:
        hf_api.return_value.upload_folder.side_effect = record_upload
        code = main(["export", *map(str, runs), "--to", "peft-ia3", "--out", str(out),
                     "--push", "someone/unlearned", "--private"])

    assert code == 0
    api = hf_api.return_value
    api.create_repo.assert_called_once_with("someone/unlearned", private=True, exist_ok=True, repo_type="model")
    api.upload_folder.assert_called_once_with(repo_id="someone/unlearned", folder_path=str(out), repo_type="model",
                                              commit_message="NeuMuter export")
    assert uploaded["files"] == sorted(path.name for path in out.iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "selection.json"} <= set(uploaded["files"])
    assert 'PeftModel.from_pretrained(base, "someone/unlearned")' in (out / "README.md").read_text()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == read_run(runs[0]).base_model


class ConnectError(Exception):
    """Stands for the HTTP client's connection error (httpx's or requests', by huggingface_hub's version)."""


def test_an_unreachable_hub_is_one_line_that_says_the_export_is_complete(two_runs, tmp_path, capsys):
    _, _, runs = two_runs("gpt_neo")
    out = tmp_path / "adapter"
    with mock.patch("neumuter_interv.export.hub.HfApi") as hf_api:
        hf_api.return_value.create_repo.side_effect = ConnectError("[Errno -3] Temporary failure in name resolution")
        code = main(["export", *map(str, runs), "--to", "peft-ia3", "--out", str(out), "--push", "someone/unlearned"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"the export is complete in {out}, but pushing it to someone/unlearned failed" in err[0]
    assert "name resolution" in err[0]
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("export_format", ["peft-ia3", "merged"])
def test_exporting_leaves_the_in_memory_model_unchanged(export_format, make_model, tokenizer, tmp_path):
    model = make_model("llama")
    inputs = prompt_inputs(model.config.vocab_size)
    before = model(**inputs).logits
    job = ExportJob(model, tokenizer, random_selection(model, seed=3, layers=[0, 1]), "base")
    write_export(job, export_format, tmp_path / "out", runs=[], location="here")
    torch.testing.assert_close(model(**inputs).logits, before, atol=0, rtol=0)
    assert type(model.model.layers[0].mlp.down_proj) is torch.nn.Linear


def test_ia3_refuses_a_projection_peft_cannot_wrap_and_writes_nothing(make_model, tokenizer, tmp_path):
    model = make_model("gpt_neo")
    model.transformer.h[0].mlp.c_proj = torch.nn.Bilinear(64, 64, 32)
    job = ExportJob(model, tokenizer, random_selection(model, seed=4, layers=[0]), "base")
    with pytest.raises(NeuMuterError, match="PEFT IA3 cannot wrap .* layer 0 .*Bilinear"):
        write_export(job, "peft-ia3", tmp_path / "out", runs=[], location="here")
    assert not (tmp_path / "out").exists()


def test_a_mask_for_another_model_shape_is_refused(make_model, tokenizer):
    selection = random_selection(make_model("gpt_neo"), seed=5, layers=[0])
    selection.ffn_width = 128
    with pytest.raises(NeuMuterError, match="FFN width 128"):
        ExportJob(make_model("gpt_neo"), tokenizer, selection, "base")


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_cli_refuses_a_missing_run_directory_in_one_line_and_writes_nothing(tmp_path, capsys):
    code = main(["export", str(tmp_path / "no-such-run"), "--to", "pyvene", "--out", str(tmp_path / "out")])
    assert code != 0
    line = one_line_error(capsys)
    assert "no-such-run" in line and "does not exist" in line
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_unknown_format_in_one_line_and_writes_nothing(two_runs, tmp_path, capsys):
    _, _, runs = two_runs("gpt_neo")
    code = main(["export", str(runs[0]), "--to", "onnx", "--out", str(tmp_path / "out")])
    assert code != 0
    assert "unknown export format 'onnx'" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_cli_keeps_a_non_empty_output_unless_overwrite(two_runs, tmp_path, capsys):
    _, _, runs = two_runs("gpt_neo")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(runs[0]), "--to", "merged", "--out", str(out)]) != 0
    assert "--overwrite" in one_line_error(capsys)
    assert [path.name for path in out.iterdir()] == ["keep.txt"]

    assert main(["export", str(runs[0]), "--to", "merged", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_export_refuses_a_model_other_than_the_one_the_run_was_made_on(tmp_path, saved_base, make_model, tokenizer,
                                                                      monkeypatch, capsys):
    from neumuter_interv.loading import model_fingerprint

    model, base_dir = saved_base("gpt_neo")
    run = write_run(tmp_path / "run", random_selection(model, seed=1, layers=[0]), base_dir)
    config = json.loads((run / "config.json").read_text())
    config["model_fingerprint"] = model_fingerprint(model)
    (run / "config.json").write_text(json.dumps(config))
    other = tmp_path / "elsewhere" / f"base-{'gpt_neo'}"  # same name and architecture, other weights
    make_model("gpt_neo", seed=7).save_pretrained(other)
    tokenizer.save_pretrained(other)
    monkeypatch.chdir(tmp_path / "elsewhere")
    code = main(["export", str(run), "--to", "merged", "--model", "base-gpt_neo", "--out", str(tmp_path / "bad")])
    assert code == 2 and "other weights" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    for dtype in ("float32", "bfloat16"):  # the right model, at either precision
        assert main(["export", str(run), "--to", "merged", "--dtype", dtype, "--out", str(tmp_path / dtype)]) == 0
