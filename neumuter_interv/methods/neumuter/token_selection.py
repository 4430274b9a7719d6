"""Token-selective forgetting: which forget tokens the ascent term of Eq. 13 trains on.

Eq. 13 raises the loss on every token of a forget sample. A memorized document shares much of its
phrasing with other text the model should keep (the MIT licence's "THE SOFTWARE IS PROVIDED "AS IS"" with
the BSD licences), and ascending on those shared tokens teaches the gates to mute what the documents have
in common, not what is specific to the one being forgotten. Wan et al. (2025, "Not Every Token Needs
Forgetting") and REVS (which edits only a secret's rarest tokens) restrict the forgetting signal to the
tokens that carry the memorized content.

``distinct_targets`` is the n-gram form of that rule: a forget token x_t is trained on unless the n-gram
ending at it (x_{t-n+1} .. x_t) occurs in a reference text (other memorized windows the model should keep,
e.g. the world's anchors, or any text the user supplies). Tokens with fewer than n - 1 tokens before them
are kept (too little context to call them shared), and the first token is never a target. The criterion
(Eq. 17) still scores every token: what is shared may stay, as long as the sample as a whole is forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...errors import NeuMuterError

FORGET_TOKEN_RULES = ("all", "distinct")


def reference_ngrams(reference: Sequence[Sequence[int]], n: int) -> set[tuple[int, ...]]:
    """Every contiguous n-gram of the reference token sequences."""
    return {tuple(seq[i:i + n]) for seq in reference for i in range(len(seq) - n + 1)}


def distinct_targets(forget: Sequence[Sequence[int]], reference: Sequence[Sequence[int]], n: int) -> list[list[bool]]:
    """Per forget sequence, one flag per token: True where the ascent trains on it (see the module text)."""
    if n < 2:
        raise NeuMuterError(f"distinct_ngram must be at least 2 (a token and its context), got {n}")
    shared = reference_ngrams(reference, n)

    def trained(seq: Sequence[int], t: int) -> bool:
        if t == 0:
            return False
        return t < n - 1 or tuple(seq[t - n + 1:t + 1]) not in shared

    return [[trained(seq, t) for t in range(len(seq))] for seq in forget]
