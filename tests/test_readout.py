"""The run-to-the-rule readout: the smallest mask along the trained gates' ranking that meets the stopping
criterion, found by bisection, capped, and recorded probe by probe."""

import pytest
import torch
from conftest import FORGET, RETAIN

from neumuter_interv.errors import NeuMuterError
from neumuter_interv.hard_concrete import HardConcreteParams
from neumuter_interv.intervenable import interventions_by_layer
from neumuter_interv.methods.neumuter import CoefficientSchedule, NeuMuter, NeuMuterConfig
from neumuter_interv.methods.neumuter.readout import GateRanking, MaskReadout, smallest_passing_count


def quiet(message):
    pass


def muted_count(frozen) -> int:
    return sum(len(scaling.neuron_indices) for scaling in interventions_by_layer(frozen).values())


class MutesAtLeast:
    """A stand-in criterion with a known answer: met when the frozen mask mutes at least ``need`` neurons;
    its necessary condition (the MA half) holds from ``necessary_from`` on. Records what it was asked."""

    def __init__(self, need: int, necessary_from: int | None = None):
        self.need, self.necessary_from = need, necessary_from if necessary_from is not None else need
        self.asked: list[tuple[str, int]] = []
        self.last: dict = {}

    def __call__(self, frozen) -> bool:
        count = muted_count(frozen)
        self.asked.append(("criterion", count))
        self.last = {"forgotten_fraction": min(1.0, count / self.need), "ma_passing_fraction": 1.0}
        return count >= self.need

    def necessary(self, frozen) -> bool:
        count = muted_count(frozen)
        self.asked.append(("necessary", count))
        self.last = {"forgotten_fraction": 0.0, "ma_passing_fraction": min(1.0, count / self.necessary_from)}
        return count >= self.necessary_from


@pytest.mark.parametrize("answer", [1, 2, 17, 63, 64])
def test_bisection_finds_the_smallest_passing_count_in_logarithmic_probes(answer):
    probed = []

    def passes(count):
        probed.append(count)
        return count >= answer

    assert smallest_passing_count(passes, 1, 64) == answer
    assert probed[0] == 64 and len(probed) <= 7 + 1
    assert smallest_passing_count(lambda c: False, 1, 64) is None


def ranked_gates(model):
    """Layer 0: gates at 30 distinct closing levels on neurons 0-29 (neuron 0 lowest), layer 1 all open."""
    log_alpha = {0: torch.full((64,), 6.0), 1: torch.full((64,), 6.0)}
    log_alpha[0][:30] = torch.linspace(-5.0, 0.5, 30)
    return log_alpha


def test_the_ranking_puts_the_lowest_gates_first_and_leaves_open_gates_out(make_model):
    model = make_model("gpt_neo")  # 2 layers x 64 neurons
    ranking = GateRanking.of(model, ranked_gates(model), HardConcreteParams())
    assert ranking.size == 30 and ranking.gated == 128
    selection = ranking.selection(5)
    assert selection.layers[0].indices == [0, 1, 2, 3, 4] and selection.layers[1].indices == []
    assert selection.layers[0].scales[0] == 0.0
    assert 0 < ranking.selection(30).layers[0].scales[-1] < 1  # the trained gate value is kept, not zeroed


def test_the_readout_finds_the_smallest_mask_that_meets_the_criterion_and_records_its_path(make_model):
    model = make_model("gpt_neo")
    criterion = MutesAtLeast(need=9, necessary_from=6)
    config = NeuMuterConfig(selection="smallest", max_fraction=0.25)  # cap: 32 of 128 gated, 30 ranked
    check = MaskReadout(model, criterion, config)(ranked_gates(model))
    assert check.met and check.selection.neurons_muted == 9
    assert check.selection.rule["k"] == 9 and check.selection.rule["cap"] == 30
    kinds = [probe["check"] for probe in check.probes]
    assert kinds[0] == "necessary" and check.probes[0]["count"] == 30  # the cap first
    assert [p["count"] for p in check.probes if p["check"] == "criterion"][0] == 6  # confirmed from the MA answer up
    assert [(p["check"], p["count"]) for p in check.probes] == criterion.asked
    assert all(p["met"] == (p["count"] >= (9 if p["check"] == "criterion" else 6)) for p in check.probes)
    assert len(kinds) <= 2 * (5 + 1)


def test_the_readout_never_mutes_past_its_cap(make_model):
    model = make_model("gpt_neo")
    criterion = MutesAtLeast(need=20)
    check = MaskReadout(model, criterion, NeuMuterConfig(selection="smallest", max_fraction=0.1))(ranked_gates(model))
    assert not check.met
    assert check.selection.neurons_muted == 12  # floor(0.1 * 128): the cap's mask, reported, never more
    assert max(count for _, count in criterion.asked) == 12
    assert criterion.asked == [("necessary", 12)]  # nothing under the cap can pass when the cap does not


def test_smallest_needs_a_criterion(memorized):
    model, tokenizer = memorized
    with pytest.raises(NeuMuterError, match="smallest"):  # refused before any work
        NeuMuter(NeuMuterConfig(selection="smallest", progress=False)).run(model, tokenizer, FORGET[:1])


def test_a_run_trains_until_a_mask_within_the_cap_meets_the_criterion(memorized):
    model, tokenizer = memorized
    criterion = MutesAtLeast(need=4)
    config = NeuMuterConfig(batch_size=1, kl_weight=0.3, sparsity_weight=0, learning_rate=0.3, selection="smallest",
                            max_fraction=0.05, progress=False)
    run = NeuMuter(config, stop_when=criterion, schedule=CoefficientSchedule(stage_epochs=30, max_stages=1,
                   check_every=1), log=quiet).run(model, tokenizer, FORGET, RETAIN)
    checks = run.calibration["stages"][0]["checks"]
    assert run.calibration["met"] and checks[-1]["met"] and not any(c["met"] for c in checks[:-1])
    assert run.selection.neurons_muted == 4  # the smallest count that meets it, not more
    assert run.calibration["kept_epoch"] == checks[-1]["epoch"] and run.calibration["kept_neurons"] == 4
    assert checks[-1]["probes"][-1] == {"count": 4, "check": "criterion", "met": True, "forgotten_fraction": 1.0,
                                        "ma_passing_fraction": 1.0}
    assert run.localization.stopped_early and len(run.localization.history) == checks[-1]["epoch"]


def test_when_the_budget_ends_first_the_run_says_so_and_keeps_the_closest_mask(memorized):
    model, tokenizer = memorized
    messages = []
    criterion = MutesAtLeast(need=10_000)  # more than the cap: never met
    config = NeuMuterConfig(batch_size=1, kl_weight=0.3, sparsity_weight=0, learning_rate=0.3, selection="smallest",
                            max_fraction=0.02, progress=False)
    run = NeuMuter(config, stop_when=criterion, schedule=CoefficientSchedule(stage_epochs=4, max_stages=1,
                   check_every=2), log=messages.append).run(model, tokenizer, FORGET, RETAIN)
    assert not run.calibration["met"] and not run.localization.stopped_early
    cap = int(0.02 * 2 * 256)  # the memorized model: 2 layers x 256 neurons, all gated
    assert 0 < run.selection.neurons_muted <= cap
    assert any("budget ended before the criterion held" in m for m in messages)


def test_the_per_layer_ranking_takes_the_same_count_from_every_layer():
    from neumuter_interv.methods.neumuter.selection import muting_order

    probability = torch.tensor([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.05, 0.9])
    owner = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    assert muting_order(probability, owner).tolist() == [6, 0, 1, 2, 3, 4, 5, 7]
    assert muting_order(probability, owner, "per_layer").tolist() == [6, 0, 3, 1, 4, 7, 2, 5]


def test_a_per_layer_readout_mutes_in_every_gated_layer(make_model):
    model = make_model("gpt_neo")
    log_alpha = ranked_gates(model)
    log_alpha[1][:10] = 0.0  # layer 1: ten gates moved, all above layer 0's lowest
    ranking = GateRanking.of(model, log_alpha, HardConcreteParams(), ranking="per_layer")
    selection = ranking.selection(6)
    assert selection.layers[0].indices == [0, 1, 2] and selection.layers[1].indices == [0, 1, 2]
    assert GateRanking.of(model, log_alpha, HardConcreteParams()).selection(6).layers[1].indices == []


def test_the_contrastive_ranking_puts_neurons_the_reference_texts_use_behind_equally_closed_ones():
    from neumuter_interv.methods.neumuter.selection import contrastive_discount, flat_discount, muting_order

    probability = torch.tensor([0.1, 0.2, 0.3, 0.5])
    owner = torch.tensor([0, 0, 1, 1])
    discount = contrastive_discount({0: torch.tensor([10.0, 0.0]), 1: torch.tensor([1.0, 2.0])}, weight=1.0)
    assert torch.allclose(flat_discount(discount, [0, 1]), torch.tensor([1.0, 0.0, 1 / 3, 2 / 3]))  # percentiles
    # keys 0.1 + 1, 0.2 + 0, 0.3 + 1/3, 0.5 + 2/3: the most used neuron goes last though its gate is lowest
    assert muting_order(probability, owner, "contrastive", flat_discount(discount, [0, 1])).tolist() == [1, 2, 0, 3]
    no_weight = contrastive_discount({0: torch.tensor([10.0, 0.0]), 1: torch.tensor([1.0, 2.0])}, weight=0.0)
    assert muting_order(probability, owner, "contrastive", flat_discount(no_weight, [0, 1])).tolist() == [0, 1, 2, 3]
    with pytest.raises(NeuMuterError, match="discount"):
        muting_order(probability, owner, "contrastive")
    with pytest.raises(NeuMuterError, match="gated layer"):
        flat_discount(discount, [0, 1, 2])


def test_a_contrastive_run_ranks_by_its_discount_and_saves_it_with_the_gates(memorized, tmp_path):
    from neumuter_interv.methods.neumuter.method import load_run

    model, tokenizer = memorized
    config = NeuMuterConfig(epochs=2, batch_size=1, learning_rate=0.3, kl_weight=0.3, sparsity_weight=0,
                            selection="top_k", top_k=6, ranking="contrastive", progress=False)
    with pytest.raises(NeuMuterError, match="reference_texts"):  # refused before any work
        NeuMuter(config, log=quiet).run(model, tokenizer, FORGET[:1], RETAIN[:1])
    run = NeuMuter(config, reference_texts=RETAIN[1:3], log=quiet).run(model, tokenizer, FORGET[:1], RETAIN[:1])
    assert sorted(run.ranking_discount) == sorted(run.localization.log_alpha)
    expected = GateRanking.of(model, run.localization.log_alpha, config.hard_concrete, "contrastive",
                              run.ranking_discount).selection(6)
    assert {layer: s.indices for layer, s in run.selection.layers.items()} == {
        layer: s.indices for layer, s in expected.layers.items()}
    plain = GateRanking.of(model, run.localization.log_alpha, config.hard_concrete).selection(6)
    assert plain.layers != expected.layers  # the discount changed which neurons come first
    run.save(tmp_path / "run")
    loaded = load_run(tmp_path / "run", model)
    assert all(torch.equal(loaded.ranking_discount[layer], run.ranking_discount[layer]) for layer in run.ranking_discount)
    (tmp_path / "run" / "ranking_discount.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(NeuMuterError, match="ranking_discount"):
        load_run(tmp_path / "run", model)
    (tmp_path / "run" / "ranking_discount.safetensors").unlink()
    with pytest.raises(NeuMuterError, match="has no ranking_discount"):
        load_run(tmp_path / "run", model)
