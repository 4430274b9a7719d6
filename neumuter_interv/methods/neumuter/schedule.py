"""Run NeuMuter until the forget set is forgotten (Appendix B.4), relaxing the coefficients in stages.

The paper trains "until all unlearned samples meet the threshold" (Eq. 17) with fixed coefficients
(sparsity 500, KL 5) tuned for 125M-2.7B models. On small models those coefficients never move the
gates (the testbed findings): the KL and L0 terms outweigh the ascent signal of a saturated model.
The schedule keeps the objective of Eq. 13 and only re-weights it:

1. train ``stage_epochs`` epochs with the configured weights, checking the frozen mask (selected
   neurons only, as deployed) against the stopping criterion every ``check_every`` epochs;
2. if it is not met, multiply ``kl_weight`` by ``kl_relax`` (never below ``min_kl_weight``: below
   ~0.1 the mask collapses onto a large share of neurons) and ``sparsity_weight`` by ``sparsity_relax``
   and train again from freshly initialised gates. The L0 weight relaxes faster: Adam normalises each
   gate's gradient, so on a saturated model (tiny ascent gradients) any L0 pull decides the direction.
   Stages do not warm-start: a strong L0 stage drives log_alpha far above its initial value, which
   would only delay the next stage;
3. stop at the first mask that meets the criterion: along this path the weights only ever relax, so the
   first passing mask is the least damaging one the schedule finds; or stop when the budget is spent and
   keep the mask that came closest.

Which mask a check reads out of the gates is the config's rule (``readout.MaskReadout``): a fixed rule, or
``selection="smallest"``, the fewest lowest gates whose mask meets the criterion.

The run reports which coefficients it ended with. ``CoefficientSchedule(max_stages=1)`` is the paper's
fixed setting with Eq. 17 stopping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from ...intervenable import interventions_by_layer
from ...validation import check_number
from .config import NeuMuterConfig
from .localize import LocalizationResult, localize
from .readout import MaskReadout


@dataclass
class CoefficientSchedule:
    stage_epochs: int = 20
    max_stages: int = 6
    kl_relax: float = 0.5
    sparsity_relax: float = 0.1
    min_kl_weight: float = 0.1
    check_every: int = 5

    def __post_init__(self):
        for name in ("stage_epochs", "max_stages", "check_every"):
            check_number(name, getattr(self, name), minimum=1, integer=True)
        for name in ("kl_relax", "sparsity_relax", "min_kl_weight"):
            check_number(name, getattr(self, name), minimum=0)

    def stages(self, config: NeuMuterConfig):
        """(kl_weight, sparsity_weight) of each stage."""
        kl, sparsity = config.kl_weight, config.sparsity_weight
        for _ in range(self.max_stages):
            yield kl, sparsity
            kl, sparsity = max(kl * self.kl_relax, self.min_kl_weight), sparsity * self.sparsity_relax

    @classmethod
    def fixed(cls, epochs: int, check_every: int) -> CoefficientSchedule:
        """The paper's setting (Appendix B.4): the configured coefficients throughout, up to ``epochs`` epochs,
        the criterion checked every ``check_every`` epochs and at the end."""
        return cls(stage_epochs=epochs, max_stages=1, check_every=check_every)

    def to_dict(self) -> dict:
        return asdict(self)


def localize_until_forgotten(model, forget, neighbours, config: NeuMuterConfig, pad_id: int,
                             stop_when: Callable, schedule: CoefficientSchedule,
                             log: Callable[[str], None] = print, forget_targets=None, discount=None):
    """``localize`` in stages until the mask read out of the gates (``readout.MaskReadout``: the config's
    rule, or the smallest mask that meets ``stop_when``) meets ``stop_when``; returns the last stage's gated
    model, the whole run's ``LocalizationResult`` (its ``log_alpha`` are the gates the kept mask was read
    from), a calibration report and the kept mask: the first that met the criterion or, when the budget
    ended first, the one that came closest (``ReadoutCheck.score``).

    ``stop_when`` must be a function of the frozen model (as ``ForgettingCriterion`` is); ``forget_targets``
    goes to ``localize``, ``discount`` (the contrastive ranking's) to the readout.
    """
    report = {"schedule": schedule.to_dict(), "stages": [], "met": False}
    total = LocalizationResult(log_alpha={}, params=config.hard_concrete)
    readout = MaskReadout(model, stop_when, config, discount)
    best: dict = {}
    epoch = 1
    for stage, (kl_weight, sparsity_weight) in enumerate(schedule.stages(config), start=1):
        stage_config = replace(config, kl_weight=kl_weight, sparsity_weight=sparsity_weight, epochs=schedule.stage_epochs)
        checks: list[dict] = []

        def check(at_epoch, record, pv_model, checks=checks, stage_start=epoch):
            done = at_epoch - stage_start + 1
            if done % schedule.check_every and done != schedule.stage_epochs:
                return False
            gates = {layer: gate.log_alpha.detach().float().cpu().clone()
                     for layer, gate in interventions_by_layer(pv_model).items()}
            result = readout(gates)
            checks.append({"epoch": at_epoch, "met": result.met,
                           "neurons_muted_fraction": result.selection.neurons_muted_fraction, **result.numbers,
                           **({"probes": result.probes} if result.probes else {})})
            if not best or result.score > best["check"].score:
                best.update(check=result, gates=gates, epoch=at_epoch)
            return result.met

        log(f"NeuMuter stage {stage}: kl_weight={kl_weight:g}, sparsity_weight={sparsity_weight:g}")
        pv_model, result = localize(model, forget, neighbours, stage_config, pad_id, check, log, first_epoch=epoch,
                                    forget_targets=forget_targets)
        total.history += result.history
        total.steps += result.steps
        total.seconds += result.seconds
        epoch += len(result.history)
        report["stages"].append({"stage": stage, "kl_weight": kl_weight, "sparsity_weight": sparsity_weight,
                                 "epochs": len(result.history), "checks": checks})
        report.update(final_kl_weight=kl_weight, final_sparsity_weight=sparsity_weight)
        if best and best["check"].met:
            report["met"] = True
            break
    total.stopped_early = report["met"]
    total.log_alpha = best["gates"]
    kept = best["check"]
    report.update(kept_epoch=best["epoch"], kept_neurons=kept.selection.neurons_muted)
    if not report["met"]:
        log(f"NeuMuter: the budget ended before the criterion held; keeping the closest mask (epoch {best['epoch']}, "
            f"{kept.selection.neurons_muted} neurons, {_numbers_text(kept.numbers)})")
    return pv_model, total, report, kept.selection


def _numbers_text(numbers: dict) -> str:
    return ", ".join(f"{key} {value:.3f}" for key, value in numbers.items() if isinstance(value, float)) or "no check"
