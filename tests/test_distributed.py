"""Data-parallel localization: 2 processes (gloo, CPU) give the single-process result for the same global
batch, the gates stay identical in every process, and ``unlearn --num-processes 2`` writes one run."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import transformers
from conftest import FORGET, RETAIN
from safetensors.torch import load_file

from neumuter_interv.cli import main
from neumuter_interv.methods.neumuter import NeuMuterConfig, localize

# one process of the group: localize, then write the gates (every rank its own file)
RANK_SCRIPT = """
import sys, torch, transformers
from safetensors.torch import save_file
from neumuter_interv import distributed
from neumuter_interv.methods.neumuter import NeuMuterConfig, localize
model_dir, out, gate_noise = sys.argv[1:4]
distributed.init_from_environment(torch.device("cpu"))
tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
forget = [tokenizer(t)["input_ids"] for t in sys.argv[4].split("|")]
neighbours = [tokenizer(t)["input_ids"] for t in sys.argv[5].split("|")]
config = NeuMuterConfig(epochs=3, batch_size=3, learning_rate=0.5, kl_weight=0.3, sparsity_weight=1.0,
                        gate_noise=gate_noise, progress=False, device="cpu")
_, result = localize(model, forget, neighbours, config, tokenizer.pad_token_id, log=lambda s: None)
rank = distributed.rank_and_size()[0]
save_file({str(k): v for k, v in result.log_alpha.items()}, f"{out}/gates-{rank}.safetensors")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("gate_noise", ["shared", "official"])
def test_two_processes_train_the_gates_of_one_process_on_the_same_global_batch(memorized_dir, tmp_path, gate_noise):
    forget, neighbours = FORGET[:3] + RETAIN[:2], RETAIN[2:] + FORGET[3:] + RETAIN[:2]  # 5 samples: batches of 3 and 2
    environment = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                   "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(memorized_dir), str(tmp_path), gate_noise,
                                   "|".join(forget), "|".join(neighbours)], env={**environment, "RANK": str(rank)})
                 for rank in range(2)]
    assert [process.wait(timeout=300) for process in processes] == [0, 0]

    tokenizer = transformers.AutoTokenizer.from_pretrained(memorized_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(memorized_dir).eval()
    config = NeuMuterConfig(epochs=3, batch_size=3, learning_rate=0.5, kl_weight=0.3, sparsity_weight=1.0,
                            gate_noise=gate_noise, progress=False, device="cpu")
    _, single = localize(model, [tokenizer(t)["input_ids"] for t in forget],
                         [tokenizer(t)["input_ids"] for t in neighbours], config, tokenizer.pad_token_id, log=lambda s: None)
    gates = [load_file(tmp_path / f"gates-{rank}.safetensors") for rank in range(2)]
    for layer, expected in single.log_alpha.items():
        assert torch.equal(gates[0][str(layer)], gates[1][str(layer)])  # the processes never drift apart
        torch.testing.assert_close(gates[0][str(layer)], expected, rtol=0, atol=1e-5)
        assert not torch.equal(expected, torch.full_like(expected, expected[0]))  # the gates did train


def test_unlearn_with_two_processes_writes_one_run_with_the_single_process_mask(memorized_dir, tmp_path):
    forget = tmp_path / "forget.txt"
    forget.write_text("\n".join(FORGET) + "\n")
    common = ["unlearn", "--model", str(memorized_dir), "--forget", str(forget), "--epochs", "3", "--batch-size", "4",
              "--kl-weight", "0.3", "--sparsity-weight", "0", "--selection", "fraction", "--fraction", "0.02",
              "--neighbour-source", "random", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "single")]) == 0
    result = subprocess.run([sys.executable, "-m", "neumuter_interv.cli", *common, "--num-processes", "2",
                             "--out", str(tmp_path / "parallel")], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("wrote ") == 1
    single, parallel = (json.loads((tmp_path / name / "selection.json").read_text()) for name in ("single", "parallel"))
    assert parallel["layers"] == single["layers"] or _close(parallel["layers"], single["layers"])
    assert json.loads((tmp_path / "parallel" / "config.json").read_text())["processes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forget.txt", "parallel", "single"]


def test_a_refusal_in_the_launched_processes_is_one_line_with_exit_code_2(memorized_dir, tmp_path):
    forget = tmp_path / "one-token.txt"
    forget.write_text("alice smith was born\nalice\n")  # refused by the training, after the launch
    result = subprocess.run([sys.executable, "-m", "neumuter_interv.cli", "unlearn", "--model", str(memorized_dir),
                             "--forget", str(forget), "--num-processes", "2", "--no-progress",
                             "--out", str(tmp_path / "run")], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "has fewer than 2 tokens" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one-token.txt"]


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k]["indices"] == b[k]["indices"] and
                                        torch.allclose(torch.tensor(a[k]["scales"]), torch.tensor(b[k]["scales"]), atol=1e-5)
                                        for k in a)
