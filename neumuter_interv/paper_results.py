"""What Hou et al. (2025) report, carried as facts to quote beside our own numbers (never compared as if measured
in the same setting: their model, data, utility suites and the origin of the memorization differ from ours).

``PaperRows`` is one block of a paper table; a world names the block that matches its setting
(``WorldSpec.paper_rows``) and ``compare`` prints it beside its own rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PAPER_COLUMNS = (("forget_el10", "EL10"), ("forget_ma", "MA"), ("classification_acc", "ACC"),
                 ("dialogue_f1", "F1"), ("dialogue_ce", "CE"), ("ppl", "PPL"))
"""The columns of the paper's Table 2 (score key, header). Rates are fractions as in our reports (the paper prints
percentages); ``ppl`` is the mean of the Pile and WikiText perplexities (Table 7), which our reports give
separately as ``pile_ppl`` and ``wikitext_ppl``."""


@dataclass(frozen=True)
class PaperRows:
    """Rows of one block of a paper table: ``rows[method]`` maps a score key of ``PAPER_COLUMNS`` to the paper's
    mean; ``method`` names are the registry's (``"original"`` for the model before unlearning)."""

    source: str  # where in the paper, and what the rows are
    differences: str  # what differs from the setting they are quoted beside
    rows: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.source, "differences": self.differences,
                "rows": {name: dict(values) for name, values in self.rows.items()}}


def _row(el10: float, ma: float, acc: float, f1: float, ce: float, ppl: float) -> dict[str, float]:
    """One row as the paper prints it (percentages for EL10, MA, ACC and F1) in our units (fractions)."""
    return {"forget_el10": el10 / 100, "forget_ma": ma / 100, "classification_acc": acc / 100,
            "dialogue_f1": f1 / 100, "dialogue_ce": ce, "ppl": ppl}


TABLE_2_GPT_NEO_125M = PaperRows(
    source="Hou et al. (2025), Table 2, GPT-Neo 125M: the paper's means (it prints a +- spread without saying over "
           "how many runs) for Training Data Extraction Challenge samples, each method run until every sample meets "
           "Eq. 17 (Appendix B.4)",
    differences="their model is GPT-Neo 125M, which memorized the samples in pretraining on the Pile; ours is "
                "SmolLM2-135M continued-pretrained on them here. Their ACC averages nine classification tasks "
                "(ours: LAMBADA and PubMedQA), their F1 and CE four dialogue sets on their full test splits (ours: "
                "the first dialogues of each), their PPL the Pile and WikiText validation texts (ours: the first "
                "texts of each, the mean of our two PPL columns). The paper has no retrain oracle, retain-memorized "
                "MA or forget quality.",
    rows={
        "original": _row(33.81, 78.64, 43.09, 9.94, 3.77, 31.00),
        "ga": _row(0.13, 29.43, 41.43, 1.42, 6.77, 638.23),
        "ta": _row(0.20, 29.73, 36.06, 5.64, 4.81, 120.15),
        "sga": _row(0.04, 29.37, 40.93, 1.32, 6.96, 803.82),
        "di": _row(0.10, 29.33, 42.67, 9.83, 3.88, 39.90),
        "ig": _row(1.01, 29.11, 40.50, 5.55, 5.10, 200.85),
        "neumuter": _row(2.62, 28.63, 42.67, 10.23, 3.83, 39.17),
    },
)
"""Table 2's GPT-Neo 125M block, the setting of the extraction world (``--world extraction``)."""
