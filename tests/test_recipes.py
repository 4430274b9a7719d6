"""The recipes report bad input the way the CLI does: one line naming the script and the problem, exit
code 2, nothing written, and before any model is loaded."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "recipes" / name), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_a_forget_size_beyond_what_the_world_keeps_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "sizes"
    result = run_recipe("sensitivity_study.py", "--study", "forget-size", "--values", "1,99", "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sensitivity_study.py: error: the real world holds at most 16 forget samples; --values asks for 99"]
    assert not out.exists()


def test_values_of_the_wrong_kind_are_named(tmp_path):
    result = run_recipe("sensitivity_study.py", "--study", "neighbours", "--values", "1,two", "--out",
                        str(tmp_path / "k"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--values must be ints separated by commas, got '1,two'" in result.stderr


def test_each_studied_value_passes_its_settings_check_before_any_work(tmp_path):
    result = run_recipe("sensitivity_study.py", "--study", "ratio", "--values", "0.5,0", "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "replacement_ratio" in result.stderr and "Traceback" not in result.stderr
    result = run_recipe("sensitivity_study.py", "--study", "forget-size", "--values", "0,4", "--out",
                        str(tmp_path / "n"))
    assert result.returncode == 2 and "forget size" in result.stderr and "Traceback" not in result.stderr


def test_a_study_never_writes_over_the_earlier_results_it_keeps(tmp_path):
    earlier = tmp_path / "separability"
    earlier.mkdir()
    (earlier / "separability.json").write_text('{"variants": {}}')
    result = run_recipe("separability_study.py", "--variants", "base", "--keep", str(earlier / "separability.json"),
                        "--out", str(earlier), "--overwrite")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--keep" in result.stderr
    assert (earlier / "separability.json").read_text() == '{"variants": {}}'


def test_kept_results_that_are_missing_or_foreign_are_named_before_any_work(tmp_path):
    missing = run_recipe("separability_study.py", "--variants", "base", "--keep", str(tmp_path / "none.json"),
                         "--out", str(tmp_path / "out"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "cannot be read" in missing.stderr
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"worlds": {}}')  # the scale study's results, not the separability study's
    result = run_recipe("separability_study.py", "--variants", "base", "--keep", str(foreign),
                        "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "has no 'variants' entries" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_layer_study_runs_on_the_worlds_that_say_how_and_names_the_others(tmp_path):
    """Each world's Table 3 setting lives in its ``WorldSpec.layer_study``: the people testbed's own fixed
    coefficients in one stage, the real world the demo's NeuMuter; a world without one is not offered."""
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        from layer_selection_study import study_config
    finally:
        sys.path.remove(str(ROOT / "recipes"))
    people, neumuter, specs = study_config("people", "tiny", None, None, None, None)
    assert specs.split(";")[:2] == ["all", "0-1"] and neumuter.kl_weight == 0.3 and neumuter.sparsity_weight == 0
    assert people.schedule.max_stages == 1 and people.el_prefix_stride == 2
    real, neumuter, specs = study_config("real", "tiny", None, 3, None, 7.0)
    assert "10-19" in specs and real.schedule.stage_epochs == 3 and neumuter.sparsity_weight == 7.0
    _, neumuter, _ = study_config("real", "tiny", None, None, 20.0, None, forget_loss="ascent")
    assert (neumuter.forget_loss, neumuter.kl_weight) == ("ascent", 20.0)
    result = run_recipe("layer_selection_study.py", "--world", "tofu-real", "--out", str(tmp_path / "layers"))
    assert result.returncode == 2 and "invalid choice: 'tofu-real'" in result.stderr
    assert not (tmp_path / "layers").exists()


def test_the_gate_curve_names_a_directory_without_gates_before_loading_anything(tmp_path):
    out = tmp_path / "curve"
    result = run_recipe("gate_curve.py", "--run", str(tmp_path), "--out", str(out))
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().splitlines() == [
        f"gate_curve.py: error: {tmp_path} is not a NeuMuter run with trained gates (needs gates.safetensors and config.json)"]
    result = run_recipe("gate_curve.py", "--run", str(tmp_path), "--fractions", "0.01,2", "--out", str(out))
    assert result.stderr.strip().splitlines() == [
        "gate_curve.py: error: --fractions are shares of the FFN neurons in (0, 1], got 2.0"]


def test_each_specificity_variant_is_defined_whatever_the_preset_so_committed_commands_reproduce():
    """The variants measured on the ascent preset (until 2026-12-06) set it themselves; ``default`` is the demo
    as it is, today the distilled forget term at KL weight 5 within 48 epochs."""
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        from specificity_study import VARIANTS

        from neumuter_interv.demo import DemoConfig
    finally:
        sys.path.remove(str(ROOT / "recipes"))

    def configured(name):
        config = DemoConfig.for_world("real")
        VARIANTS[name](config)
        return (config.neumuter.forget_loss, config.neumuter.kl_weight, config.schedule.stage_epochs,
                config.neumuter.anchors_per_sample)

    assert configured("ascent") == ("ascent", 20.0, 24, 0)
    assert configured("anchors") == ("ascent", 20.0, 24, 1) and configured("anchors-long") == ("ascent", 20.0, 48, 1)
    assert configured("distill") == ("distill", 20.0, 24, 0)
    assert configured("distill-kl5") == ("distill", 5.0, 24, 0)
    assert configured("default") == configured("distill-kl5-long") == ("distill", 5.0, 48, 0)
    assert configured("default+anchors") == ("distill", 5.0, 48, 1)
    sparser = DemoConfig.for_world("real")
    VARIANTS["default-sparser"](sparser)
    assert sparser.neumuter.sparsity_weight == 4 * DemoConfig.for_world("real").neumuter.sparsity_weight == 20.0
