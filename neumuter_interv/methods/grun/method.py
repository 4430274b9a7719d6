"""GRUN-like unlearning (Ren et al., 2025, "A General Framework to Enhance Fine-tuning-based LLM
Unlearning"): the model stays frozen; a gated ReFT intervention (``GatedReFT``) on the residual
stream of a few layers is trained with a forget loss (GD or NPO style) plus the gate's BCE, through
the shared fine-tuning loop. The result is a ``pyvene.IntervenableModel`` that saves with
``IntervenableModel.save`` and loads with ``neumuter_interv.intervenable.load``.

Differences from the original: the edit acts on every position (GRUN edits the last prompt token of
a QA pair; memorized text is reproduced at every position), and the gate is trained on every
non-pad token of the forget and retain texts.
"""

from __future__ import annotations

import pyvene as pv
import torch
import torch.nn.functional as F

from ...architectures import num_layers, parse_layers
from ...data import TokenBatch
from ...intervenable import intervened_logits, set_intervention_mode
from ...lm import resolve_device
from ..base import UnlearningMethod, UnlearningRecord, UnlearningResult, count_parameters, measured
from ..finetune import logits_of, npo_loss, prepare_data, run_training, sequence_log_likelihood
from ..losses import causal_lm_loss
from .config import GRUNSettings
from .intervention import GatedReFT

COMPONENT = "block_output"


def default_layers(n_layers: int) -> list[int]:
    return sorted({n_layers // 4, n_layers // 2, (3 * n_layers) // 4})


def attach_gated_reft(model, settings: GRUNSettings) -> pv.IntervenableModel:
    """``model`` wrapped with a fresh ``GatedReFT`` on the residual stream of each chosen layer."""
    n_layers = num_layers(model)
    layers = default_layers(n_layers) if settings.layers is None else parse_layers(settings.layers, n_layers)
    device = next(model.parameters()).device
    representations = [
        pv.RepresentationConfig(
            layer=layer, component=COMPONENT, unit="pos",
            intervention=GatedReFT(rank=settings.rank, gate_hidden=settings.gate_hidden,
                                   embed_dim=model.config.hidden_size).to(device),
        )
        for layer in layers
    ]
    pv_model = pv.IntervenableModel(pv.IntervenableConfig(representations=representations), model=model)
    pv_model.disable_model_gradients()
    return pv_model


class GRUN(UnlearningMethod):
    name = "grun"
    needs_retain = True

    def __init__(self, settings: GRUNSettings | None = None):
        self.settings = settings or GRUNSettings()

    def unlearn(self, model, tokenizer, forget_texts, retain_texts=None) -> UnlearningResult:
        settings = self.settings
        device = resolve_device(settings.device)
        torch.manual_seed(settings.seed)
        data = prepare_data(model, tokenizer, forget_texts, retain_texts, settings.batch_size, device, True)
        record = UnlearningRecord(method=self.name, total_parameters=count_parameters(model), uses_retain_set=True)
        with measured(record, device):
            model.to(device)
            pv_model = attach_gated_reft(model, settings)
            gates = list(pv_model.interventions.values())
            parameters = [p for gate in gates for p in gate.parameters()]
            outcome = run_training(
                parameters,
                lambda forget, retain: self.loss(pv_model, gates, forget, retain),
                lambda: data.forget_batches,
                data.retain_batches,
                settings,
                lambda: settings.stop_when is not None and bool(settings.stop_when(pv_model)),
                lambda training: set_intervention_mode(pv_model, training),
            )
        record.trainable_parameters = sum(p.numel() for p in parameters)
        record.steps = outcome.steps
        record.extra = outcome.summary()
        return UnlearningResult(pv_model, record)

    def loss(self, pv_model, gates: list[GatedReFT], forget: TokenBatch, retain: TokenBatch) -> torch.Tensor:
        settings = self.settings
        forget_logits = intervened_logits(pv_model, forget.input_ids, forget.attention_mask)
        forget_gate_loss = _gate_bce(gates, forget, target=1.0)
        if settings.forget_loss == "npo":
            with torch.no_grad():  # the un-intervened model is the reference: pyvene hooks only run inside its calls
                reference_ll = sequence_log_likelihood(logits_of(pv_model.model, forget), forget.labels)
            forget_loss = npo_loss(sequence_log_likelihood(forget_logits, forget.labels), reference_ll, settings.npo_beta)
        else:
            forget_loss = -causal_lm_loss(forget_logits, forget.labels)
        retain_logits = intervened_logits(pv_model, retain.input_ids, retain.attention_mask)
        retain_loss = causal_lm_loss(retain_logits, retain.labels)
        gate_loss = forget_gate_loss + _gate_bce(gates, retain, target=0.0)
        return forget_loss + settings.retain_weight * retain_loss + settings.gate_weight * gate_loss


def _gate_bce(gates: list[GatedReFT], batch: TokenBatch, target: float) -> torch.Tensor:
    """Mean BCE of every layer's gate (from the last forward) against ``target`` on non-pad tokens."""
    mask = batch.attention_mask.float()
    losses = []
    for gate in gates:
        values = gate.last_gate.clamp(1e-6, 1 - 1e-6)
        bce = F.binary_cross_entropy(values, torch.full_like(values, target), reduction="none")
        losses.append((bce * mask).sum() / mask.sum())
    return torch.stack(losses).mean()
