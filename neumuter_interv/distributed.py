"""Data-parallel localization over processes (``torch.distributed``: gloo on CPUs, NCCL on GPUs).

Every process holds the whole model and the whole forget set, and computes its share of each batch:
rows ``rank, rank + size, ...`` of the forget samples, with their neighbours. The data terms of Eq. 13 are
sums over the batch's tokens divided by the batch's token counts, which every process knows, so each
process's share of a term is its own sum over the global count; the gradients of the gates, summed
over processes (one all-reduce of a few thousand floats per step), are then those of the single-process
step on the same global batch. The L0 term is counted once. Every process draws the same gate noise
(same generators), so the gates stay identical everywhere; only rank 0 writes or prints.

Launch with ``neumuter unlearn --num-processes N`` (which starts ``torch.distributed.run``), with
``torchrun``, or with ``accelerate launch``: each sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``,
and ``init_from_environment`` joins the group they describe.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_and_size()[0] == 0


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


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
    """Run ``neumuter <argv>`` in ``num_processes`` processes on this machine (``torch.distributed.run``)."""
    with socket.socket() as probe:  # a free port for the group's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={num_processes}",
               "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "neumuter_interv.cli", *argv]
    return subprocess.run(command).returncode
