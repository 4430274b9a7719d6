"""The chunked joint losses of a localization step equal the plain definitions, values and gradients."""

import pytest
import torch

from neumuter_interv.data import IGNORE_INDEX
from neumuter_interv.methods.losses import (
    causal_lm_loss,
    distillation_loss,
    kl_to_reference,
    lowered_true_token_log_probs,
)
from neumuter_interv.methods.neumuter import losses
from neumuter_interv.methods.neumuter.losses import LogProbsOfLogits, joint_losses


def joint_case(dtype, seed=0, vocab=37):
    """Forget rows of width 6 (one padded), neighbour rows of width 8 (one padded), joint width 8."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(5, 8, vocab, generator=generator).to(dtype).requires_grad_(True)
    labels = torch.randint(0, vocab, (2, 6), generator=generator)
    labels[1, 4:] = IGNORE_INDEX
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[2, 5:] = 0
    reference = torch.log_softmax(torch.randn(3, 8, vocab, generator=generator), -1)
    return logits, labels, mask, reference


@pytest.mark.parametrize("chunk", [1, 3, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_joint_losses_equal_the_plain_definitions_in_value_and_gradient(chunk, dtype, monkeypatch):
    monkeypatch.setattr(losses, "CHUNK_TOKENS", chunk)
    logits, labels, mask, reference = joint_case(dtype)
    ce, kl = joint_losses(logits, labels, mask, reference)
    (2.0 * ce - 3.0 * kl).backward()
    fast_grad = logits.grad.clone()

    logits.grad = None
    plain_ce = causal_lm_loss(logits[:2, :6], labels)
    plain_kl = kl_to_reference(logits[2:, :8], reference, mask)
    (2.0 * plain_ce - 3.0 * plain_kl).backward()
    torch.testing.assert_close(ce, plain_ce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kl, plain_kl, rtol=1e-5, atol=1e-6)
    # bf16: the same fp32 gradient, rounded once to bf16, so at most one bf16 step (2^-7 of the value) apart: the
    # fp32 sums behind it are taken in another order on a CPU without AVX512-BF16 (equal to the bit on one with it)
    tolerance = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=0)
    torch.testing.assert_close(fast_grad, logits.grad, **tolerance)


def test_without_neighbours_the_kl_is_zero_and_the_ce_is_the_forget_loss():
    logits, labels, _, _ = joint_case(torch.float32)
    ce, kl = joint_losses(logits[:2, :6], labels)
    assert kl.item() == 0.0
    torch.testing.assert_close(ce, causal_lm_loss(logits[:2, :6], labels))


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_with_a_teacher_the_forget_term_is_the_kl_from_it_in_value_and_gradient(chunk, monkeypatch):
    monkeypatch.setattr(losses, "CHUNK_TOKENS", chunk)
    logits, labels, mask, reference = joint_case(torch.float32)
    teacher = lowered_true_token_log_probs(torch.randn(2, 6, logits.shape[-1]), labels, tau=8.0)
    distill, kl = joint_losses(logits, labels, mask, reference, forget_teacher_log_probs=teacher)
    (2.0 * distill - 3.0 * kl).backward()
    fast_grad = logits.grad.clone()

    logits.grad = None
    plain = distillation_loss(logits[:2, :6], labels, teacher)
    (2.0 * plain - 3.0 * kl_to_reference(logits[2:, :8], reference, mask)).backward()
    torch.testing.assert_close(distill, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, logits.grad, rtol=1e-5, atol=1e-7)


def test_the_teacher_moves_mass_off_the_true_token_and_keeps_the_rest_in_proportion():
    logits = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[2, 0]])
    teacher = lowered_true_token_log_probs(logits, labels, tau=8.0).exp()[0, 0]
    original = logits[0, 0].softmax(-1)
    assert original[0] > 0.8 and teacher[0] < 0.002, "the true next token (0) loses almost all its mass"
    torch.testing.assert_close(teacher[1] / teacher[2], original[1] / original[2])


@pytest.mark.parametrize("chunk", [1, 3, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_references_kept_as_logits_give_the_losses_and_gradients_of_their_log_probabilities(chunk, dtype, monkeypatch):
    """A localization keeps the original model's neighbour and teacher distributions as the logits its forward
    computed (bf16 under autocast: half the memory) and takes the log-softmax chunk by chunk: to the bit what
    the fp32 log-probabilities of the whole tensors give."""
    monkeypatch.setattr(losses, "CHUNK_TOKENS", chunk)
    logits, labels, mask, _ = joint_case(torch.float32)
    generator = torch.Generator().manual_seed(1)
    neighbour_logits = (4 * torch.randn(3, 8, logits.shape[-1], generator=generator)).to(dtype)
    forget_logits = (4 * torch.randn(2, 6, logits.shape[-1], generator=generator)).to(dtype)

    def step(reference, teacher):
        logits.grad = None
        distill, kl = joint_losses(logits, labels, mask, reference, forget_teacher_log_probs=teacher)
        (2.0 * distill - 3.0 * kl).backward()
        return distill, kl, logits.grad.clone()

    as_tensors = step(torch.log_softmax(neighbour_logits.float(), -1),
                      lowered_true_token_log_probs(forget_logits, labels, tau=8.0))
    as_logits = step(LogProbsOfLogits(neighbour_logits), LogProbsOfLogits(forget_logits, labels, 8.0))
    for lazy, whole in zip(as_logits, as_tensors):
        torch.testing.assert_close(lazy, whole, rtol=0, atol=0)


@pytest.mark.parametrize("chunk", [1, 3, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_gradient_written_over_the_logits_is_the_gradient_written_beside_them(chunk, dtype, monkeypatch):
    """``overwrite_logits`` (a localization step, which never reads its logits again) spares a tensor of their
    size: the same gradient to the bit, zero where no loss reaches (the forget rows' last position, the
    positions past the neighbour rows' width)."""
    monkeypatch.setattr(losses, "CHUNK_TOKENS", chunk)
    base, labels, mask, reference = joint_case(dtype)
    mask = mask[:, :7]  # neighbour rows narrower than the joint width
    teacher = lowered_true_token_log_probs(torch.randn(2, 6, base.shape[-1]), labels, tau=8.0)
    gradients = []
    for overwrite in (False, True):
        base.grad = None
        logits = base * 1.0  # a step's logits: computed, not a leaf
        distill, kl = joint_losses(logits, labels, mask, reference[:, :7], forget_teacher_log_probs=teacher,
                                   overwrite_logits=overwrite)
        (2.0 * distill - 3.0 * kl).backward()
        gradients.append(base.grad.clone())
    torch.testing.assert_close(gradients[1], gradients[0], rtol=0, atol=0)
    assert gradients[0][:2, 5:].abs().sum() == 0 and gradients[0][2:, 7:].abs().sum() == 0
