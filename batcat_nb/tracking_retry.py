"""Tracking calls that ride out a store away for a moment: SQLite's "database is locked" while
another process writes, a tracking server answering 502/503/504 or 429 while it restarts.

Bounded: ``BATCAT_TRACKING_RETRIES`` attempts in all (default 5), 0.5 s doubling to at most 8 s
between them; then the error goes up as it came. Anything else (a refusal, a bad request) is
not retried.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .redact import mask_uri

log = logging.getLogger("batcat_nb")

T = TypeVar("T")

RETRIES_ENV = "BATCAT_TRACKING_RETRIES"
DEFAULT_ATTEMPTS = 5
_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "too many 429",
    "too many 500",
    "too many 502",
    "too many 503",
    "too many 504",
    "503 server error",
    "502 server error",
    "504 server error",
    "temporarily unavailable",
    "connection refused",
    "connection reset",
    "max retries exceeded",
)


def is_transient(exc: BaseException) -> bool:
    """An error the store gives while briefly away, not one that a second try would repeat."""
    text = str(exc).lower()
    return any(marker in text for marker in _TRANSIENT)


def attempts() -> int:
    try:
        return max(1, int(os.environ.get(RETRIES_ENV, DEFAULT_ATTEMPTS)))
    except ValueError:
        return DEFAULT_ATTEMPTS


def retrying(call: Callable[..., T], uri: str) -> Callable[..., T]:
    """``call``, tried again with backoff while the store at ``uri`` is briefly away."""

    @functools.wraps(call)
    def again(*args: Any, **kwargs: Any) -> T:
        tries, delay = attempts(), 0.5
        for attempt in range(1, tries + 1):
            try:
                return call(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                text, where = mask_uri(str(exc).strip()), mask_uri(uri)  # MLflow's text repeats the URI
                first = text.splitlines()[0][:200] if text else type(exc).__name__
                if attempt == tries:
                    log.warning(
                        "tracking store %s still away after %d attempts, giving up: %s", where, tries, first
                    )
                    raise
                log.warning(
                    "tracking store %s: %s; trying again in %.1fs (%d/%d)",
                    where,
                    first,
                    delay,
                    attempt,
                    tries,
                )
                time.sleep(delay * random.uniform(0.8, 1.0))
                delay = min(8.0, delay * 2)
        raise AssertionError("unreachable")

    return again


class RetryingClient:
    """An ``MlflowClient`` whose every method retries while the store is briefly away."""

    def __init__(self, client: Any, uri: str) -> None:
        self._client = client
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        return retrying(attribute, self._uri) if callable(attribute) else attribute
