"""The runner image: ``docker/Dockerfile`` built under a content-addressed tag.

The tag ``batcat-runner:<hash>`` hashes what goes into the image: the base image's id, the
image definition, the project's requirements, the pinned MLflow and batcat_nb's own source. An
unchanged environment is found by that tag without downloading or building anything; a
changed notebook never needs a new image, because notebooks travel as job inputs.

Where the build cannot reach a package index (or with ``wheelhouse=True``), wheels are
resolved on the host for the image's own Python and installed with ``--no-index``.

Credentials never enter the image: when the package index URL (``PIP_INDEX_URL``, pip.conf)
or a requirement line carries one, the wheels are always resolved on the host, where pip
reads them as usual, and the copy of the requirements in the image names packages only. The
docker SDK's build API has no BuildKit secrets (``--secret``), and a build argument is kept in
``docker history``: resolving on the host is what leaves no layer, history entry or pushed
image holding a token.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..._version import PACKAGE_DIR, __version__
from ...config import cache_dir
from ...contract import PLATFORM, RUNNER_REPOSITORY
from ...errors import ImageBuildError, UsageError
from ...provenance import project_dir
from ...redact import mask_uri

log = logging.getLogger("batcat_nb")

DEFAULT_BASE_IMAGE = "python:3.11-slim"
LOCAL_BASE_IMAGE = "batcat-base:bookworm"  # what scripts/provision_docker.sh builds
REQUIREMENTS_FILE = "requirements.txt"
LABEL_KEY = "io.batcat.key"
TAG_IMAGE_INPUTS = "batcat.image.inputs"  # the run's tag: ImageInputs.record() as JSON
_DEFINITION = ("Dockerfile", ".dockerignore", "runtime-requirements.txt")
_LAYERS = ("runtime", "user", "batcat_nb")
_PULL_RETRY_SECONDS = 3600
_TAIL_LINES = 25


@dataclass
class RunnerImage:
    """A runner image ready to run."""

    tag: str
    digest: str  # the image id (sha256:...); registries add a repo digest when pushed
    base_image: str
    built: bool  # False when an existing image was reused
    seconds: float = 0.0
    architecture: str = "amd64"  # SageMaker runs amd64 only
    inputs: dict[str, str] | None = None  # ImageInputs.record(); None for an image the user named


@dataclass
class ImageInputs:
    """Everything the image is made of, known before anything is downloaded."""

    base_image: str
    base_id: str
    definition: Path
    requirements: Path | None
    mlflow: str | None

    def parts(self) -> dict[str, str]:
        """What the tag hashes, by name: a rerun names the parts that changed since."""
        definition = (_sha256((self.definition / name).read_bytes()) for name in _DEFINITION)
        return {
            "base image": self.base_id,
            "image definition": _sha256(" ".join(definition).encode()),
            "requirements": _sha256(_requirement_lines(self.requirements).encode()),
            "MLflow": self.mlflow or "",
            "batcat_nb": batcat_source_hash(),
        }

    def key(self) -> str:
        return _sha256(b"".join(part.encode() + b"\0" for part in self.parts().values()))

    def record(self) -> dict[str, str]:
        """The parts and where they came from, for the run's tags (``batcat rerun`` rebuilds from it)."""
        sources = {"base_image": self.base_image, "requirements_file": str(self.requirements or "")}
        return {**sources, **self.parts()}


def image_inputs(client: Any, base_image: str | None, requirements: str | Path | None) -> ImageInputs:
    """The inputs of the runner image for this base image and requirements file, as they are now."""
    base, base_id = resolve_base_image(client, base_image)
    return ImageInputs(base, base_id, definition_dir(), _requirements_path(requirements), mlflow_version())


def ensure_image(
    client: Any,
    *,
    base_image: str | None = None,
    requirements: str | Path | None = None,
    extra_tag: str | None = None,
    wheelhouse: bool | None = None,
    rebuild: bool = False,
    on_log: Callable[[str], None] | None = None,
) -> RunnerImage:
    """The runner image for this environment: reused when its tag exists, else built."""
    started = time.monotonic()
    inputs = image_inputs(client, base_image, requirements)
    key = inputs.key()
    tag = f"{RUNNER_REPOSITORY}:{key[:16]}"
    built = False
    image = _existing(client, tag)
    if image is None or rebuild:
        log.info(
            "building the runner image %s from %s (first time for this environment)", tag, inputs.base_image
        )
        image = _Build(client, inputs, tag, key, on_log or _log_line).run(wheelhouse)
        built = True
    if extra_tag:
        image.tag(*_split_tag(extra_tag))
    seconds = time.monotonic() - started
    return RunnerImage(
        tag, image.id, inputs.base_image, built, seconds, _architecture(image), inputs.record()
    )


def existing_image(client: Any, name: str) -> RunnerImage:
    """An image the user names (``--image``): it must exist here."""
    image = _existing(client, name)
    if image is None:
        raise UsageError(f"image {name} not found; build one with `batcat build` or pull it first")
    base = image.labels.get("io.batcat.base-image", "")
    return RunnerImage(name, image.id, base, built=False, architecture=_architecture(image))


def _architecture(image: Any) -> str:
    return str(image.attrs.get("Architecture") or "amd64")


def resolve_base_image(client: Any, name: str | None) -> tuple[str, str]:
    """The base image and its id: ``name``, else python:3.11-slim, else the local bookworm base."""
    if name:
        image = _existing(client, name) or _pull(client, name)
        if image is None:
            raise UsageError(
                f"base image {name} is not here and cannot be pulled; pull or build it, "
                f"or pass another --base-image (scripts/provision_docker.sh builds {LOCAL_BASE_IMAGE})"
            )
        return name, image.id
    for candidate in (DEFAULT_BASE_IMAGE, LOCAL_BASE_IMAGE):
        image = _existing(client, candidate)
        if image is None and candidate == DEFAULT_BASE_IMAGE:
            image = _pull(client, candidate)
        if image is not None:
            return candidate, image.id
    raise UsageError(
        f"no base image: {DEFAULT_BASE_IMAGE} cannot be pulled here and {LOCAL_BASE_IMAGE} does not exist; "
        "run scripts/provision_docker.sh or pass --base-image IMAGE"
    )


def definition_dir() -> Path:
    """The runner image's Dockerfile and its files: ``$BATCAT_DOCKER_DIR``, else the copy installed
    with the package (``batcat_nb/docker``), else ``docker/`` of a source checkout."""
    package = PACKAGE_DIR
    candidates = [Path(os.environ["BATCAT_DOCKER_DIR"])] if os.environ.get("BATCAT_DOCKER_DIR") else []
    candidates += [package / "docker", package.parent / "docker"]
    for directory in candidates:
        if all((directory / name).is_file() for name in _DEFINITION):
            return directory
    raise UsageError(
        f"the runner image definition ({', '.join(_DEFINITION)}) is in none of "
        f"{', '.join(map(str, candidates))}; reinstall batcat_nb, "
        "or set BATCAT_DOCKER_DIR to a directory with them"
    )


def find_requirements(*starts: Path) -> Path | None:
    """``requirements.txt`` in the first of ``starts`` (or the project directory) that has one."""
    for directory in [*starts, project_dir()]:
        candidate = directory / REQUIREMENTS_FILE
        if candidate.is_file():
            return candidate
    return None


def batcat_source_hash() -> str:
    """A hash of the batcat_nb this process runs: its version, metadata and every source file."""
    package = PACKAGE_DIR
    digest = hashlib.sha256(_metadata_text().encode())
    for path in _package_files(package):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_batcat_wheel(destination: Path) -> Path:
    """A wheel of the batcat_nb this process runs (installed or editable), byte-for-byte reproducible."""
    package = PACKAGE_DIR
    dist_info = f"batcat_nb-{__version__}.dist-info"
    entries: dict[str, bytes] = {
        f"batcat_nb/{p.relative_to(package).as_posix()}": p.read_bytes() for p in _package_files(package)
    }
    entries[f"{dist_info}/METADATA"] = _metadata_text().encode()
    entry_points = importlib.metadata.distribution("batcat_nb").read_text("entry_points.txt")
    if entry_points:
        entries[f"{dist_info}/entry_points.txt"] = entry_points.encode()
    entries[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: batcat_nb\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [f"{name},sha256={_record_hash(data)},{len(data)}" for name, data in entries.items()]
    entries[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    wheel = destination / f"batcat_nb-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, data, zipfile.ZIP_DEFLATED)
    return wheel


class _Build:
    """One image build: context, wheelhouse, ``docker build`` with its log streamed."""

    def __init__(
        self, client: Any, inputs: ImageInputs, tag: str, key: str, on_log: Callable[[str], None]
    ) -> None:
        self.client, self.inputs, self.tag, self.key, self.on_log = client, inputs, tag, key, on_log

    def run(self, wheelhouse: bool | None) -> Any:
        if _carries_credentials(self.inputs.requirements):
            if wheelhouse is False:
                log.warning("the package index needs credentials: resolving wheels on this host instead")
            wheelhouse = True  # never a token in a build argument or a layer
        offline = wheelhouse if wheelhouse is not None else not self._index_reachable()
        with tempfile.TemporaryDirectory(prefix="batcat-build-") as tmp:
            context = Path(tmp)
            self._assemble(context, offline)
            return self._docker_build(context, offline)

    def _assemble(self, context: Path, offline: bool) -> None:
        definition, requirements = self.inputs.definition, self.inputs.requirements
        for name in ("Dockerfile", ".dockerignore"):
            shutil.copy(definition / name, context / name)
        runtime = (definition / "runtime-requirements.txt").read_text()
        if self.inputs.mlflow:  # the job opens the launcher's SQLite store: same MLflow, same schema
            runtime += f"\nmlflow-skinny=={self.inputs.mlflow}\n"
        (context / "runtime-requirements.txt").write_text(runtime)
        (context / "user-requirements.txt").write_text(_requirement_lines(requirements))
        for layer in _LAYERS:
            (context / "wheelhouse" / layer).mkdir(parents=True)
        build_batcat_wheel(context / "wheelhouse" / "batcat_nb")
        if offline:
            target = python_target(self.client, self.inputs.base_id)
            wheels(target, context / "runtime-requirements.txt", context / "wheelhouse" / "runtime")
            if requirements is not None and _requirement_lines(requirements).strip():
                wheels(target, requirements, context / "wheelhouse" / "user")

    def _index_reachable(self) -> bool:
        """Can a container of the base image reach the package index pip uses here?"""
        path = cache_dir() / "targets" / f"{self.inputs.base_id.replace(':', '-')}.online"
        if path.exists() and time.time() - path.stat().st_mtime < 86400:
            return path.read_text() == "yes"
        url = _index_url()
        probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5); print('yes')"
        answer = (
            _in_image(self.client, self.inputs.base_id, ["python3", "-c", probe, url], "host") if url else ""
        )
        reachable = answer.strip() == "yes"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("yes" if reachable else "no")
        if not reachable:
            log.info("no package index is reachable from a container: building from a wheelhouse")
        return reachable

    def _docker_build(self, context: Path, offline: bool) -> Any:
        buildargs = {"BASE_IMAGE": self.inputs.base_image, "PIP_OFFLINE": "1" if offline else "0"}
        if not offline and _index_url():
            buildargs["INDEX_URL"] = _index_url()
        labels = {LABEL_KEY: self.key, "io.batcat.version": __version__}
        lines: list[str] = []
        step = ""
        stream = self.client.api.build(
            path=str(context),
            tag=self.tag,
            buildargs=buildargs,
            labels=labels,
            network_mode="none" if offline else "host",
            platform=PLATFORM,  # for SageMaker, whose instances are all x86, whatever this host is
            rm=True,
            forcerm=True,
            decode=True,
        )
        for event in stream:
            if "stream" in event:
                for line in event["stream"].splitlines():
                    lines.append(line)
                    if line.startswith("Step "):
                        step = line
                    if line.strip():
                        self.on_log(line)
            if "error" in event:
                error = (event.get("errorDetail") or {}).get("message") or event["error"]
                raise ImageBuildError(
                    f"building the runner image failed at {_shorten(step) or 'the start'}: "
                    f"{_build_error(error)}; see the log's end below, fix the requirement or the "
                    f"base image, then build again\n{_tail(lines)}"
                )
        image = _existing(self.client, self.tag)
        if image is None:
            raise ImageBuildError(f"docker built no image {self.tag}\n{_tail(lines)}")
        return image


def make_wheelhouse(image: str, destination: str | Path, requirements: str | Path) -> list[Path]:
    """The wheels ``requirements`` resolve to for ``image``'s own Python, put in ``destination``."""
    from .container import docker_client

    client = docker_client()
    found = _existing(client, image)
    if found is None:
        raise UsageError(f"image {image} not found")
    Path(destination).mkdir(parents=True, exist_ok=True)
    return wheels(python_target(client, found.id), Path(requirements), Path(destination))


def python_target(client: Any, image_id: str) -> list[str]:
    """The image's Python version, ABI and platform tags, most specific first (asked once per image)."""
    path = cache_dir() / "targets" / f"{image_id.replace(':', '-')}.json"
    if path.exists():
        return list(json.loads(path.read_text()))
    output = _in_image(client, image_id, ["python3", "-c", _PROBE], "none")
    target = output.split()
    if len(target) < 3:
        raise ImageBuildError(
            f"cannot find the Python of base image {image_id[:19]}: {output.strip()[:300]}; "
            "the base image needs python3 (with venv) on a glibc system"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(target))
    return target


def wheels(target: list[str], requirements: Path, destination: Path) -> list[Path]:
    """Link into ``destination`` the wheels ``requirements`` resolve to for ``target``.

    Downloaded once, on this host, into ``<cache>/wheelhouse/<hash of target and requirements>``.
    """
    key = _sha256(json.dumps([target, requirements.read_text()]).encode())[:24]
    cached = cache_dir() / "wheelhouse" / key
    if not (cached / ".complete").exists():
        _download(target, requirements, cached)
    linked = []
    for wheel in sorted(cached.glob("*.whl")):
        try:
            os.link(wheel, destination / wheel.name)
        except OSError:
            shutil.copy(wheel, destination / wheel.name)
        linked.append(destination / wheel.name)
    return linked


def _download(target: list[str], requirements: Path, cached: Path) -> None:
    version, abi, *platforms = target
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="partial-", dir=cached.parent))
    command = [
        sys.executable, "-m", "pip", "download", "--dest", str(partial), "--only-binary=:all:",
        "--python-version", version, "--implementation", "cp",
        "--abi", abi, "--abi", "abi3", "--abi", "none",
        *(arg for platform in platforms for arg in ("--platform", platform)),
        "-r", str(requirements),
    ]  # fmt: skip
    log.info("resolving the wheels of %s for Python %s on this host ...", requirements.name, version)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        lines = (done.stdout + done.stderr).splitlines()
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
        raise ImageBuildError(
            mask_uri(
                f"building the runner image failed while resolving the wheels of {requirements} "
                f"for Python {version} (pip download): {errors[0] if errors else done.returncode}; "
                f"fix that requirement\n{_tail(lines)}"
            )
        )
    (partial / ".complete").touch()
    shutil.rmtree(cached, ignore_errors=True)
    partial.rename(cached)


def _in_image(client: Any, image_id: str, command: list[str], network: str) -> str:
    """What ``command`` prints in a throwaway container of the image (its error text if it fails)."""
    import docker.errors

    try:
        output = client.containers.run(
            image_id, command, entrypoint=[], network_mode=network, remove=True, stderr=True
        )
    except docker.errors.ContainerError as exc:
        return str(exc.stderr or b"", errors="replace") if isinstance(exc.stderr, bytes) else str(exc)
    return bytes(output).decode(errors="replace")


# Prints: python_version abi platform_tag... (most specific first).
_PROBE = """
import os, sys, sysconfig
v = sys.version_info
arch = sysconfig.get_platform().split("-", 1)[1].replace("-", "_").replace(".", "_")
libc = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
if not libc or not libc.startswith("glibc "):
    sys.exit("not a glibc image (%r)" % libc)
major, minor = (int(x) for x in libc.split()[1].split(".")[:2])
plats = ["manylinux_%d_%d_%s" % (major, m, arch) for m in range(minor, 4, -1)]
for name, need in (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5)):
    if major == 2 and minor >= need and arch in ("x86_64", "i686", "aarch64"):
        plats.append("%s_%s" % (name, arch))
plats.append("linux_%s" % arch)
print("%d.%d.%d" % v[:3], "cp%d%d" % v[:2], *plats)
"""


def is_step(line: str) -> bool:
    """A build log line worth showing as progress: a Dockerfile step."""
    return line.startswith("Step ")


def _existing(client: Any, name: str) -> Any:
    import docker.errors

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def _pull(client: Any, name: str) -> Any:
    """Pull ``name`` once; a failure is remembered for an hour so reuse stays quick."""
    import docker.errors

    marker = cache_dir() / "pull-failed" / hashlib.sha256(name.encode()).hexdigest()[:16]
    if marker.exists() and time.time() - marker.stat().st_mtime < _PULL_RETRY_SECONDS:
        return None
    try:
        log.info("pulling %s ...", name)
        return client.images.pull(name)
    except docker.errors.APIError as exc:
        log.debug("cannot pull %s: %s", name, exc)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return None


def _split_tag(name: str) -> tuple[str, str]:
    """``host:port/repo:tag`` to ``("host:port/repo", "tag")``; the tag defaults to latest."""
    if ":" in name.rsplit("/", 1)[-1]:
        repository, _, tag = name.rpartition(":")
        return repository, tag
    return name, "latest"


def _requirements_path(requirements: str | Path | None) -> Path | None:
    if requirements is None:
        return None
    path = Path(requirements).resolve()
    if not path.is_file():
        raise UsageError(f"requirements file {requirements} does not exist")
    return path


def _requirement_lines(path: Path | None) -> str:
    """The requirement lines of ``path`` as the image holds them (and the hash covers): without
    comments and blank lines, and without credentials (see ``_without_credentials``)."""
    if path is None:
        return ""
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    kept = (_without_credentials(line, path) for line in lines if line and not line.startswith("#"))
    return "".join(f"{line}\n" for line in kept if line)


def _without_credentials(line: str, path: Path) -> str:
    """A requirement line fit for the image: an index option with a credential is dropped (the
    wheels were resolved on the host), ``NAME @ URL`` with one becomes ``NAME``."""
    if mask_uri(line) == line:
        return line
    if line.startswith("-"):
        return ""
    name, at, _url = line.partition(" @ ")
    marker = line.partition(";")[2].strip()
    if not at or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*(\[[^\]]*\])?", name.strip()):
        raise UsageError(
            f"{path}: the line {mask_uri(line)!r} carries a credential and names no package; "
            "write it as NAME @ URL, or put the index in PIP_INDEX_URL or pip.conf"
        )
    return f"{name.strip()} ; {marker}" if marker else name.strip()


def _carries_credentials(requirements: Path | None) -> bool:
    """Does the build need a credential: in the index URL or in a requirement line?"""
    lines = requirements.read_text().splitlines() if requirements is not None else []
    return any(mask_uri(text) != text for text in [_index_url(), *lines])


def mlflow_version() -> str | None:
    for name in ("mlflow-skinny", "mlflow"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _index_url() -> str:
    """The package index pip uses on this host."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
    )
    if done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    try:
        from pip._internal.models.index import PyPI

        return str(PyPI.simple_url)
    except ImportError:
        return ""


def _package_files(package: Path) -> list[Path]:
    return sorted(
        p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def _metadata_text() -> str:
    dist = importlib.metadata.distribution("batcat_nb")
    return dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build_error(error: str) -> str:
    """Docker's error without the failing command, which the step already shows."""
    failed = re.search(r"returned a non-zero code: (\d+)", error)
    if failed:
        return f"the command returned a non-zero code: {failed.group(1)}"
    return _shorten(error.strip().splitlines()[0] if error.strip() else "unknown error")


def _shorten(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(lines: list[str]) -> str:
    shown = [line for line in lines if line.strip()][-_TAIL_LINES:]
    return "last lines of the build log:\n" + "\n".join(f"  {line}" for line in shown)


def _log_line(line: str) -> None:
    log.debug("build: %s", line)
