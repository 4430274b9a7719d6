"""Hard-concrete gates (Louizos et al., 2018) as NeuMuter uses them: Eq. 10-12 of the paper.

One home for the math. Each FFN neuron i of layer l has a location parameter ``log_alpha``; its gate
m lies in [0, 1]:

* training (Eq. 10-11): u ~ U(eps, 1 - eps), s = sigmoid((logit(u) + log_alpha) / beta),
  m = clamp(s * (zeta - gamma) + gamma, 0, 1)
* evaluation (deterministic, the official code): s = sigmoid(log_alpha), same stretch and clamp
* L0 term (Eq. 12, as the official code computes it): the expected fraction of CLOSED gates,
  mean(1 - sigmoid(log_alpha - beta * log(-gamma / zeta))).

Defaults follow the official code: gamma = -0.1, zeta = 1.1, beta = 1/3 (the paper's B.4 says 0.3),
and ``log_alpha = ln 11`` at init, the smallest value whose deterministic gate is exactly 1, so the
model is unchanged before training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import NeuMuterError

UNIFORM_EPS = 1e-4  # the official code samples u in [1e-4, 1 - 1e-4]


@dataclass(frozen=True)
class HardConcreteParams:
    """Constants of the stretched, clamped concrete distribution."""

    beta: float = 1.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1

    def __post_init__(self):
        if not self.beta > 0:
            raise NeuMuterError(f"hard-concrete temperature beta must be > 0, got {self.beta}")
        if not (self.gamma < 0 < 1 < self.zeta):
            raise NeuMuterError(f"hard-concrete stretch needs gamma < 0 and zeta > 1, got {self.gamma}, {self.zeta}")

    def initial_log_alpha(self, open_probability: float = 1.0) -> float:
        """log_alpha whose deterministic gate equals ``open_probability`` (official ``mask_p``).

        With ``open_probability = 1`` the gate is exactly 1: sigmoid(log_alpha) = (1 - gamma) / (zeta - gamma).
        """
        if not 0.0 < open_probability <= 1.0:
            raise NeuMuterError(f"initial gate value must lie in (0, 1], got {open_probability}")
        p = (open_probability - self.gamma) / (self.zeta - self.gamma)
        return math.log(p / (1.0 - p))


def stretch_and_clamp(s: torch.Tensor, params: HardConcreteParams) -> torch.Tensor:
    """Eq. 11: map s in (0, 1) to a gate in [0, 1] with point masses at 0 and 1."""
    return torch.clamp(s * (params.zeta - params.gamma) + params.gamma, 0.0, 1.0)


def sample_gate(log_alpha: torch.Tensor, params: HardConcreteParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 10-11: a reparameterised stochastic gate, differentiable in ``log_alpha``."""
    u = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device, dtype=log_alpha.dtype)
    u = u * (1.0 - 2.0 * UNIFORM_EPS) + UNIFORM_EPS
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / params.beta)
    return stretch_and_clamp(s, params)


def deterministic_gate(log_alpha: torch.Tensor, params: HardConcreteParams) -> torch.Tensor:
    """The gate used at evaluation and frozen for deployment (official code, Eq. 14's m)."""
    return stretch_and_clamp(torch.sigmoid(log_alpha), params)


def closed_probability(log_alpha: torch.Tensor, params: HardConcreteParams) -> torch.Tensor:
    """Per-neuron probability that the gate is exactly 0: 1 - P(m > 0)."""
    return 1.0 - torch.sigmoid(log_alpha - params.beta * math.log(-params.gamma / params.zeta))


def l0_penalty(log_alpha: torch.Tensor, params: HardConcreteParams) -> torch.Tensor:
    """Eq. 12 as the official code computes it: the mean over neurons of ``closed_probability``."""
    return closed_probability(log_alpha, params).mean()
