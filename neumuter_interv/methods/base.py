"""The one small interface every unlearning method implements, NeuMuter included.

The comparison harness only ever calls ``method.unlearn(model, tokenizer, forget_texts, retain_texts)``
and evaluates ``result.model`` through ``LanguageModel``, so a weight edit (GA, TA, ...) and an
intervention (NeuMuter, GRUN-like, ...) are treated alike.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import psutil
import torch


@dataclass
class UnlearningRecord:
    """What an unlearning run cost: wall time, peak memory, trainable share of parameters, steps."""

    method: str
    seconds: float = 0.0
    peak_memory_bytes: int = 0
    memory_kind: str = "cpu-rss"  # "cuda-allocated" on a GPU
    trainable_parameters: int = 0
    total_parameters: int = 0
    steps: int = 0
    uses_retain_set: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "trainable_fraction": self.trainable_fraction}


@dataclass
class UnlearningResult:
    """An unlearned model (a ``PreTrainedModel`` or a ``pyvene.IntervenableModel``) and its record."""

    model: Any
    record: UnlearningRecord


@dataclass(frozen=True)
class MatchedTo:
    """A setting taken from another method's run in the same comparison: ``record.extra[key]`` of the method
    named ``method`` (the attribution baseline mutes NeuMuter's share of neurons, in NeuMuter's layers)."""

    method: str
    key: str

    def __str__(self) -> str:
        return f"{self.method}'s {self.key}"


class UnlearningMethod(ABC):
    """An unlearning method with its settings fixed at construction (``self.settings``, a dataclass)."""

    name: str = "method"
    needs_retain: bool = False  # GD and KL train on the retain set; NeuMuter's point is that it does not
    settings: Any = None

    @classmethod
    def from_overrides(cls, settings_class: type, overrides: dict) -> UnlearningMethod:
        """The method with ``settings_class(**overrides)`` (``methods.registry.make_method``)."""
        return cls(settings_class(**overrides))

    @abstractmethod
    def unlearn(self, model, tokenizer, forget_texts: Sequence[str], retain_texts: Sequence[str] | None = None) -> UnlearningResult:
        """Unlearn ``forget_texts`` from ``model``; may modify ``model`` in place (callers pass a copy)."""

    def on_world(self, world) -> UnlearningMethod:
        """This method bound to ``world`` (``worlds.World``), as the demo and ``compare`` run it: by default its
        settings' ``stop_when`` becomes the world's Eq. 17 criterion, where it has one. A method that uses more
        of a world (neighbours, reference texts) overrides this."""
        if self.settings is not None and "stop_when" in {f.name for f in fields(self.settings)}:
            self.settings = replace(self.settings, stop_when=world.criterion)
        return self

    def settings_dict(self) -> dict:
        """The settings as JSON-able values (the stop criterion is the world's, not a setting)."""
        return {f.name: getattr(self.settings, f.name) for f in fields(self.settings) if f.name != "stop_when"}

    def budget(self) -> str | None:
        """How long the method may run, in words, where its settings do not say it plainly (None)."""
        return None


@contextmanager
def measured(record: UnlearningRecord, device: torch.device | str = "cpu"):
    """Fill ``record.seconds`` and ``record.peak_memory_bytes`` for the enclosed block, also when it raises.

    On CUDA the peak is ``torch.cuda.max_memory_allocated``; on the CPU it is the peak growth of the
    process's resident memory, sampled every 20 ms.
    """
    device = torch.device(device)
    probe = _CudaPeak(device) if device.type == "cuda" else _ResidentPeak()
    start = time.perf_counter()
    try:
        yield record
    finally:
        record.peak_memory_bytes = probe.stop()
        record.memory_kind = probe.kind
        record.seconds = time.perf_counter() - start


class _CudaPeak:
    kind = "cuda-allocated"

    def __init__(self, device: torch.device):
        self.device = device
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        self.base = torch.cuda.memory_allocated(device)

    def stop(self) -> int:
        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device) - self.base)


class _ResidentPeak:
    """The peak growth of the process's resident memory over the block: the kernel's high-water mark
    (``VmHWM``, reset at the start through ``/proc/self/clear_refs``) where Linux offers it, exact; else the
    resident size sampled every 20 ms, which can miss a short peak. The mark is the process's: a block measured
    inside another resets it, and the outer block then keeps only its samples from before the inner one."""

    kind = "cpu-rss"
    interval = 0.02  # seconds between samples

    def __init__(self):
        self.process = psutil.Process()
        self.exact = _reset_high_water_mark()
        self.base = self.peak = self.process.memory_info().rss
        self.done = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self.done.set()
        self.sampler.join()
        peak = max(self.peak, self.process.memory_info().rss)
        if self.exact:
            peak = max(peak, _high_water_mark())
        return int(peak - self.base)


def _reset_high_water_mark() -> bool:
    """Reset this process's peak resident size to its current one (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _high_water_mark() > 0
    except OSError:
        return False


def _high_water_mark() -> int:
    """This process's peak resident size since the last reset, in bytes (0 where the kernel does not say)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
