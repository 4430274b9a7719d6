"""The localization loop: train hard-concrete gates on the FFN activations (Eq. 13, as coded).

    loss = c * CE(forget) + sparsity_weight * L0 + kl_weight * KL(original || gated on neighbours)
    c = -ascent_weight while CE(forget) <= stop_loss, else +descent_weight

(or, with ``forget_loss="distill"``, a departure from the paper: ascent_weight * KL(DI's teacher || gated on
the forget tokens) in place of c * CE(forget); ``NeuMuterConfig``).

Only the gates train; the model is frozen by pyvene. Differences from the official code, all of
them speed or correctness, none changing the objective:

* the "original" model is the same weights with the interventions off (no deep copy), and its
  log-probabilities (and probabilities) on the neighbours are computed once and cached when they fit
  in memory;
* forget and neighbour samples go through ONE forward per step; by default they share one gate sample
  (``gate_noise="shared"``), where the official code's two forwards draw one each (``"official"``
  reproduces that inside the joint forward: same objective in expectation, another estimator of its
  gradient; README "Paper or official code");
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

from ... import distributed
from ...architectures import describe_layers, num_layers, parse_layers
from ...data import TokenBatch, pad_batch
from ...errors import NeuMuterError
from ...hard_concrete import HardConcreteParams
from ...intervenable import attach, intervened_logits, interventions_by_layer, set_intervention_mode
from ...interventions import HardConcreteGate
from ...lm import autocast, autocast_dtype, frozen_weights_unsaved, resolve_device
from ..losses import lowered_true_token_log_probs
from .config import NeuMuterConfig
from .losses import LogProbsOfLogits, joint_losses

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


def gate_seed(seed: int, layer: int, first_epoch: int = 1) -> int:
    """The seed of layer ``layer``'s gate noise in a localization starting at ``first_epoch``."""
    return seed * 100_003 + layer * 101 + first_epoch


def batch_order_rng(seed: int, first_epoch: int = 1) -> np.random.Generator:
    """The generator of the per-epoch order of the batches (one permutation per epoch)."""
    return np.random.default_rng([seed, first_epoch])


def localize(
    model,
    forget: Sequence[Sequence[int]],
    neighbours: Sequence[Sequence[int]],
    config: NeuMuterConfig,
    pad_id: int,
    on_epoch_end: EpochCallback | None = None,
    log: Callable[[str], None] = print,
    first_epoch: int = 1,
    forget_targets: Sequence[Sequence[bool]] | None = None,
) -> tuple[pv.IntervenableModel, LocalizationResult]:
    """Train the gates on token-id sequences of the forget set and its neighbours.

    ``neighbours`` holds ``k`` neighbours per forget sample, sample-major (sample i's neighbours at
    ``i*k .. i*k+k-1``); an empty list disables the KL term. ``on_epoch_end(epoch, record, pv_model)``
    may return True to stop (used for the Eq. 17 stopping rule). Epochs are numbered from
    ``first_epoch`` (a later stage of a coefficient schedule continues the count). ``forget_targets`` (one
    flag per forget token, ``token_selection``) restricts the forget CE to the flagged tokens.
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
        gate.generator = torch.Generator(device=device).manual_seed(gate_seed(config.seed, layer, first_epoch))
        optimizer_params.append(gate.log_alpha)
    optimizer = torch.optim.Adam(optimizer_params, lr=config.learning_rate)

    k = len(neighbours) // len(forget) if neighbours else 0
    order = sorted(range(len(forget)), key=lambda i: len(forget[i])) if config.length_buckets else range(len(forget))
    forget_batches, neighbour_batches, counts = _local_batches(forget, neighbours, k, config.batch_size, pad_id, order,
                                                               forget_targets)
    references = _ReferenceLogProbs(pv_model.model, neighbour_batches, config, device)
    teachers = (_ReferenceLogProbs(pv_model.model, forget_batches, config, device, lower_true_token_by=config.distill_tau)
                if config.forget_loss == "distill" else None)
    rng = batch_order_rng(config.seed, first_epoch)
    result = LocalizationResult(log_alpha={}, params=config.hard_concrete)
    start = time.perf_counter()
    epochs = tqdm(range(config.epochs), desc="localizing", unit="epoch", disable=not config.progress)
    with frozen_weights_unsaved(pv_model.model):  # the same gradients, one copy of the weights less (lm.py)
        for epoch in epochs:
            set_intervention_mode(pv_model, True)
            sums = {"forget_ce": 0.0, "kl": 0.0, "l0": 0.0, "loss": 0.0}
            for index in rng.permutation(len(forget_batches)):
                forget_batch = forget_batches[index].to(device) if forget_batches[index] is not None else None
                neighbour_batch = neighbour_batches[index].to(device) if k and forget_batch is not None else None
                terms = _step(pv_model, gates, optimizer, forget_batch, neighbour_batch, references, teachers, index,
                              counts[index], k > 0, config, device, pad_id)
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



def _local_batches(forget, neighbours, k: int, batch_size: int, pad_id: int, order: Sequence[int],
                   forget_targets: Sequence[Sequence[bool]] | None = None):
    """Per batch of ``batch_size`` forget samples (taken in ``order``): this process's forget rows and their
    ``k`` neighbours as right-padded batches (None where it has no row: ``distributed.shard``), and the whole
    batch's counts of predicted forget tokens and of neighbour tokens (the denominators of the CE and KL).
    ``forget_targets`` marks the forget tokens the CE trains on (every token but the first without it)."""
    order = list(order)
    targets = forget_targets or [[t > 0 for t in range(len(seq))] for seq in forget]
    forget_batches, neighbour_batches, counts = [], [], []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        counts.append((sum(sum(targets[i][1:]) for i in rows), sum(len(neighbours[i * k + j]) for i in rows for j in range(k))))
        mine = distributed.shard(rows)
        forget_batches.append(pad_batch([forget[i] for i in mine], pad_id,
                                        targets=[targets[i] for i in mine] if forget_targets else None) if mine else None)
        neighbour_batches.append(pad_batch([neighbours[i * k + j] for i in mine for j in range(k)], pad_id)
                                 if mine and k else None)
    return forget_batches, neighbour_batches, counts


def _step(pv_model, gates, optimizer, forget_batch: TokenBatch | None, neighbour_batch: TokenBatch | None,
          references: _ReferenceLogProbs, teachers: _ReferenceLogProbs | None, index: int, counts: tuple[int, int],
          with_neighbours: bool, config: NeuMuterConfig, device, pad_id: int) -> dict[str, float]:
    """One step on this process's rows of batch ``index`` (the whole batch without a process group): its
    share of each data term (its sum over the whole batch's count), the gate gradients summed over
    processes, one Adam step. With ``teachers`` (``forget_loss="distill"``) the forget term is the KL from
    DI's teacher, minimized; else the CE, ascended until it passes ``stop_loss`` (Eq. 13)."""
    optimizer.zero_grad(set_to_none=True)
    official_noise = config.gate_noise == "official" and with_neighbours
    if forget_batch is None:  # no row here: draw the noise the others draw, add nothing
        for gate in gates.values():
            for _ in range(2 if official_noise else 1):
                gate.gate()
        forget_ce = kl = torch.zeros((), device=device)
    else:
        groups = (len(forget_batch), len(neighbour_batch)) if official_noise else None
        for gate in gates.values():
            gate.row_groups = groups
        joint = forget_batch if neighbour_batch is None else _concatenate(forget_batch, neighbour_batch, pad_id)
        with autocast(config.dtype, device):
            logits = intervened_logits(pv_model, joint.input_ids, joint.attention_mask)
        forget_ce, kl = joint_losses(logits, forget_batch.labels,
                                     neighbour_batch.attention_mask if neighbour_batch is not None else None,
                                     references.get(index) if neighbour_batch is not None else None, counts,
                                     teachers.get(index) if teachers is not None else None, overwrite_logits=True)
    totals = distributed.sum_over_processes(torch.stack([forget_ce.detach(), kl.detach()]).float())
    l0 = torch.stack([gate.l0() for gate in gates.values()]).mean()
    if teachers is not None:
        coefficient = config.ascent_weight
    else:
        coefficient = -config.ascent_weight if totals[0].item() <= config.stop_loss else config.descent_weight
    _, processes = distributed.rank_and_size()
    loss = coefficient * forget_ce + config.sparsity_weight * l0 / processes + config.kl_weight * kl
    loss.backward()
    for gate in gates.values():
        distributed.sum_over_processes(gate.log_alpha.grad)
    optimizer.step()
    forget_total, kl_total = totals.tolist()
    l0_value = l0.item()
    return {"forget_ce": forget_total, "kl": kl_total, "l0": l0_value,
            "loss": coefficient * forget_total + config.sparsity_weight * l0_value + config.kl_weight * kl_total}


def _concatenate(first: TokenBatch, second: TokenBatch, pad_id: int) -> TokenBatch:
    width = max(first.input_ids.shape[1], second.input_ids.shape[1])

    def widen(batch: TokenBatch, pad_value: int) -> tuple[torch.Tensor, torch.Tensor]:
        extra = width - batch.input_ids.shape[1]
        return F.pad(batch.input_ids, (0, extra), value=pad_value), F.pad(batch.attention_mask, (0, extra), value=0)

    ids_a, mask_a = widen(first, pad_id)
    ids_b, mask_b = widen(second, pad_id)
    return TokenBatch(torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b]))


class _ReferenceLogProbs:
    """The original model's log-probabilities on each batch (None where this process has none): of the
    neighbours, or, with ``lower_true_token_by``, DI's teacher on the forget rows (the true next token's logit
    lowered, one distribution per predicted position: ``lowered_true_token_log_probs``). Kept in the fastest form
    that fits in ``reference_cache_bytes``: fp32 log-probabilities; else the logits the forward computed
    (``LogProbsOfLogits``: the same values, half the memory under bf16 autocast, a log-softmax per chunk more at
    every step: 12% of a SmolLM2 step at batch 2); else recomputed at every step."""

    def __init__(self, model, batches: list[TokenBatch | None], config: NeuMuterConfig, device,
                 lower_true_token_by: float | None = None):
        self.model, self.batches, self.config, self.device = model, batches, config, device
        self.lower_true_token_by = lower_true_token_by
        vocab = model.get_output_embeddings().weight.shape[0]
        values = sum(b.input_ids.numel() for b in batches if b is not None) * vocab
        logits_itemsize = (autocast_dtype(config.dtype, device) or torch.float32).itemsize
        self.as_log_probs = values * 4 <= config.reference_cache_bytes
        fits = self.as_log_probs or values * logits_itemsize <= config.reference_cache_bytes
        self.cache = [self._compute(b) if b is not None else None for b in batches] if fits else None

    @torch.no_grad()
    def _compute(self, batch: TokenBatch) -> torch.Tensor | LogProbsOfLogits:
        batch = batch.to(self.device)
        with autocast(self.config.dtype, self.device):
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        if not self.as_log_probs:
            return LogProbsOfLogits(logits, batch.labels, self.lower_true_token_by)
        if self.lower_true_token_by is not None:
            return lowered_true_token_log_probs(logits, batch.labels, self.lower_true_token_by)
        return F.log_softmax(logits.float(), dim=-1)

    def get(self, index: int) -> torch.Tensor | LogProbsOfLogits:
        """The log-probabilities of batch ``index`` (read ``[row, span]`` by ``joint_losses``)."""
        return self.cache[index] if self.cache is not None else self._compute(self.batches[index])
