"""Job inputs and outputs that are local paths or ``s3://`` URIs.

boto3 is imported only when an S3 URI is used; ``AWS_ENDPOINT_URL`` is honoured as boto3
itself does, which is how tests point it at a moto server.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import UnsafePath, UsageError

log = logging.getLogger("batcat_nb")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` to ``("bucket", "key/prefix")``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise UsageError(f"{uri!r} names no bucket; write s3://BUCKET/PREFIX")
    return bucket, key


def s3_client() -> Any:
    import boto3

    return boto3.client("s3")


AWS_PASSED = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_EC2_METADATA_DISABLED")


def role_s3_client(role_arn: str) -> Any:
    """An S3 client with credentials from STS ``AssumeRole`` on ``role_arn``: it may do what a
    job running as that role may do, no more (``--as-role``)."""
    import boto3

    answer = boto3.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="batcat-as-role")
    credentials = answer["Credentials"]
    return boto3.client(
        "s3",
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def aws_credentials() -> dict[str, str]:
    """This host's AWS credentials (and region/endpoint) as variables for the container only."""
    import boto3

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        raise UsageError("pass_aws_credentials is set but no AWS credentials are configured here")
    frozen = credentials.get_frozen_credentials()
    env = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        env["AWS_SESSION_TOKEN"] = frozen.token
    env.update({name: os.environ[name] for name in AWS_PASSED if os.environ.get(name)})
    return env


def check_input(name: str, uri: str) -> None:
    """Fail now, naming the fix, if an input cannot be read."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            listed = s3_client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        except Exception as exc:
            raise UsageError(f"input '{name}': cannot read {uri} ({_aws_reason(exc)})") from None
        if not listed.get("KeyCount"):
            raise UsageError(f"input '{name}': nothing at {uri}; check the bucket and prefix")
    elif not Path(uri).exists():
        raise UsageError(f"input '{name}': {uri} does not exist (paths are relative to {Path.cwd()})")


def download(uri: str, destination: Path, client: Any = None, *, folder: bool = False) -> int:
    """Every object whose key starts with the S3 prefix ``uri`` into ``destination``, paths kept
    relative to the prefix, as SageMaker Processing does for an ``S3Prefix`` input; with
    ``folder``, only what is under ``uri/``. Returns the count.

    Nothing is written unless every key stays inside ``destination``: a bucket never decides
    where this host writes (a key ``out/../../.bashrc`` is refused, naming it)."""
    bucket, prefix = split_s3(uri)
    if folder and prefix and not prefix.endswith("/"):
        prefix += "/"
    client = client or s3_client()
    targets = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith("/"):
                targets.append((key, _target(destination, bucket, prefix, key)))
    for key, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))
    return len(targets)


def download_versions(uri: str, destination: Path, versions: dict[str, str], client: Any = None) -> int:
    """Exactly the objects ``versions`` names (key -> version id) into ``destination``, paths kept
    relative to the prefix ``uri`` as ``download`` does: a rerun reads what its original read."""
    bucket, prefix = split_s3(uri)
    client = client or s3_client()
    targets = [(key, version, _target(destination, bucket, prefix, key)) for key, version in versions.items()]
    for key, version, target in sorted(targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target), ExtraArgs={"VersionId": version})
    return len(versions)


def list_objects(uri: str, client: Any = None) -> list[dict[str, Any]]:
    """The objects under the S3 prefix ``uri`` (folder markers left out), sorted by key: ``Key``,
    ``Size``, ``ETag`` and, when the bucket is versioned, ``VersionId``."""
    bucket, prefix = split_s3(uri)
    client = client or s3_client()
    try:
        versioned = client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    except Exception:  # a role allowed to read but not to ask: fingerprint without versions
        versioned = False
    if versioned:
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
        items = [v for page in pages for v in page.get("Versions", []) if v.get("IsLatest")]
    else:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        items = [item for page in pages for item in page.get("Contents", [])]
    fields = ("Key", "Size", "ETag", "VersionId") if versioned else ("Key", "Size", "ETag")
    listed = [{f: item[f] for f in fields} for item in items if not item["Key"].endswith("/")]
    return sorted(listed, key=lambda item: item["Key"])


def _target(destination: Path, bucket: str, prefix: str, key: str) -> Path:
    """Where ``key`` lands under ``destination``; UnsafePath if that is outside it."""
    relative = key[len(prefix) :]
    if prefix and not prefix.endswith("/"):
        relative = relative.removeprefix("/")  # the separator after a non-folder prefix
    relative = relative or key.rsplit("/", 1)[-1]
    root = destination.resolve()
    target = root.joinpath(*PurePosixPath(relative).parts).resolve()
    if relative.startswith("/") or target == root or not target.is_relative_to(root):
        raise UnsafePath(
            f"refusing s3://{bucket}/{key}: its key leads outside {destination}; "
            "remove that object or download another prefix"
        )
    return target


def output_files(source: Path, *, links_out: bool = False) -> list[Path]:
    """The files of an output (or ``source`` itself), sorted, without following a link out.

    A job controls its output: a link ``x -> ~/.aws/credentials`` must not carry a host file to
    S3 or MLflow. Links to files inside the output are kept; links to directories are not walked
    (what they point to inside is listed anyway); links leading out are skipped with a warning,
    unless ``links_out`` (a folder the user chose, such as a local input)."""
    if not source.is_dir():
        return [source] if source.is_file() else []  # a file named by the user, not by a job
    root, found = source.resolve(), []
    for directory, subdirs, files in os.walk(source):
        for name in subdirs + files:
            path = Path(directory) / name
            if not links_out and _escapes(path, root):
                log.warning("not copying %s: it links outside the output (%s)", path, os.readlink(path))
            elif name in files and path.is_file():
                found.append(path)
    return sorted(found)


def _escapes(path: Path, root: Path) -> bool:
    return path.is_symlink() and not path.resolve().is_relative_to(root.resolve())


def upload(
    source: Path,
    uri: str,
    client: Any = None,
    extra_args: dict[str, str] | None = None,
    *,
    links_out: bool = False,
) -> int:
    """Every file under ``source`` (or the file itself) to the S3 prefix ``uri``; the count.

    ``extra_args`` go to each put (``{"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key}``);
    ``links_out`` follows links out of ``source`` (see ``output_files``)."""
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/")
    client = client or s3_client()
    files = output_files(source, links_out=links_out)
    for path in files:
        relative = path.name if path == source else path.relative_to(source).as_posix()
        key = f"{prefix}/{relative}" if prefix else relative
        client.upload_file(str(path), bucket, key, ExtraArgs=extra_args or None)
    return len(files)


def _aws_reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code')}: {error.get('Message')}"
    return f"{type(exc).__name__}: {exc}"
