"""The localization loop: train hard-concrete gates on the FFN activations (Eq. 13, as coded).

    loss = c * CE(forget) + sparsity_weight * L0 + kl_weight * KL(original || gated on neighbours)
    c = -ascent_weight while CE(forget) <= stop_loss, else +descent_weight

Only the gates train; the model is frozen by pyvene. Differences from the official code, all of
them speed or correctness, none changing the objective:

* the "original" model is the same weights with the interventions off (no deep copy), and its
  log-probabilities (and probabilities) on the neighbours are computed once and cached when they fit
  in memory;
* forget and neighbour samples go through ONE forward per step, sharing one gate sample (the official
  code shares one sample per forward too);
* pads are excluded from the CE and the KL (the official code counts left-pad EOS tokens);
* the forget set is batched (``batch_size``; 1 reproduces the official code).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyvene as pv
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...architectures import describe_layers, num_layers, parse_layers
from ...data import IGNORE_INDEX, TokenBatch, batches
from ...errors import NeuMuterError
from ...hard_concrete import HardConcreteParams
from ...intervenable import attach, intervened_logits, interventions_by_layer, set_intervention_mode
from ...interventions import HardConcreteGate
from ...lm import autocast, resolve_device
from .config import NeuMuterConfig

EpochCallback = Callable[[int, dict, pv.IntervenableModel], bool]


@dataclass
class LocalizationResult:
    """Trained gate locations per 0-based layer, and what happened on the way."""

    log_alpha: dict[int, torch.Tensor]
    params: HardConcreteParams
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


def attach_gates(model, config: NeuMuterConfig) -> pv.IntervenableModel:
    """The model wrapped with a fresh ``HardConcreteGate`` on each configured layer."""
    layers = parse_layers(config.layers, num_layers(model))
    return attach(
        model,
        layers,
        lambda layer, width: HardConcreteGate(
            embed_dim=width, beta=config.beta, gamma=config.gamma, zeta=config.zeta,
            init_open_probability=config.init_open_probability,
        ),
    )


def localize(
    model,
    forget: Sequence[Sequence[int]],
    neighbours: Sequence[Sequence[int]],
    config: NeuMuterConfig,
    pad_id: int,
    on_epoch_end: EpochCallback | None = None,
    log: Callable[[str], None] = print,
    first_epoch: int = 1,
) -> tuple[pv.IntervenableModel, LocalizationResult]:
    """Train the gates on token-id sequences of the forget set and its neighbours.

    ``neighbours`` holds ``k`` neighbours per forget sample, sample-major (sample i's neighbours at
    ``i*k .. i*k+k-1``); an empty list disables the KL term. ``on_epoch_end(epoch, record, pv_model)``
    may return True to stop (used for the Eq. 17 stopping rule). Epochs are numbered from
    ``first_epoch`` (a later stage of a coefficient schedule continues the count).
    """
    if not forget:
        raise NeuMuterError("the forget set is empty")
    if neighbours and len(neighbours) % len(forget):
        raise NeuMuterError(f"{len(neighbours)} neighbours for {len(forget)} forget samples: need k per sample")
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model.to(device)
    pv_model = attach_gates(model, config)
    gates = interventions_by_layer(pv_model)
    log(f"NeuMuter: gating the FFN activation of layers {describe_layers(list(gates))}")
    optimizer_params = []
    for layer, gate in gates.items():
        gate.generator = torch.Generator(device=device).manual_seed(config.seed * 100_003 + layer * 101 + first_epoch)
        optimizer_params.append(gate.log_alpha)
    optimizer = torch.optim.Adam(optimizer_params, lr=config.learning_rate)

    k = len(neighbours) // len(forget) if neighbours else 0
    forget_batches = batches(forget, config.batch_size, pad_id)
    neighbour_batches = batches(neighbours, config.batch_size * k, pad_id) if k else []
    references = _ReferenceLogProbs(pv_model.model, neighbour_batches, config, device)
    rng = np.random.default_rng([config.seed, first_epoch])
    result = LocalizationResult(log_alpha={}, params=config.hard_concrete)
    start = time.perf_counter()
    epochs = tqdm(range(config.epochs), desc="localizing", unit="epoch", disable=not config.progress)
    for epoch in epochs:
        set_intervention_mode(pv_model, True)
        sums = {"forget_ce": 0.0, "kl": 0.0, "l0": 0.0, "loss": 0.0}
        for index in rng.permutation(len(forget_batches)):
            forget_batch = forget_batches[index].to(device)
            neighbour_batch = neighbour_batches[index].to(device) if k else None
            terms = _step(pv_model, gates, optimizer, forget_batch, neighbour_batch, references, index, config, device, pad_id)
            for name in sums:
                sums[name] += terms[name]
            result.steps += 1
        record = {name: value / len(forget_batches) for name, value in sums.items()}
        record["epoch"] = first_epoch + epoch
        record["below_threshold"] = sum(
            int((torch.sigmoid(g.log_alpha) < config.threshold).sum()) for g in gates.values()
        )
        result.history.append(record)
        epochs.set_postfix(ce=f"{record['forget_ce']:.3f}", kl=f"{record['kl']:.4f}", low=record["below_threshold"])
        set_intervention_mode(pv_model, False)
        if on_epoch_end is not None and on_epoch_end(first_epoch + epoch, record, pv_model):
            result.stopped_early = epoch + 1 < config.epochs
            break
    set_intervention_mode(pv_model, False)
    result.seconds = time.perf_counter() - start
    result.log_alpha = {layer: gate.log_alpha.detach().float().cpu().clone() for layer, gate in gates.items()}
    return pv_model, result



def _step(pv_model, gates, optimizer, forget_batch: TokenBatch, neighbour_batch: TokenBatch | None,
          references: _ReferenceLogProbs, index: int, config: NeuMuterConfig, device, pad_id: int) -> dict[str, float]:
    n_forget = len(forget_batch)
    joint = forget_batch if neighbour_batch is None else _concatenate(forget_batch, neighbour_batch, pad_id)
    optimizer.zero_grad(set_to_none=True)
    with autocast(config.dtype, device):
        logits = intervened_logits(pv_model, joint.input_ids, joint.attention_mask)
    kl = torch.zeros((), device=device)
    if neighbour_batch is None:
        forget_ce = causal_lm_loss(logits, forget_batch.labels)
    else:
        forget_logits, neighbour_logits = _JointBlocks.apply(
            logits, n_forget, forget_batch.input_ids.shape[1] - 1, neighbour_batch.input_ids.shape[1])
        forget_ce = _next_token_loss(forget_logits, forget_batch.labels)
        reference_log_probs, reference_probs = references.get(index)
        kl = kl_to_reference(neighbour_logits, reference_log_probs, neighbour_batch.attention_mask, reference_probs)
    l0 = torch.stack([gate.l0() for gate in gates.values()]).mean()
    coefficient = -config.ascent_weight if forget_ce.item() <= config.stop_loss else config.descent_weight
    loss = coefficient * forget_ce + config.sparsity_weight * l0 + config.kl_weight * kl
    loss.backward()
    optimizer.step()
    return {"forget_ce": forget_ce.item(), "kl": kl.item(), "l0": l0.item(), "loss": loss.item()}


def _concatenate(first: TokenBatch, second: TokenBatch, pad_id: int) -> TokenBatch:
    width = max(first.input_ids.shape[1], second.input_ids.shape[1])

    def widen(batch: TokenBatch, pad_value: int) -> tuple[torch.Tensor, torch.Tensor]:
        extra = width - batch.input_ids.shape[1]
        return F.pad(batch.input_ids, (0, extra), value=pad_value), F.pad(batch.attention_mask, (0, extra), value=0)

    ids_a, mask_a = widen(first, pad_id)
    ids_b, mask_b = widen(second, pad_id)
    return TokenBatch(torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b]))


class _JointBlocks(torch.autograd.Function):
    """``(logits[:n_forget, :forget_width], logits[n_forget:, :neighbour_width])`` of the joint forward,
    whose backward writes both gradients into one buffer of the joint logits' shape.

    Plain slicing gives the same numbers, but each slice's backward allocates and zero-fills a gradient
    of the whole joint logits (batch x length x vocabulary, the largest tensors of a step) and autograd
    then adds the two: about a tenth of a CPU step. Here every entry is written once: the gradient of
    its block, or zero outside both blocks, which is exactly what the slices' sum holds.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, n_forget: int, forget_width: int, neighbour_width: int):
        ctx.shape, ctx.n_forget, ctx.widths = logits.shape, n_forget, (forget_width, neighbour_width)
        return logits[:n_forget, :forget_width], logits[n_forget:, :neighbour_width]

    @staticmethod
    def backward(ctx, forget_grad: torch.Tensor, neighbour_grad: torch.Tensor):
        n, (forget_width, neighbour_width) = ctx.n_forget, ctx.widths
        grad = forget_grad.new_empty(ctx.shape)
        grad[:n, :forget_width] = forget_grad
        grad[:n, forget_width:] = 0
        grad[n:, :neighbour_width] = neighbour_grad
        grad[n:, neighbour_width:] = 0
        return grad, None, None, None


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over non-pad targets."""
    return _next_token_loss(logits[:, :-1], labels)


def _next_token_loss(predicting_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``causal_lm_loss`` given the logits of positions 0..T-2 only (those that predict a next token)."""
    return F.cross_entropy(predicting_logits.flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)


def kl_to_reference(logits: torch.Tensor, reference_log_probs: torch.Tensor, attention_mask: torch.Tensor,
                    reference_probs: torch.Tensor | None = None) -> torch.Tensor:
    """KL(P_original || P_gated) per token over the vocabulary, averaged over non-pad positions.

    ``reference_probs`` is ``reference_log_probs.exp()`` when the caller keeps it (it is the same for
    every step on a batch); without it, it is computed here.
    """
    if reference_probs is None:
        reference_probs = reference_log_probs.exp()
    log_probs = F.log_softmax(logits.float(), dim=-1)
    per_token = (reference_probs * (reference_log_probs - log_probs)).sum(-1)
    mask = attention_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


class _ReferenceLogProbs:
    """The original model's log-probabilities and probabilities on each neighbour batch.

    Both are cached when they fit in ``reference_cache_bytes``, else the log-probabilities alone, else
    neither (recomputed at every step).
    """

    def __init__(self, model, neighbour_batches: list[TokenBatch], config: NeuMuterConfig, device):
        self.model, self.batches, self.config, self.device = model, neighbour_batches, config, device
        vocab = model.get_output_embeddings().weight.shape[0]
        size = sum(b.input_ids.numel() for b in neighbour_batches) * vocab * 4
        self.cache = [self._compute(b) for b in neighbour_batches] if size <= config.reference_cache_bytes else None
        self.probs = [log_probs.exp() for log_probs in self.cache] if 2 * size <= config.reference_cache_bytes else None

    @torch.no_grad()
    def _compute(self, batch: TokenBatch) -> torch.Tensor:
        batch = batch.to(self.device)
        with autocast(self.config.dtype, self.device):
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return F.log_softmax(logits.float(), dim=-1)

    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(log-probabilities, probabilities or None when not cached) of neighbour batch ``index``."""
        log_probs = self.cache[index] if self.cache is not None else self._compute(self.batches[index])
        return log_probs, self.probs[index] if self.probs is not None else None


