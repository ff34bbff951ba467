"""A thin layer over boto3: clients with retries, the credential and region checks, requests
checked against botocore's own service model, and AWS errors as one line.

boto3 is imported inside the functions that need it. ``AWS_ENDPOINT_URL`` is honoured as boto3
itself does, which is how the tests point every client at a moto server.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ...errors import BackendError, BatcatError, ServiceError, UsageError

# Requests are checked against botocore's service model in batcat_nb.service_model (the Docker
# backend checks its requests there too); re-exported for the callers of this module.
from ...service_model import validate_request

__all__ = ["validate_request"]

log = logging.getLogger("batcat_nb")

T = TypeVar("T")

# botocore retries transport errors, throttling and 5xx itself ("standard" mode, with backoff);
# retry_call() adds a second, slower layer for the few calls a job cannot do without.
RETRY_CONFIG = {"mode": "standard", "max_attempts": 5}
_RETRY_ENV = {"mode": "AWS_RETRY_MODE", "max_attempts": "AWS_MAX_ATTEMPTS"}
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestThrottled",
        "PriorRequestNotComplete",
    }
)
TRANSIENT_CODES = frozenset({"InternalFailure", "InternalError", "ServiceUnavailable", "InternalServerError"})
_NETWORK_ERRORS = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"})

ROLE_ARN = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")

_lock = threading.Lock()


def session(region: str | None = None) -> Any:
    """A boto3 session for ``region`` (None: the environment's), shared by the whole process."""
    return _session(region)


@functools.lru_cache(maxsize=8)
def _session(region: str | None) -> Any:
    try:
        import boto3
    except ImportError:
        raise BackendError("AWS needs boto3: pip install 'batcat_nb[sagemaker]'") from None
    return boto3.session.Session(region_name=region)


def client(service: str, region: str | None = None) -> Any:
    """A client with retries; clients are thread-safe, so one per (service, region) is kept."""
    with _lock:  # boto3 sessions are not thread-safe while they build clients
        return _client(service, region)


@functools.lru_cache(maxsize=32)
def _client(service: str, region: str | None) -> Any:
    from botocore.config import Config

    # the user's AWS_RETRY_MODE / AWS_MAX_ATTEMPTS, where set, win: botocore reads them itself
    retries = {k: v for k, v in RETRY_CONFIG.items() if not os.environ.get(_RETRY_ENV[k])}
    config = Config(retries=retries, user_agent_extra="batcat_nb")
    return _session(region).client(service, config=config)


def reset() -> None:
    """Forget cached sessions and clients (after the environment changed, e.g. in tests)."""
    _session.cache_clear()
    _client.cache_clear()


def check_credentials(region: str | None = None) -> None:
    """Raise when boto3 finds no credentials; this makes no call to AWS."""
    credentials = session(region).get_credentials()
    if credentials is None:
        raise BackendError(
            "no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or run `aws configure` (or `aws sso login`)"
        )


def resolve_region(region: str | None) -> str:
    """The region to use: the one given, else boto3's (AWS_REGION, AWS_DEFAULT_REGION, profile)."""
    found = region or session(None).region_name
    if not found:
        raise BackendError(
            "no AWS region; pass --region REGION, set BATCAT_SAGEMAKER_REGION or AWS_DEFAULT_REGION, "
            "or add region = ... to [tool.batcat.sagemaker] in pyproject.toml"
        )
    return str(found)


def check_role_arn(role: str) -> None:
    if not ROLE_ARN.fullmatch(role):
        raise UsageError(
            f"role {role!r} is not an IAM role ARN; pass --role arn:aws:iam::ACCOUNT_ID:role/NAME "
            "(a role SageMaker can assume, with access to the job's S3 prefix)"
        )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, or ''."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def reason(exc: BaseException) -> str:
    """One line saying what AWS answered."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        message = str(error.get("Message") or "").strip().splitlines()
        return f"{error.get('Code')}: {message[0] if message else ''}".rstrip(": ")
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def translate(exc: BaseException, doing: str) -> BatcatError:
    """An AWS failure as one line naming what was being done and, where known, the fix.

    A failure on AWS's side (5xx, throttling, the network), still there after botocore's
    retries, is a ServiceError: the user did nothing wrong and may try again.
    """
    code = error_code(exc)
    name = type(exc).__name__
    if name in _NETWORK_ERRORS:
        return ServiceError(f"{doing}: {reason(exc)}; check the network and AWS_ENDPOINT_URL, then try again")
    if is_retryable(exc):
        return ServiceError(
            f"{doing}: {reason(exc)}; AWS is failing or throttling: try again in a few minutes"
        )
    if name in ("NoCredentialsError", "PartialCredentialsError") or code in (
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    ):
        hint = "; refresh your AWS credentials (aws configure, aws sso login)"
    elif name == "NoRegionError":
        hint = "; pass --region or set AWS_DEFAULT_REGION"
    elif code in ("AccessDenied", "AccessDeniedException", "403"):
        hint = "; the credentials in use lack the permission: check the IAM policy"
    else:
        hint = ""
    return BackendError(f"{doing}: {reason(exc)}{hint}")


def is_retryable(exc: BaseException) -> bool:
    code = error_code(exc)
    if code in THROTTLING_CODES or code in TRANSIENT_CODES:
        return True
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return isinstance(status, int) and status >= 500


def backoff(first: float = 1.0, cap: float = 30.0, factor: float = 1.5) -> Iterator[float]:
    """Delays that grow from ``first`` to ``cap``, with jitter so many jobs do not poll in step."""
    import random

    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.0)
        delay = min(cap, delay * factor)


def retry_call(
    call: Callable[..., T],
    /,
    *args: Any,
    attempts: int = 6,
    first_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> T:
    """``call(*args, **kwargs)``, again after a growing delay while AWS throttles or fails inside."""
    delays = backoff(first_delay, cap=20.0, factor=2.0)
    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if attempt == attempts or not is_retryable(exc):
                raise
            delay = next(delays)
            log.debug("%s (attempt %d/%d); again in %.1fs", reason(exc), attempt, attempts, delay)
            sleep(delay)
    raise AssertionError("unreachable")
