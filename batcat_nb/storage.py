"""Job inputs and outputs that are local paths or ``s3://`` URIs.

boto3 is imported only when an S3 URI is used; ``AWS_ENDPOINT_URL`` is honoured as boto3
itself does, which is how tests point it at a moto server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import UsageError


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


def download(uri: str, destination: Path) -> None:
    """Copy every object under the S3 prefix ``uri`` into ``destination``, keeping paths."""
    bucket, prefix = split_s3(uri)
    client = s3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            relative = key[len(prefix) :].lstrip("/") or key.rsplit("/", 1)[-1]
            if key.endswith("/"):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(target))


def upload(source: Path, uri: str) -> None:
    """Copy every file under ``source`` to the S3 prefix ``uri``, keeping relative paths."""
    bucket, prefix = split_s3(uri)
    client = s3_client()
    for root, _dirs, files in os.walk(source):
        for file in files:
            path = Path(root) / file
            key = "/".join(filter(None, [prefix.rstrip("/"), path.relative_to(source).as_posix()]))
            client.upload_file(str(path), bucket, key)


def _aws_reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code')}: {error.get('Message')}"
    return f"{type(exc).__name__}: {exc}"
