"""Are the forget people's memories held by neurons of their own? Measures for the separability study.

NeuMuter's premise (Hou et al., 2025, Section 3) is that a few FFN neurons hold the memory of the forget
samples specifically, so muting them forgets those samples and little else; TOFU (Maini et al., 2024)
likewise assumes that forget and retain authors can be told apart inside the model. Two measures test
this on a model and its forget and retain sets:

- ``neuron_attribution`` / ``attribution_ratio`` (``methods.attribution``, the attribution baseline's
  machinery): how much each FFN neuron contributes to the loss on the
  forget texts relative to the retain texts (|activation x gradient|, a first-order estimate of the loss
  change when the neuron is muted). A neuron specific to the forget people has a ratio far above 1, and
  far above what two halves of the retain people give each other.
- ``specificity``: what a mask actually did, from two ``evaluate`` results: the forget MA drop divided by
  the retain MA drop (1 = both sets forgotten alike, the shared "memorization machinery" muted).

``methods.attribution.top_fraction_selection`` turns attribution scores into a mask that deploys like
NeuMuter's, so that masks from attribution and from trained gates are compared at the same size.

``recipes/separability_study.py`` runs both over variants of the testbed world.
"""

from __future__ import annotations

from collections.abc import Mapping


def specificity(before: Mapping, after: Mapping, min_retain_drop: float = 0.01) -> dict[str, float]:
    """Forget and retain MA drops of a mask, their ratio, and the relative change of held-out PPL.

    A retain drop under ``min_retain_drop`` (one MA point: about the noise of MA over a few dozen
    biographies) counts as that floor, so an untouched retain set gives a large finite specificity
    instead of a division by zero (or a sign flip when retain MA rose).
    """
    forget_drop = before["forget_ma"] - after["forget_ma"]
    retain_drop = before["retain_ma"] - after["retain_ma"]
    return {
        "forget_ma_drop": forget_drop,
        "retain_ma_drop": retain_drop,
        "specificity": forget_drop / max(retain_drop, min_retain_drop),
        "heldout_ppl_change": after["heldout_ppl"] / before["heldout_ppl"] - 1,
    }
