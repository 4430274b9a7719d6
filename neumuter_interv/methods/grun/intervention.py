"""GRUN's gated ReFT edit as a pyvene intervention on the residual stream (``block_output``).

    h' = h + sigmoid(g(h)) * R^T (W h + b - R h)

R W b is a LoReFT edit (Wu et al., 2024, "ReFT: Representation Finetuning for Language Models"): R has
``rank`` orthonormal rows (``torch.nn.utils.parametrizations.orthogonal``), so the edit only moves h
inside that subspace, towards W h + b. g is GRUN's soft gate (Ren et al., 2025, "A General Framework
to Enhance Fine-tuning-based LLM Unlearning"): a Linear map (``gate_hidden = 0``) or a 3-layer MLP
(``gate_hidden > 0``) giving one logit per position; trained to be 1 on forget data and 0 elsewhere,
it lets the edit act on forget data only. The gate of the last forward is kept in ``last_gate`` for
the gate's BCE loss.

pyvene 0.1.8 rules (see the notes on pyvene): base classes in the order (Sourceless, Trainable,
DistributedRepresentation) or the intervention is never called, and ``keep_last_dim=True`` so ``base``
is [batch, seq, hidden]. pyvene rebuilds interventions from ``embed_dim`` alone when loading, so
``rank`` and ``gate_hidden`` live in the buffer ``shape_parameters`` and the modules are rebuilt to
the checkpoint's shape before its weights are loaded.
"""

from __future__ import annotations

import pyvene as pv
import torch
from torch.nn.utils.parametrizations import orthogonal


class GatedReFT(pv.SourcelessIntervention, pv.TrainableIntervention, pv.DistributedRepresentationIntervention):
    """Gated low-rank representation edit of a [batch, seq, hidden] residual stream."""

    def __init__(self, rank: int = 4, gate_hidden: int = 0, **kwargs):
        kwargs["keep_last_dim"] = True
        super().__init__(**kwargs)
        if self.embed_dim is None:
            raise ValueError("GatedReFT needs embed_dim (the hidden size)")
        self.register_buffer("shape_parameters", torch.tensor([rank, gate_hidden], dtype=torch.long))
        self._build(rank, gate_hidden)
        self.last_gate: torch.Tensor | None = None

    def _build(self, rank: int, gate_hidden: int) -> None:
        hidden = int(self.embed_dim)
        if not 0 < rank <= hidden:
            raise ValueError(f"rank must be in 1..{hidden}, got {rank}")
        self.rotation = orthogonal(torch.nn.Linear(hidden, rank, bias=False))  # weight R: [rank, hidden]
        self.target = torch.nn.Linear(hidden, rank)  # W h + b
        if gate_hidden > 0:
            self.gate = torch.nn.Sequential(
                torch.nn.Linear(hidden, gate_hidden), torch.nn.ReLU(),
                torch.nn.Linear(gate_hidden, gate_hidden), torch.nn.ReLU(),
                torch.nn.Linear(gate_hidden, 1),
            )
        else:
            self.gate = torch.nn.Linear(hidden, 1)
        self.shape_parameters = torch.tensor([rank, gate_hidden], dtype=torch.long, device=self.shape_parameters.device)

    @property
    def rank(self) -> int:
        return int(self.shape_parameters[0])

    @property
    def gate_hidden(self) -> int:
        return int(self.shape_parameters[1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "shape_parameters")
        if saved is not None and saved.tolist() != self.shape_parameters.tolist():
            self._build(*saved.tolist())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __getstate__(self):
        # ``last_gate`` may hold an autograd graph, which cannot be deep-copied (pyvene copies configs).
        return {**self.__dict__, "last_gate": None}

    def forward(self, base, source=None, subspaces=None, **kwargs):
        h = base.float()
        gate = torch.sigmoid(self.gate(h).squeeze(-1))
        self.last_gate = gate
        edit = (self.target(h) - self.rotation(h)) @ self.rotation.weight
        return (h + gate.unsqueeze(-1) * edit).to(base.dtype)

    def __str__(self) -> str:
        return f"GatedReFT(hidden={self.embed_dim}, rank={self.rank}, gate_hidden={self.gate_hidden})"
