"""``environment.txt``: the distributions importable where the job ran, read without pip."""

from __future__ import annotations

import sys

from batcat_nb import environment


def test_installed_reads_names_and_versions_from_sys_path(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "Foo_Bar-1.2.3.dist-info").mkdir(parents=True)
    (site / "legacy.egg-info").mkdir()
    (site / "legacy.egg-info" / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: legacy\nVersion: 0.9\n")
    (site / "foo_bar").mkdir()  # a package folder, not a distribution
    shadowed = tmp_path / "later"
    (shadowed / "foo_bar-9.0.dist-info").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(site), str(shadowed), str(tmp_path / "missing")])

    assert environment.installed() == {"foo-bar": "1.2.3", "legacy": "0.9"}  # the first on the path wins
    text = environment.describe()
    assert text.splitlines()[0].startswith(f"# python {sys.version_info.major}.{sys.version_info.minor}.")
    assert text.splitlines()[1:] == ["foo-bar==1.2.3", "legacy==0.9"]


def test_this_environment_lists_what_batcat_runs_with():
    installed = environment.installed()
    assert {"papermill", "nbformat", "jupytext", "mlflow-skinny"} <= installed.keys()
