"""Data-parallel localization over processes (``torch.distributed``: gloo on CPUs, NCCL on GPUs).

Every process holds the whole model and the whole forget set, and computes its share of each batch:
rows ``rank, rank + size, ...`` of the forget samples, with their neighbours. The data terms of Eq. 13 are
sums over the batch's tokens divided by the batch's token counts, which every process knows, so each
process's share of a term is its own sum over the global count; the gradients of the gates, summed
over processes (one all-reduce of a few thousand floats per step), are then those of the single-process
step on the same global batch. The L0 term is counted once. Every process draws the same gate noise
(same generators), so the gates stay identical everywhere; only rank 0 writes or prints.

Launch with ``neumuter unlearn --num-processes N`` (``launch``: N processes on this machine, a refusal
in one line from one of them), with ``torchrun``, or with ``accelerate launch``: each sets
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``, and ``init_from_environment`` joins the group they
describe.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import NeuMuterError


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_and_size()[0] == 0


LAUNCH_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")  # what a process group needs besides WORLD_SIZE


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1); a launch environment
    that is not one (``WORLD_SIZE=abc``, or ``2`` without ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) is a
    ``NeuMuterError`` naming the variable."""
    size = _environment_integer("WORLD_SIZE", "1", minimum=1)
    if size == 1:
        return False
    missing = [name for name in LAUNCH_VARIABLES if not os.environ.get(name)]
    if missing:
        raise NeuMuterError(f"WORLD_SIZE={size} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                            "not: start several processes with --num-processes N, torchrun or accelerate launch, or "
                            "unset WORLD_SIZE")
    rank = _environment_integer("RANK", "0", minimum=0)
    _environment_integer("MASTER_PORT", "0", minimum=1)
    if rank >= size:
        raise NeuMuterError(f"RANK={rank} is not below WORLD_SIZE={size}")
    return True


def _environment_integer(name: str, default: str, minimum: int) -> int:
    value = os.environ.get(name, default)
    if not value.strip().isascii() or not value.strip().isdigit() or int(value) < minimum:
        raise NeuMuterError(f"the environment variable {name}={value!r} is not an integer >= {minimum} "
                            "(a launcher sets it; unset it to run one process)")
    return int(value)


def init_from_environment(device: torch.device) -> bool:
    """Join the process group that ``WORLD_SIZE``/``RANK`` describe (a launcher set them); False when there is
    none. On GPUs each process takes the device ``LOCAL_RANK``."""
    if not launched() or dist.is_initialized():
        return dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def shard(indices: Sequence[int]) -> list[int]:
    """This process's rows of a batch."""
    rank, size = rank_and_size()
    return list(indices)[rank::size]


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over processes, in place (itself when there is one process)."""
    if rank_and_size()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def launch(num_processes: int, argv: Sequence[str]) -> int:
    """Run ``neumuter <argv>`` in ``num_processes`` processes on this machine, one process group (gloo or
    NCCL, ``init_from_environment``). Rank 0 writes to this terminal; the others' stderr goes to a file, shown
    only where rank 0 did not fail itself (one line). When one process fails, the others are stopped (they
    would wait for it forever) and its exit code is returned."""
    with socket.socket() as probe:  # a free port for the group's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "neumuter_interv.cli", *argv]
    with tempfile.TemporaryDirectory(prefix="neumuter-ranks-") as logs:
        processes, error_files = [], []
        for rank in range(num_processes):
            env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(num_processes),
                   "LOCAL_WORLD_SIZE": str(num_processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            error_file = open(Path(logs) / f"rank-{rank}.err", "w+") if rank else None  # noqa: SIM115
            error_files.append(error_file)
            processes.append(subprocess.Popen(command, env=env, stderr=error_file))
        try:
            failed = _wait_for_all(processes)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            for error_file in error_files[1:]:
                error_file.close()
        if failed is None:
            return 0
        if failed != 0:  # rank 0 did not say why: show the failing rank's own line
            reason = (Path(logs) / f"rank-{failed}.err").read_text().strip().splitlines()
            print(reason[-1] if reason else f"neumuter: process {failed} of {num_processes} failed "
                  f"(exit code {processes[failed].returncode})", file=sys.stderr)
        return processes[failed].returncode or 1


def _wait_for_all(processes: list[subprocess.Popen]) -> int | None:
    """The rank of the first process to fail (rank 0 preferred when several have), None when all succeed."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            time.sleep(0.5)  # a refusal ends every rank at about the same time: let rank 0 speak if it will
            codes = [process.poll() for process in processes]
            return 0 if codes[0] not in (None, 0) else failed[0]
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)
