"""Worlds are looked up by name: a world registered from outside the package (here a toy world over the
tiny people testbed, with its own title, preset and option) is available to ``demo`` and ``compare`` with
no other change, and options of one world are refused with another."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import pytest

from neumuter_interv.cli import main
from neumuter_interv.errors import NeuMuterError
from neumuter_interv.methods.neumuter import CoefficientSchedule
from neumuter_interv.methods.registry import method_budgets
from neumuter_interv.testbed import TestbedConfig
from neumuter_interv.worlds import WORLDS, WorldSpec, prepare_people_world, world_spec


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--toy-people", type=int, default=0, help="toy world: unused, here to be refused elsewhere")


TOY = WorldSpec(
    name="toy",
    title="a toy world registered by a test",
    help="the tiny people testbed under another name",
    settings=lambda size: TestbedConfig.tiny(),
    prepare=prepare_people_world,
    demo=lambda size: {"schedule": CoefficientSchedule(stage_epochs=4, max_stages=1, check_every=2),
                       "attribution_baseline": False, "curve_points": 0, "el_prefix_stride": 8},
    comparison=lambda size: {"budgets": method_budgets(fine_tuning_epochs=2)},
    targets={"forgotten_fraction_at_least": 0.5},
    retain_set="the toy's retain people",
    add_arguments=_add_arguments,
    options=("toy_people",),
)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(WORLDS, "toy", TOY)
    return TOY


def run_cli(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main(list(args))


def test_a_registered_world_runs_in_demo_and_compare_with_its_own_title_and_targets(toy_registered, tmp_path):
    assert run_cli("demo", "--world", "toy", "--out", str(tmp_path / "demo"), "--no-progress") in (0, 1)
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["world"] == "toy" and set(metrics["targets"]) == {"forgotten_fraction"}
    assert (tmp_path / "demo" / "report.md").read_text().startswith("# NeuMuter on a toy world registered by a test")

    assert run_cli("compare", "--world", "toy", "--methods", "ga", "--out", str(tmp_path / "compare"),
                   "--no-progress") == 0
    summary = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    assert summary["world"] == "toy" and summary["methods"]["ga"]["settings"]["max_epochs"] == 2
    assert summary["settings"]["toy"]["n_forget"] == TestbedConfig.tiny().n_forget


def test_an_option_of_one_world_is_refused_with_another(toy_registered, tmp_path, capsys):
    assert main(["demo", "--world", "people", "--toy-people", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--toy-people applies to the toy world, not the people world" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_an_unknown_world_names_the_registered_ones():
    with pytest.raises(NeuMuterError, match="unknown world 'moon': choose from real, people, tofu-real"):
        world_spec("moon")


@pytest.mark.parametrize("world", list(WORLDS))
def test_the_comparison_scores_each_world_as_its_demo_does_so_both_keep_one_neumuter_mask(world):
    """The readout's criterion is scored in the world's settings: a comparison that scored in another precision
    would keep another mask than the demo on the same world (before 2026-12-06 the real world's demo kept 1,503
    neurons in fp32 where the comparison kept 1,298 in bf16)."""
    from neumuter_interv.comparison import ComparisonConfig
    from neumuter_interv.demo import DemoConfig

    assert ComparisonConfig.for_world(world).demo.world_settings == DemoConfig.for_world(world).world_settings
