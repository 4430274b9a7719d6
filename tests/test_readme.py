"""The README's quickstart runs as written, on the packaged SmolLM2."""

import re

from conftest import REPO


def quickstart() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- quickstart -->\n```python\n(.*?)```", readme, re.S)
    assert found, "the README marks its quickstart with <!-- quickstart -->"
    return found.group(1)


def test_the_readme_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(quickstart(), "README quickstart", "exec"), {})
    printed = capsys.readouterr().out
    assert "muted 154 FFN neurons (0.33%)" in printed  # 1% of the 10 x 1,536 gated, of all 30 layers' 46,080
    assert (tmp_path / "my-run" / "selection.json").is_file()
    assert (tmp_path / "my-adapter" / "adapter_config.json").is_file()
    assert printed.strip().splitlines()[-1].startswith("[")  # the generated continuation, a list of one text
