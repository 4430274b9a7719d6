"""The two data terms of Eq. 13: next-token cross-entropy on the forget set (or, with
``forget_loss="distill"``, the KL from DI's teacher there), KL(original || gated) on the neighbours, as the
chunked pair the localization step uses (``joint_losses``); their plain definitions
(``methods.losses``: what the other methods and the official loop use) are the reference it is tested
against.

A step's largest tensors are [batch, tokens, vocabulary]: 49,152 x 2,048 floats (400 MB) for 8 forget and
8 neighbour windows of 128 tokens on SmolLM2. Autograd through ``log_softmax(logits.float())`` keeps a
float copy of the logits, their log-softmax and, in the backward, a float gradient of each: four such
tensors, and as many memory-bound passes over them. ``joint_losses`` reads the logits (bf16 under
autocast) in chunks of rows and tokens, keeps nothing but two sums, and in the backward recomputes each
chunk's softmax and writes the gradient once, using

    d CE / d logits = softmax - onehot(target)          d KL / d logits = softmax - p_original

(per token, scaled by the loss's normalisation): the only full-size tensors are the logits and their
gradient, in the logits' dtype. The values are those of the plain definitions (tested to float
rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...data import IGNORE_INDEX
from ..losses import lowered_true_token_log_probs

CHUNK_TOKENS = 256  # rows x tokens of one chunk: 256 x 49,152 fp32 is 50 MB


def joint_losses(logits: torch.Tensor, forget_labels: torch.Tensor, neighbour_mask: torch.Tensor | None = None,
                 reference_log_probs: torch.Tensor | None = None,
                 counts: tuple[int, int] | None = None,
                 forget_teacher_log_probs: torch.Tensor | None = None,
                 overwrite_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(causal_lm_loss(forget rows), kl_to_reference(neighbour rows))`` (``methods.losses``) of one joint forward.

    ``logits`` is [n_forget + n_neighbours, width, vocabulary]: the forget batch (``forget_labels``,
    [n_forget, forget width]) in the first rows, the neighbour batch (``neighbour_mask`` and the original
    model's ``reference_log_probs``, [n_neighbours, neighbour width(, vocabulary)]) after them, each
    right-padded to the joint width. The reference and the teacher are read one chunk at a time,
    ``reference[row, span]``: a tensor of log-probabilities, or ``LogProbsOfLogits``, which computes them
    from stored logits. Without neighbours the KL is 0. ``counts`` replaces the denominators
    (predicted forget tokens, neighbour tokens) by those of a larger batch that these rows are a share of
    (data parallelism: ``neumuter_interv.distributed``). With ``forget_teacher_log_probs`` ([n_forget, forget
    width - 1, vocabulary]: a distribution per predicted position) the forget term is the KL from that teacher
    to the model over the predicted forget tokens instead of the CE (``NeuMuterConfig.forget_loss="distill"``).
    ``overwrite_logits``: the backward writes the logits' gradient over the logits, chunk by chunk (each chunk
    is read before it is written), instead of into a tensor of their size: for a caller that never reads the
    logits after the backward, as a localization step; the full-size tensors of a step are then the logits
    alone (as Liger-Kernel's fused cross-entropy does).
    """
    if neighbour_mask is None:
        neighbour_mask = forget_labels.new_zeros((0, 0))
    targets = forget_labels[:, 1:]
    ce_count, kl_count = counts if counts is not None else (int((targets != IGNORE_INDEX).sum()), int(neighbour_mask.sum()))
    return _JointLosses.apply(logits, forget_labels, neighbour_mask, max(ce_count, 1), max(kl_count, 1),
                              (reference_log_probs, forget_teacher_log_probs), overwrite_logits)


class LogProbsOfLogits:
    """Log-probabilities read a chunk at a time (``[row, span]``, as ``joint_losses`` reads them) from logits
    kept in the dtype the forward computed them in: ``log_softmax(logits[row, span].float())``, or DI's teacher
    (``lowered_true_token_log_probs``) with ``labels`` and ``lower_true_token_by``. The same values as the
    whole tensor of fp32 log-probabilities, in half its memory where the forward ran in bf16 (the original
    model's distributions over the neighbours and the forget rows are the largest tensors a localization
    keeps: 49,152 floats a token on SmolLM2)."""

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor | None = None,
                 lower_true_token_by: float | None = None):
        self.logits, self.labels, self.lower_true_token_by = logits, labels, lower_true_token_by

    def __getitem__(self, key: tuple[int, slice]) -> torch.Tensor:
        row, span = key
        if self.lower_true_token_by is None:
            return F.log_softmax(self.logits[row, span].float(), -1)
        start, stop, _ = span.indices(self.logits.shape[1] - 1)  # a teacher predicts all positions but the last
        window = slice(start, stop + 1)  # the positions and the next one, whose token is the target
        return lowered_true_token_log_probs(self.logits[row:row + 1, window], self.labels[row:row + 1, window],
                                            self.lower_true_token_by)[0]


def _chunks(rows: range, width: int):
    step = max(1, CHUNK_TOKENS)
    for row in rows:
        for start in range(0, width, step):
            yield row, slice(start, min(start + step, width))


class _JointLosses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, forget_labels, neighbour_mask, ce_count: int, kl_count: int, references,
                overwrite_logits: bool):
        reference_log_probs, forget_teacher_log_probs = references
        n_forget, forget_width = forget_labels.shape
        targets = forget_labels[:, 1:]
        distill = forget_teacher_log_probs is not None
        ce_sum = torch.zeros((), dtype=torch.float64, device=logits.device)
        kl_sum = torch.zeros((), dtype=torch.float64, device=logits.device)
        for row, span in _chunks(range(n_forget), forget_width - 1):
            piece = logits[row, span].float()
            target = targets[row, span]
            valid = target != IGNORE_INDEX
            if distill:
                teacher = forget_teacher_log_probs[row, span]
                per_token = (teacher.exp() * (teacher - F.log_softmax(piece, -1))).sum(-1)
            else:
                per_token = torch.logsumexp(piece, -1) - piece.gather(-1, target.clamp(min=0)[:, None])[:, 0]
            ce_sum += (per_token * valid).sum()
        for row, span in _chunks(range(neighbour_mask.shape[0]), neighbour_mask.shape[1]):
            reference = reference_log_probs[row, span]
            per_token = (reference.exp() * (reference - F.log_softmax(logits[n_forget + row, span].float(), -1))).sum(-1)
            kl_sum += (per_token * neighbour_mask[row, span]).sum()
        ctx.save_for_backward(logits, forget_labels, neighbour_mask)
        ctx.counts, ctx.references, ctx.overwrite_logits = (ce_count, kl_count), references, overwrite_logits
        return (ce_sum / ce_count).float(), (kl_sum / kl_count).float()

    @staticmethod
    def backward(ctx, grad_ce, grad_kl):
        logits, forget_labels, neighbour_mask = ctx.saved_tensors
        ce_count, kl_count = ctx.counts
        reference_log_probs, forget_teacher_log_probs = ctx.references
        n_forget, forget_width = forget_labels.shape
        targets = forget_labels[:, 1:]
        if ctx.overwrite_logits:  # what no chunk writes is zero; every chunk is read before it is overwritten
            grad = logits
            grad[:n_forget, forget_width - 1:] = 0
            grad[n_forget:, neighbour_mask.shape[1]:] = 0
        else:
            grad = torch.zeros_like(logits)
        ce_scale, kl_scale = grad_ce / ce_count, grad_kl / kl_count
        for row, span in _chunks(range(n_forget), forget_width - 1):
            target = targets[row, span]
            valid = (target != IGNORE_INDEX)[:, None]
            piece = torch.softmax(logits[row, span].float(), -1)
            if forget_teacher_log_probs is not None:
                piece -= forget_teacher_log_probs[row, span].exp()
            else:
                piece.scatter_add_(-1, target.clamp(min=0)[:, None], -valid.to(piece.dtype))
            grad[row, span] = (piece * (valid * ce_scale)).to(grad.dtype)
        for row, span in _chunks(range(neighbour_mask.shape[0]), neighbour_mask.shape[1]):
            piece = torch.softmax(logits[n_forget + row, span].float(), -1) - reference_log_probs[row, span].exp()
            grad[n_forget + row, span] = (piece * (neighbour_mask[row, span, None] * kl_scale)).to(grad.dtype)
        return grad, None, None, None, None, None, None
