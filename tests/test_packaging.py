"""The package as pip installs it from a wheel, not from this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO

DEFINITION = ("Dockerfile", ".dockerignore", "runtime-requirements.txt")


def test_an_installed_wheel_carries_the_runner_image_definition(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("batcat_nb-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"batcat_nb/docker/{name}" for name in DEFINITION} <= set(names)
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "batcat_nb").rglob("*.py")}
    assert "batcat_nb/py.typed" in names and sources <= set(names), sources - set(names)

    venv = tmp_path / "venv"
    alone = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no checkout on the path
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--no-deps", wheel],
        check=True,
        capture_output=True,
        env=alone,
    )
    found = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "from batcat_nb.backends.docker.image import definition_dir; print(definition_dir())",
        ],
        cwd=tmp_path,  # away from the checkout's docker/
        env=alone,
        capture_output=True,
        text=True,
        check=True,
    )
    installed = Path(found.stdout.strip())
    assert installed.is_relative_to(venv) and installed.parts[-3:] == ("site-packages", "batcat_nb", "docker")
