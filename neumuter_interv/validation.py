"""The one validation of numeric settings and of neuron masks, shared by every command, config and loader.

Settings (``check_number``): every learning rate, weight, threshold, ratio and budget is checked where its
config is built, so ``unlearn --lr nan``, ``--threshold=-5`` or ``compare --max-epochs=-3`` end with one
line naming the setting and its valid range, before a model is loaded.

Masks (``check_neuron_mask``): a deployed mask is, per layer, distinct integer neuron indices inside the
FFN width and one finite scale in [0, 1] per index (a scale is a trained gate value, or a product of
them when runs are composed). ``selection.json`` files, ``FrozenScaling`` buffers read from a saved
intervention and masks built in Python all pass through it, so a NaN, a repeat or a neuron that does not
exist is refused before it reaches a model, an adapter or a merged checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import NeuMuterError


def check_number(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None, integer: bool = False) -> None:
    """Refuse a value that is not a finite number (an integer when ``integer``) within the bounds:
    ``minimum``/``maximum`` inclusive, ``above`` exclusive."""
    kinds = (int,) if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds)
            or (isinstance(value, float) and not math.isfinite(value))):
        kind = "an integer" if integer else "a finite number"
        raise NeuMuterError(f"{name} must be {kind}, got {_shown(value)}")
    for bound, fails, words in ((minimum, lambda b: value < b, "at least"), (maximum, lambda b: value > b, "at most"),
                                (above, lambda b: value <= b, "greater than")):
        if bound is not None and fails(bound):  # int against float compares exactly, however large the int
            raise NeuMuterError(f"{name} must be {words} {bound:g}, got {_shown(value)}")
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        raise NeuMuterError(f"{name} must be at most {MAX_INTEGER:g} in size, got {_shown(value)}")


MAX_INTEGER = 2**53  # beyond this an integer setting is not a count anyone means (and floats lose it)


def _shown(value) -> str:
    """A value for a message: a 400-digit integer shows its first digits and its length."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"{str(value)[:12]}... ({len(str(value))} digits)"
    return text if len(text) <= 60 else text[:57] + "..."


def check_neuron_mask(indices, scales, width: int, where: str) -> None:
    """Refuse a mask that is not distinct in-range integer indices with one finite scale in [0, 1] each.

    ``indices`` and ``scales`` are lists or 1-D tensors; ``where`` names the mask in the message
    (``"selection.json layer 3"``).
    """
    if isinstance(indices, torch.Tensor):
        if indices.dim() != 1 or indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
            raise NeuMuterError(f"{where}: neuron indices must be a 1-D integer tensor, got {indices.dtype} "
                                f"of shape {tuple(indices.shape)}")
        indices = indices.tolist()
    if isinstance(scales, torch.Tensor):
        if scales.dim() != 1:
            raise NeuMuterError(f"{where}: neuron scales must be 1-D, got shape {tuple(scales.shape)}")
        scales = scales.tolist()
    if not isinstance(indices, Sequence) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise NeuMuterError(f"{where}: neuron indices must be a list of integers")
    if not isinstance(scales, Sequence) or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scales):
        raise NeuMuterError(f"{where}: neuron scales must be a list of numbers")
    if len(indices) != len(scales):
        raise NeuMuterError(f"{where}: {len(indices)} neuron indices but {len(scales)} scales")
    outside = [i for i in indices if not 0 <= i < width]
    if outside:
        raise NeuMuterError(f"{where}: neuron index {outside[0]} is outside the FFN width {width} (0-{width - 1})")
    if len(set(indices)) != len(indices):
        repeated = next(i for i in indices if indices.count(i) > 1)
        raise NeuMuterError(f"{where}: neuron {repeated} is listed twice")
    bad = [s for s in scales if not 0.0 <= s <= 1.0]  # NaN and infinities too; a 400-digit int compares exactly
    if bad:
        raise NeuMuterError(f"{where}: scale {bad[0]!r} is not a finite number in [0, 1]")
