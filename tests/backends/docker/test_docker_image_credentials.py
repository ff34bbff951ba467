"""A package index that needs a token: the runner image builds, and no layer or history holds it.

The index is real (an HTTP server on 127.0.0.1 that demands basic authentication) and so is the
build (dockerd, the local base image). The image is then read the way anyone who pulls it
could: ``docker history --no-trunc``, ``docker image inspect`` and every byte of ``docker save``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from docker_fixtures import WHEEL

pytestmark = pytest.mark.docker


def assert_image_holds_no(token: str, tag: str, tmp_path: Path) -> None:
    history = subprocess.run(
        ["docker", "history", "--no-trunc", tag], capture_output=True, text=True, check=True
    )
    assert token not in history.stdout
    inspect = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True, check=True)
    assert token not in inspect.stdout
    archive = tmp_path / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), tag], check=True)
    assert token.encode() not in archive.read_bytes()  # layers are uncompressed tars
    archive.unlink()


@pytest.mark.parametrize(
    ("line", "wheelhouse"),
    [
        ("--index-url {url}/simple/\nbatcat-probe==1.0", False),  # asked to build online, too
        ("batcat-probe @ {url}/files/" + WHEEL, None),
    ],
    ids=["index-url-line", "direct-url"],
)
def test_index_token_reaches_no_layer_and_no_history(
    runner, engine, index, tmp_path, monkeypatch, line, wheelhouse
):
    from batcat_nb.backends.docker import image as images

    monkeypatch.setenv("PIP_INDEX_URL", f"{index.url}/simple/")  # as CodeArtifact sets it
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(line.format(url=index.url) + "\n")

    built = images.ensure_image(
        engine,
        base_image=runner.image.base_image,
        requirements=requirements,
        wheelhouse=wheelhouse,
        rebuild=True,
    )

    probe = engine.containers.run(
        built.tag,
        ["-c", "import batcat_probe; print(batcat_probe.VALUE)"],
        entrypoint=["python"],
        remove=True,
    )
    assert probe.strip() == b"42"  # the package came from the index that needs the token
    assert_image_holds_no(index.token, built.tag, tmp_path)


def test_credential_line_that_names_no_package_is_refused_in_one_line(runner, engine, index, tmp_path):
    from batcat_nb.backends.docker import image as images
    from batcat_nb.errors import UsageError

    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{index.url}/files/{WHEEL}\n")

    with pytest.raises(
        UsageError, match="carries a credential and names no package; write it as NAME @ URL"
    ) as error:
        images.ensure_image(engine, base_image=runner.image.base_image, requirements=requirements)
    assert index.token not in str(error.value)
