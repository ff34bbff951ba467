"""Credentials out of what is shown or stored: passwords and tokens inside URIs, secret values.

``mask_uri`` works on a URI or on any text holding URIs (an error message, a summary): it keeps
the scheme, the user and the host, so a reader still sees which store or remote is meant. One
function, used wherever a URI is printed, tagged or saved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

# scheme://user:password@  or  scheme://token@  (a token alone is masked for http(s) only:
# ``ssh://git@host`` names a user, ``https://ghp_...@github.com`` carries a credential)
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s/@:'\"]*)(?::(?P<password>[^\s/@'\"]*))?@"
)
_SECRET_WORDS = r"password|passwd|pwd|token|secret|api_?key|access_?key|private_?key|credentials?|auth"
_SECRET_QUERY = re.compile(rf"(?P<key>[?&;][\w.-]*(?:{_SECRET_WORDS})[\w.-]*=)[^&;#\s'\"]*", re.IGNORECASE)
_SECRET_NAME = re.compile(rf"(?:^|_|\b)(?:{_SECRET_WORDS})(?:$|_|\b)", re.IGNORECASE)


def mask_uri(text: str) -> str:
    """``scheme://user:***@host``, ``https://***@host``, ``?password=***``; the rest untouched."""
    return _SECRET_QUERY.sub(lambda m: m["key"] + MASK, _USERINFO.sub(_mask_userinfo, text))


def without_credentials(uri: str) -> str:
    """The URI with its user info dropped where that holds a credential (``http://host/``)."""
    return _USERINFO.sub(lambda m: m["scheme"] if _is_credential(m) else m[0], uri)


def _mask_userinfo(match: re.Match[str]) -> str:
    if not _is_credential(match):
        return match[0]
    if match["password"] is not None:
        return f"{match['scheme']}{match['user']}:{MASK}@"
    return f"{match['scheme']}{MASK}@"


def _is_credential(match: re.Match[str]) -> bool:
    if match["password"] is not None:
        return True
    return match["scheme"].lower() in ("http://", "https://") and bool(match["user"])


def looks_secret(name: str) -> bool:
    """Whether a parameter or variable name suggests a credential (``api_token``, ``DB_PASSWORD``)."""
    return bool(_SECRET_NAME.search(name))


class Masker:
    """Replaces known secret values by ``***`` in text and in nested JSON-like data."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        # longest first: a value that contains another is masked whole
        self.values = sorted({v for v in values if v}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, MASK)
        return text

    def data(self, data: Any) -> Any:
        """``data`` with every string masked; dicts and lists are masked in place."""
        if isinstance(data, str):
            return self.text(data)
        if isinstance(data, dict):
            for key, value in data.items():
                data[key] = self.data(value)
        elif isinstance(data, list):
            data[:] = [self.data(item) for item in data]
        return data
