"""The paper's stopping rule (Appendix B.4, Eq. 17): unlearning is done when the forget samples'
MA and EL10 are at or under their averages on held-out text the model never saw.

One ``ForgettingCriterion`` serves every method: NeuMuter checks it on its frozen mask between
epochs, the fine-tuning baselines between steps (``stop_when=criterion``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .lm import as_language_model, autocast
from .metrics import extraction_likelihood, forgotten_fraction, memorization_accuracy


class ForgettingCriterion:
    """``criterion(model) -> bool``: have at least ``target_fraction`` of the forget samples met Eq. 17?

    MA (one forward) is checked first; the costly EL_n only when MA alone could pass. ``last`` keeps
    the numbers of the latest check (``forgotten_fraction``, ``ma``, ``el``).
    """

    def __init__(self, tokenizer, forget_texts: Sequence[str], thresholds: Mapping[str, float],
                 target_fraction: float = 1.0, n: int = 10, el_prefix_stride: int = 1, batch_size: int = 32,
                 dtype: str = "float32"):
        self.tokenizer, self.forget_texts, self.thresholds = tokenizer, list(forget_texts), dict(thresholds)
        self.target_fraction, self.n, self.el_prefix_stride, self.batch_size = target_fraction, n, el_prefix_stride, batch_size
        self.dtype = dtype  # the compute dtype of the checks (``lm.autocast``): the evaluation's
        self.last: dict = {}

    def __call__(self, model) -> bool:
        with autocast(self.dtype, as_language_model(model).device):
            return self._check(model)

    def necessary(self, model) -> bool:
        """The MA half of Eq. 17 alone (one teacher-forced forward): where it fails, the criterion does too.
        A readout that searches many masks checks this first (``readout.MaskReadout``)."""
        with autocast(self.dtype, as_language_model(model).device):
            return self._ma_holds(model)[0]

    def _ma_holds(self, model) -> tuple[bool, torch.Tensor]:
        ma = memorization_accuracy(model, self.tokenizer, self.forget_texts, batch_size=self.batch_size)
        ma_ok = float((ma <= self.thresholds["ma"]).float().mean())
        self.last = {"forgotten_fraction": 0.0, "ma_passing_fraction": ma_ok, "forget_ma": float(ma.mean())}
        return ma_ok >= self.target_fraction, ma

    def _check(self, model) -> bool:
        holds, ma = self._ma_holds(model)
        if not holds:
            return False
        el = extraction_likelihood(model, self.tokenizer, self.forget_texts, self.n,
                                   batch_size=self.batch_size, prefix_stride=self.el_prefix_stride)
        fraction = forgotten_fraction(ma, el, self.thresholds, self.n)
        self.last.update(forgotten_fraction=fraction, forget_el=float(el.mean()))
        return fraction >= self.target_fraction
