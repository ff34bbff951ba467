"""``batcat build --wheelhouse`` and ``[tool.batcat.docker] wheelhouse = true``, as a user runs them.

The one requirement, ``batcat-probe``, is served only by a package index on 127.0.0.1
(``PIP_INDEX_URL``), which a build on the host's network could reach as well: so without
``--wheelhouse`` the build would go online (and fail, that index having nothing else). The
build runs with a cache of its own, so that this machine's remembered "no index is reachable
from a container" does not decide for it; only the downloaded wheels are shared (they are
keyed by content).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import output_notebook, run_batcat, write_notebook
from docker_fixtures import Index, Runner, run_batcat_build

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class Built:
    """One ``batcat build --wheelhouse``: what it printed, and the environment it ran in."""

    def __init__(self, done: subprocess.CompletedProcess[str], env: dict[str, str], project: Path) -> None:
        self.done, self.env, self.project = done, env, project
        self.tag = done.stdout.splitlines()[0] if done.stdout else ""


@pytest.fixture(scope="module")
def built(runner: Runner, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from batcat_nb.config import cache_dir

    served = Index(tmp_path_factory.mktemp("index"), token=None)
    project = tmp_path_factory.mktemp("project")
    (project / "requirements.txt").write_text("batcat-probe==1.0\n")
    cache = tmp_path_factory.mktemp("cache")
    shared = cache_dir() / "wheelhouse"
    shared.mkdir(parents=True, exist_ok=True)
    (cache / "wheelhouse").symlink_to(shared)
    env = {**os.environ, "PIP_INDEX_URL": f"{served.url}/simple/", "BATCAT_CACHE_DIR": str(cache)}
    done = run_batcat_build(
        "--wheelhouse",
        "--rebuild",  # an image of this very source may exist: the build is what is tested
        "--requirements",
        "requirements.txt",
        "--base-image",
        runner.image.base_image,
        cwd=project,
        env=env,
    )
    yield Built(done, env, project)
    served.server.shutdown()


def test_build_with_wheelhouse_installs_offline_what_only_a_local_index_serves(built, engine):
    assert built.done.returncode == 0, built.done.stderr
    image = engine.images.get(built.tag)
    assert built.tag.startswith("batcat-runner:")
    assert f"  digest  {image.id}" in built.done.stdout.splitlines()
    assert "  built " in built.done.stdout

    probe = engine.containers.run(
        built.tag,
        ["-c", "import batcat_probe; print(batcat_probe.VALUE)"],
        entrypoint=["python"],
        remove=True,
    )
    assert probe.strip() == b"42"
    # Every install step ran offline, from the wheels resolved on this host: `docker history`
    # keeps the build arguments each step saw.
    history = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", built.tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    installs = [step for step in history if "pip install $src" in step]
    assert len(installs) == 2, history  # the runtime stack and the project's requirements
    assert all("PIP_OFFLINE=1" in step and "INDEX_URL= " in step for step in installs), installs


def test_pyproject_wheelhouse_run_reuses_the_image_and_imports_the_package(
    built, runner, engine, experiment, runs_of, tracking_uri
):
    assert built.done.returncode == 0, built.done.stderr
    project = built.project  # its requirements.txt, beside the notebook, is the build's
    (project / "pyproject.toml").write_text(
        f'[tool.batcat.docker]\nwheelhouse = true\nbase_image = "{runner.image.base_image}"\n'
    )
    nb = write_notebook(
        project / "probe.ipynb", None, "import batcat_probe\nprint('probe', batcat_probe.VALUE)"
    )
    created = engine.images.get(built.tag).attrs["Created"]

    done = run_batcat(
        "run", str(nb), "--backend", "docker", "-e", experiment, "--tracking-uri", tracking_uri,
        cwd=project, env=built.env, timeout=600,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "probe 42" in output_notebook(done.stdout).read_text()
    [run] = runs_of(experiment)
    assert run.data.tags["batcat.image"] == built.tag  # the same content, the same image
    assert engine.images.get(built.tag).attrs["Created"] == created  # not built a second time
