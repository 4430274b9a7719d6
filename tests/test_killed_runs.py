"""A run killed with SIGKILL (no cleanup code of its own can run) leaves no output that a loader would accept,
and the next run to the same target succeeds and removes what the killed one left."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import FORGET

from neumuter_interv.cache import build_cache_entry
from neumuter_interv.cli import main
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.export.runs import read_run

# ``save`` kills the process from inside the save step: after the run's JSON files and pyvene's config are
# staged, at the moment the weights would be written.
LAUNCHER = """
import os, signal, sys
if sys.argv[1] == "save":
    import neumuter_interv.serialization as serialization
    serialization.save_file = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
from neumuter_interv.cli import main
sys.exit(main(sys.argv[2:]))
"""


def unlearn_args(model, forget, out, epochs):
    return ["unlearn", "--model", str(model), "--forget", str(forget), "--out", str(out), "--epochs", str(epochs),
            "--kl-weight", "0.3", "--sparsity-weight", "0", "--selection", "fraction", "--fraction", "0.02",
            "--neighbour-source", "random", "--no-progress"]


def killed_during(stage, model, forget, out, rng) -> None:
    epochs = 3 if stage == "save" else 2000
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, stage, *unlearn_args(model, forget, out, epochs)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if stage == "training":
        for line in process.stdout:  # training has started once the gates are attached
            if line.startswith("NeuMuter: gating"):
                break
        time.sleep(rng.uniform(0.0, 1.5))
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stages", [("training", "training"), ("save",)])
def test_a_killed_run_leaves_nothing_loadable_and_the_next_run_succeeds(stages, memorized_dir, tmp_path):
    forget = tmp_path / "forget.txt"
    forget.write_text("\n".join(FORGET) + "\n")
    out = tmp_path / "run"
    rng = random.Random(len(stages))
    for stage in stages:
        killed_during(stage, memorized_dir, forget, out, rng)
        assert not out.exists()
        with pytest.raises(NeuMuterError, match="does not exist"):
            read_run(out)
    if stages == ("save",):
        assert [p.name.split("-")[0] for p in tmp_path.glob(".run.partial-*")] == [".run.partial"]

    assert main(unlearn_args(memorized_dir, forget, out, 3)) == 0
    assert json.loads((out / "config.json").read_text())["forget_samples"] == len(FORGET)
    assert read_run(out).selection.neurons_muted > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forget.txt", "run"]  # the killed runs' staging is gone


CACHE_BUILDER = """
import os, signal, sys
from pathlib import Path
from neumuter_interv.cache import build_cache_entry

def build(staging):
    (staging / "weights.bin").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)

build_cache_entry(Path(sys.argv[1]), "config.json", build)
"""


def test_a_killed_cache_build_leaves_no_entry_and_the_next_build_removes_its_staging(tmp_path):
    """Cached worlds and dequantized checkpoints are built through ``cache.build_cache_entry``."""
    target = tmp_path / "entry"
    process = subprocess.run([sys.executable, "-c", CACHE_BUILDER, str(target)], timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert not target.exists() and [p.name for p in tmp_path.glob(".entry-*")]  # the killed build's staging

    def build(staging):
        (staging / "config.json").write_text("{}")

    assert build_cache_entry(target, "config.json", build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "entry.lock"]  # staging gone
    assert sorted(p.name for p in target.iterdir()) == [".cache-manifest.json", "config.json"]
    assert not build_cache_entry(target, "config.json", lambda _: pytest.fail("built twice"))


def test_a_failed_cache_build_leaves_nothing_and_raises(tmp_path):
    def failing(staging):
        (staging / "weights.bin").write_bytes(b"half")
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        build_cache_entry(tmp_path / "entry", "config.json", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.lock"]
