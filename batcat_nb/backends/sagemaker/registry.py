"""Runner images in registries: is an image there (before a job is sent), and pushing one.

ECR is reached through its API (``DescribeImages``, ``CreateRepository``,
``GetAuthorizationToken``); any other registry through the Docker registry HTTP API.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
from typing import Any

from ...contract import RUNNER_REPOSITORY
from ...errors import BackendError, UsageError
from . import aws

log = logging.getLogger("batcat_nb")

ECR_IMAGE = re.compile(
    r"(?P<registry>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?"
)
IMAGE_REF = re.compile(
    r"(?P<host>[^/]+[.:][^/]*|localhost)/(?P<repository>[^:@]+)(?::(?P<tag>[^@]+))?(?:@(?P<digest>.+))?"
)


_checked_images: dict[tuple[str, str], str | None] = {}


def check_image(image: str, region: str) -> str | None:
    """The image is in its registry (asked once per process): ECR through its API, else over HTTP.
    Returns its digest (``sha256:...``) when the registry says it."""
    if (image, region) in _checked_images:
        return _checked_images[image, region]
    ecr = ECR_IMAGE.fullmatch(image)
    ref = IMAGE_REF.fullmatch(image)
    if ecr:
        digest = _check_ecr_image(image, ecr, region)
    elif ref:
        digest = _check_registry_image(image, ref)
    else:
        raise UsageError(
            f"image {image!r} names no registry; SageMaker pulls from ECR: push it with "
            "`batcat build --push` and pass the URI it prints as --image"
        )
    _checked_images[image, region] = digest
    return digest


def pinned(image: str, digest: str) -> str:
    """``image`` (``host/repo:tag``, ``host/repo@sha256:...``) named by ``digest``: ``host/repo@digest``."""
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return f"{repository}@{digest}"


def _check_ecr_image(image: str, match: re.Match[str], region: str) -> str | None:
    image_id = {"imageDigest": match["digest"]} if match["digest"] else {"imageTag": match["tag"] or "latest"}
    ecr = aws.client("ecr", match["region"] or region)
    try:
        found = ecr.describe_images(
            registryId=match["registry"], repositoryName=match["repository"], imageIds=[image_id]
        )
        return next((d.get("imageDigest") for d in found.get("imageDetails", [])), None)
    except Exception as exc:
        code = aws.error_code(exc)
        if code in ("RepositoryNotFoundException", "ImageNotFoundException"):
            what = "repository" if code.startswith("Repository") else "image"
            raise UsageError(
                f"image {image} is not in the registry ({what} not found); push it with "
                "`batcat build --push` or pass an existing --image URI"
            ) from None
        raise aws.translate(exc, f"looking up image {image}") from None


def _check_registry_image(image: str, match: re.Match[str]) -> str | None:
    import urllib.error
    import urllib.request

    reference = match["digest"] or match["tag"] or "latest"
    host = match["host"]
    scheme = "http" if host.startswith(("127.", "localhost", "[::1]")) else "https"
    request = urllib.request.Request(
        f"{scheme}://{host}/v2/{match['repository']}/manifests/{reference}",
        method="HEAD",
        headers={"Accept": ", ".join(_MANIFEST_TYPES)},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.headers.get("Docker-Content-Digest") or match["digest"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise UsageError(
                f"image {image} is not in the registry; push it with `batcat build --push` "
                "or pass an existing --image URI"
            ) from None
        log.debug("registry check of %s: HTTP %s; not checked", image, exc.code)  # e.g. 401
        return None
    except (urllib.error.URLError, OSError) as exc:
        raise UsageError(f"the registry of image {image} does not answer ({exc})") from None


_MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)


@dataclasses.dataclass
class PushResult:
    uri: str  # repository:tag, what --image takes
    digest: str | None  # sha256:... in the registry
    pushed: bool  # False when the registry already had that digest


def push_image(
    local_tag: str, repository_uri: str, *, ecr: bool | None = None, region: str | None = None
) -> PushResult:
    """Push a local image to ``repository_uri`` (``host/name[:tag]``), unless it is there already.

    For ECR (``ecr=None`` decides from the host) the repository is created when missing and
    the login comes from ``get_authorization_token``. The push is skipped when the registry's
    digest for the tag is one this image already has.
    """
    from ..docker.container import docker_client

    engine = docker_client()
    try:
        image = engine.images.get(local_tag)
    except Exception as exc:
        if type(exc).__name__ == "ImageNotFound":
            raise UsageError(f"no local image {local_tag!r}; build it first (batcat build)") from None
        raise BackendError(f"cannot read local image {local_tag!r}: {exc}") from None
    repository, _, tag = (
        repository_uri.rpartition(":") if _has_tag(repository_uri) else (repository_uri, "", "")
    )
    tag = tag or (local_tag.rpartition(":")[2] if ":" in local_tag.rsplit("/", 1)[-1] else "latest")
    host, _, name = repository.partition("/")
    use_ecr = bool(ECR_IMAGE.fullmatch(f"{repository}:{tag}")) if ecr is None else ecr
    auth = None
    if use_ecr:
        client = aws.client("ecr", region)
        try:
            client.create_repository(repositoryName=name, imageScanningConfiguration={"scanOnPush": False})
            log.info("created ECR repository %s", name)
        except Exception as exc:
            if aws.error_code(exc) != "RepositoryAlreadyExistsException":
                raise aws.translate(exc, f"creating ECR repository {name}") from None
        try:
            data = client.get_authorization_token()["authorizationData"][0]
        except Exception as exc:
            raise aws.translate(exc, "logging in to ECR") from None
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        auth = {"username": user, "password": password}
    target = f"{repository}:{tag}"
    remote = _remote_digest(engine, target, auth)
    local = {
        d.partition("@")[2] for d in image.attrs.get("RepoDigests", []) if d.partition("@")[0] == repository
    }
    if remote and remote in local:
        log.debug("%s already has %s; not pushed", target, remote)
        return PushResult(target, remote, pushed=False)
    image.tag(repository, tag)
    digest = None
    for line in engine.api.push(repository, tag=tag, auth_config=auth, stream=True, decode=True):
        if "error" in line:
            raise BackendError(f"pushing {target} failed: {line['error']}")
        digest = line.get("aux", {}).get("Digest", digest)
    log.debug("pushed %s (%s) to %s", local_tag, digest, host)
    return PushResult(target, digest, pushed=True)


def ecr_repository_uri(name: str = RUNNER_REPOSITORY, region: str | None = None) -> str:
    """``<account>.dkr.ecr.<region>.amazonaws.com/<name>`` for these credentials (one STS call)."""
    where = aws.resolve_region(region)
    try:
        account = aws.client("sts", where).get_caller_identity()["Account"]
    except Exception as exc:
        raise aws.translate(exc, "finding the AWS account for the ECR repository") from None
    return f"{account}.dkr.ecr.{where}.amazonaws.com/{name}"


def _has_tag(uri: str) -> bool:
    return ":" in uri.rsplit("/", 1)[-1]


def _remote_digest(engine: Any, target: str, auth: dict[str, str] | None) -> str | None:
    try:
        found = engine.api.inspect_distribution(target, auth_config=auth)
    except Exception as exc:  # not there (or not readable): push
        log.debug("registry digest of %s: %s", target, exc)
        return None
    digest = found.get("Descriptor", {}).get("digest")
    return str(digest) if digest else None
