"""What every run records so that ``batcat rerun`` can run it again exactly.

At submit, beside the executed notebook (and so among the run's artifacts):
``batcat-request.json`` (the given parameters with their types, channels, kernel, backend and
its options) and ``batcat-inputs.json`` (each input's listing); each input's fingerprint is
also a tag. A local input's fingerprint hashes relative paths, sizes and contents; an S3
input's hashes keys, ETags and, in a versioned bucket, version ids, so a rerun can read exactly
those objects after they were overwritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .spec import JobSpec
from .storage import is_s3, list_objects

REQUEST_NAME = "batcat-request.json"
INPUTS_NAME = "batcat-inputs.json"
TAG_INPUT_PREFIX = "batcat.input."
TAG_FINGERPRINT_SUFFIX = ".fingerprint"
_PRIVATE_OPTIONS = ("env",)  # may hold secrets: never recorded


def fingerprint_tag(channel: str) -> str:
    return f"{TAG_INPUT_PREFIX}{channel}{TAG_FINGERPRINT_SUFFIX}"


def listing(uri: str) -> dict[str, Any]:
    """``{"uri", "fingerprint", "entries"}`` for a local path or an ``s3://`` prefix."""
    entries = list_objects(uri) if is_s3(uri) else _local_entries(Path(uri))
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    return {"uri": uri, "fingerprint": f"sha256:{digest}", "entries": entries}


def record(spec: JobSpec) -> dict[str, str]:
    """Write the request and the input listings into the run's output directory; return the
    fingerprint tags."""
    listings = {name: listing(uri) for name, uri in spec.inputs.items()}
    directory = Path(spec.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / REQUEST_NAME).write_text(json.dumps(request_record(spec), indent=2, default=str))
    if listings:
        (directory / INPUTS_NAME).write_text(json.dumps(listings, indent=2))
    return {fingerprint_tag(name): found["fingerprint"] for name, found in listings.items()}


def request_record(spec: JobSpec) -> dict[str, Any]:
    """What a rerun needs of the request that the run's tags and parameters do not say."""
    return {
        "notebook": spec.notebook,
        "parameters": spec.parameters,
        "inputs": spec.inputs,
        "outputs": spec.outputs,
        "kernel": spec.kernel,
        "backend": spec.backend,
        "experiment": spec.experiment,
        "timeout": spec.timeout,
        "execution_timeout": spec.execution_timeout,
        "backend_options": {k: v for k, v in spec.backend_options.items() if k not in _PRIVATE_OPTIONS},
    }


def _local_entries(root: Path) -> list[dict[str, Any]]:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [
        {
            "path": path.name if path == root else path.relative_to(root).as_posix(),
            "size": path.stat().st_size,
            "sha256": _file_sha256(path),
        }
        for path in files
    ]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
