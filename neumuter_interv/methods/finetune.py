"""The one fine-tuning loop behind GA, SGA, TA, DI, GD, KL and NPO (and the training of GRUN).

The comparison methods of the paper (Section 4, Appendix B.4) differ only in their loss, in which
forget samples an epoch trains on (SGA) and in what happens after training (TA negates the update).
``FineTuningMethod`` owns everything else once: tokenizing, batching, the Adam optimizer, the step
budget, the stop criterion and the ``UnlearningRecord``.

Stopping follows the paper: "we continue applying the comparison methods until all unlearned samples
meet the threshold" (Eq. 17). The harness builds that test from ``neumuter_interv.metrics`` and passes
it as ``settings.stop_when(model) -> bool``; it is checked before the first epoch and after every
epoch, with the model in eval mode. Without one, a method runs its full ``max_epochs`` budget.

Methods modify the model they are given in place (``UnlearningMethod.unlearn``'s contract): callers
pass a copy when they still need the original.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..data import IGNORE_INDEX, TokenBatch, batches, model_context_length, pad_id_of, tokenize
from ..errors import NeuMuterError
from ..lm import autocast, check_dtype, resolve_device
from ..validation import check_number
from .base import UnlearningMethod, UnlearningRecord, UnlearningResult, count_parameters, measured
from .losses import causal_lm_loss

StopCriterion = Callable[[Any], bool]


@dataclass
class FineTuneSettings:
    """Settings every fine-tuning method shares.

    ``learning_rate`` 5e-5 is the value of Jang et al. (2023), whose GA setting the paper says it
    copies; the paper's B.4 prints 5e-4 for it, which we read as a typo (one setting away).
    ``batch_size=None`` puts the whole forget set in one batch: one update per epoch, as in Jang et al.
    """

    learning_rate: float = 5e-5
    max_epochs: int = 100
    batch_size: int | None = None
    stop_when: StopCriterion | None = field(default=None, repr=False, compare=False)
    device: str = "auto"  # "auto" = cuda when available
    seed: int = 0
    dtype: str = "float32"  # the forward's compute dtype (``lm.autocast``; weights and Adam stay fp32)

    def __post_init__(self):
        check_number("learning_rate", self.learning_rate, above=0)
        check_number("max_epochs", self.max_epochs, minimum=1, integer=True)
        if self.batch_size is not None:
            check_number("batch_size", self.batch_size, minimum=1, integer=True)
        check_number("seed", self.seed, minimum=0, integer=True)
        check_dtype(self.dtype)


@dataclass
class FineTuneOutcome:
    """What the loop did: optimizer steps, epochs, whether the stop criterion held, mean loss per epoch."""

    steps: int = 0
    epochs: int = 0
    criterion_met: bool = False
    losses: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "criterion_met": self.criterion_met,
                "final_loss": self.losses[-1] if self.losses else None}


def run_training(
    parameters: Sequence[torch.nn.Parameter],
    loss_of: Callable[[TokenBatch, TokenBatch | None], torch.Tensor],
    epoch_batches: Callable[[], list[TokenBatch]],
    retain_batches: Sequence[TokenBatch],
    settings: FineTuneSettings,
    criterion_met: Callable[[], bool],
    set_training: Callable[[bool], Any],
) -> FineTuneOutcome:
    """Adam on ``parameters`` until ``criterion_met()`` or ``settings.max_epochs`` epochs.

    Each epoch trains once on every batch ``epoch_batches()`` returns (an empty list ends training:
    SGA's own stopping rule), pairing each step's forget batch with the next retain batch, cycling through
    the retain set across steps (so a retain set larger than the forget batch is seen in turn, one
    forget-sized batch per step, rather than its first batch only).
    """
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    outcome = FineTuneOutcome()
    set_training(False)
    while outcome.epochs < settings.max_epochs:
        outcome.criterion_met = criterion_met()
        if outcome.criterion_met:
            break
        forget_batches = epoch_batches()
        if not forget_batches:
            outcome.criterion_met = True
            break
        set_training(True)
        total = 0.0
        for forget in forget_batches:
            retain = retain_batches[outcome.steps % len(retain_batches)] if retain_batches else None
            optimizer.zero_grad(set_to_none=True)
            with autocast(settings.dtype, forget.input_ids.device):
                loss = loss_of(forget, retain)
            loss.backward()
            optimizer.step()
            total += loss.item()
            outcome.steps += 1
        set_training(False)
        outcome.epochs += 1
        outcome.losses.append(total / len(forget_batches))
    else:
        outcome.criterion_met = criterion_met()
    return outcome


@dataclass
class TrainingData:
    """The tokenized forget and retain sets of one run, batched and on the run's device."""

    forget_ids: list[list[int]]
    forget_batches: list[TokenBatch]
    retain_batches: list[TokenBatch]
    pad_id: int
    device: torch.device


def prepare_data(model, tokenizer, forget_texts, retain_texts, batch_size: int | None, device,
                 needs_retain: bool) -> TrainingData:
    """Tokenize and batch the forget set (and the retain set when the method uses it)."""
    if needs_retain and not retain_texts:
        raise NeuMuterError("this method trains on a retain set: pass retain_texts")
    context = model_context_length(model)
    pad_id = pad_id_of(tokenizer)
    forget_ids = tokenize(tokenizer, forget_texts, context, "forget")
    size = batch_size or len(forget_ids)
    forget_batches = [b.to(device) for b in batches(forget_ids, size, pad_id)]
    retain_batches = []
    if needs_retain:
        retain_ids = tokenize(tokenizer, retain_texts, context, "retain")
        retain_batches = [b.to(device) for b in batches(retain_ids, batch_size or len(retain_ids), pad_id)]
    return TrainingData(forget_ids, forget_batches, retain_batches, pad_id, device)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The original model for KL, NPO and DI: a deep copy in eval mode without gradients."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def logits_of(model, batch: TokenBatch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def sequence_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(x) per sample: the sum of next-token log-probabilities over non-pad targets."""
    targets = labels[:, 1:]
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (targets != IGNORE_INDEX)).sum(-1)


def npo_loss(log_likelihood: torch.Tensor, reference_log_likelihood: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al., 2024): -(2/beta) * log sigmoid(-beta * (log p_theta(x) - log p_ref(x))), averaged."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (log_likelihood - reference_log_likelihood)).mean()


class FineTuningMethod(UnlearningMethod):
    """A method that trains all weights of the model with ``run_training``.

    Subclasses give ``loss``; they may keep per-run state (a frozen reference model, the original
    weights) by overriding ``prepare``, choose each epoch's batches (``select_batches``), and change
    the model after training (``finish``).
    """

    settings_class: type[FineTuneSettings] = FineTuneSettings

    def __init__(self, settings: FineTuneSettings | None = None):
        self.settings = settings if settings is not None else self.settings_class()

    @abstractmethod
    def loss(self, model, state, forget: TokenBatch, retain: TokenBatch | None) -> torch.Tensor:
        """The quantity the optimizer minimizes on one forget batch (and retain batch)."""

    def prepare(self, model) -> Any:
        """Per-run state handed to every other hook; none by default."""
        return None

    def select_batches(self, model, state, data: TrainingData) -> list[TokenBatch]:
        return data.forget_batches

    def criterion_met(self, model, state) -> bool:
        return self.settings.stop_when is not None and bool(self.settings.stop_when(model))

    def finish(self, model, state) -> None:
        """Called once after training, before the model is returned."""

    def unlearn(self, model, tokenizer, forget_texts, retain_texts=None) -> UnlearningResult:
        settings = self.settings
        device = resolve_device(settings.device)
        torch.manual_seed(settings.seed)
        data = prepare_data(model, tokenizer, forget_texts, retain_texts, settings.batch_size, device, self.needs_retain)
        record = UnlearningRecord(method=self.name, total_parameters=count_parameters(model),
                                  uses_retain_set=self.needs_retain)
        with measured(record, device):
            model.to(device).requires_grad_(True)
            state = self.prepare(model)
            outcome = run_training(
                list(model.parameters()),
                lambda forget, retain: self.loss(model, state, forget, retain),
                lambda: self.select_batches(model, state, data),
                data.retain_batches,
                settings,
                lambda: self.criterion_met(model, state),
                model.train,
            )
            self.finish(model, state)
            model.eval()
        record.trainable_parameters = record.total_parameters
        record.steps = outcome.steps
        record.extra = outcome.summary()
        return UnlearningResult(model, record)


def forget_cross_entropy(model, batch: TokenBatch) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on a batch (the training loss of the forget set)."""
    return causal_lm_loss(logits_of(model, batch), batch.labels)
