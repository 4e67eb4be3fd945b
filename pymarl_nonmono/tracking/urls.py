"""Which MongoDB a run reports to, and keeping the URL's credentials out of everything stored.

Precedence, first match wins:

1. config key ``mongo_url`` (``with mongo_url=...`` or a YAML file): a URL, or ``off`` to
   record to FileStorage only even when the environment names a server;
2. environment variable ``PYMARL_NONMONO_MONGO_URL``;
3. neither: no MongoDB.

The database: config key ``mongo_db``, else ``PYMARL_NONMONO_MONGO_DB``, else ``sacred``.

Sacred stores the config (``config.json``, the run document) and PyMARL2 prints it, so a
URL given as a config value must not carry a user, password or secret-bearing option;
those belong in the environment variable, which is read when the observer is made and
stored nowhere. Every URL shown in a message goes through :func:`mask_url`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping, Optional
from urllib.parse import parse_qsl, urlsplit

from ..hosts.pymarl2.doctor import MONGO_URL_ENV, mask_url

__all__ = [
    "DEFAULT_DB",
    "MONGO_DB_ENV",
    "MONGO_URL_ENV",
    "MongoTarget",
    "MongoURLError",
    "OFF",
    "check_db_name",
    "check_url",
    "describe_error",
    "has_secrets",
    "mask_url",
    "redact",
    "resolve",
]

MONGO_DB_ENV = "PYMARL_NONMONO_MONGO_DB"
DEFAULT_DB = "sacred"
OFF = "off"
SCHEMES = ("mongodb", "mongodb+srv")

# URI options whose values are secrets (tlsCertificateKeyFilePassword,
# authMechanismProperties=AWS_SESSION_TOKEN:...); matched anywhere in the query.
_SECRET_WORDS = ("password", "secret", "token")
_BAD_DB_CHARS = set('/\\. "$*<>:|?') | {"\0"}


class MongoURLError(ValueError):
    """A MongoDB URL or database name is malformed or unsafe; the message shows it masked."""


def _userinfo(netloc: str) -> str:
    return netloc.rpartition("@")[0] if "@" in netloc else ""


def has_secrets(url: str) -> bool:
    """True if ``url`` carries a user, a password or a secret-bearing query option."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    query = parts.query.lower()
    return bool(_userinfo(parts.netloc)) or any(word in query for word in _SECRET_WORDS)


def secrets_of(url: str) -> list[str]:
    """Substrings of ``url`` that must never be shown, longest first."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = []
    userinfo = _userinfo(parts.netloc)
    if userinfo:
        found += [userinfo, *userinfo.split(":", 1)]
    if parts.query:
        found.append(parts.query)
        found += [value for _, value in parse_qsl(parts.query, keep_blank_values=False)]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def redact(text: str, url: Optional[str]) -> str:
    """``text`` (e.g. a driver's error message) with every secret of ``url`` replaced by ***."""
    if not url:
        return text
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text


def describe_error(exc: BaseException, url: Optional[str]) -> str:
    """A driver error in one short line, with the URL's secrets removed."""
    text = str(exc).split(" (configured timeouts")[0].split(", Timeout:")[0].strip()
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, url)[:300]


def check_url(url: str, where: str) -> str:
    """Return ``url`` stripped if it is a well-formed MongoDB URL, else raise :class:`MongoURLError`.

    Only the structure is checked (scheme, hosts, ports): resolving a ``mongodb+srv`` name
    would need DNS, and reaching the server is a separate question.
    """
    url = url.strip()
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise MongoURLError(f"{where}: malformed MongoDB URL {shown} ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise MongoURLError(f"{where}: malformed MongoDB URL {shown}: it must start with mongodb:// or mongodb+srv://")
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        raise MongoURLError(f"{where}: malformed MongoDB URL {shown}: no host")
    entries = hosts.split(",")
    if parts.scheme == "mongodb+srv" and (len(entries) > 1 or ":" in hosts.strip("[]")):
        raise MongoURLError(f"{where}: malformed MongoDB URL {shown}: mongodb+srv:// takes one host name and no port")
    for entry in entries:
        match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]/\s]+)(?::([^:]*))?", entry)
        if not match:
            raise MongoURLError(f"{where}: malformed MongoDB URL {shown}: bad host {entry!r}")
        port = match.group(2)
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise MongoURLError(f"{where}: malformed MongoDB URL {shown}: port {port!r} is not in 1..65535")
    if parts.path not in ("", "/") and not re.fullmatch(r"/[^/\\. \"$]+", parts.path):
        raise MongoURLError(f"{where}: malformed MongoDB URL {shown}: bad database part {parts.path!r}")
    return url


def check_db_name(name: str, where: str) -> str:
    bad = sorted(set(name) & _BAD_DB_CHARS)
    if not name or bad or len(name) > 63:
        why = f"contains {''.join(bad)!r}" if bad else ("is empty" if not name else "is longer than 63 characters")
        raise MongoURLError(f"{where}: MongoDB database name {name!r} {why}")
    return name


@dataclass(frozen=True)
class MongoTarget:
    """A server and database to record to; ``source`` says where the URL came from."""

    url: str
    db: str
    source: str

    @property
    def shown(self) -> str:
        return mask_url(self.url)

    def __repr__(self) -> str:  # never let a repr in a log or traceback show the password
        return f"MongoTarget(url={self.shown!r}, db={self.db!r}, source={self.source!r})"

    __str__ = __repr__


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def resolve(config_url=None, config_db=None, environ: Optional[Mapping[str, str]] = None,
            url_key: str = "mongo_url", db_key: str = "mongo_db", url_source: Optional[str] = None,
            allow_secrets: bool = False) -> Optional[MongoTarget]:
    """The MongoDB to record to, by the precedence above; ``None`` for none.

    Raises :class:`MongoURLError` for a malformed URL or database name, and for a config
    URL that carries credentials (it would be stored with the config) unless
    ``allow_secrets`` (for a URL that is used but never stored, e.g. a command option).
    """
    environ = os.environ if environ is None else environ
    url, source = _text(config_url), url_source or f"config {url_key}"
    if url.lower() == OFF:
        return None
    if url:
        if has_secrets(url) and not allow_secrets:
            raise MongoURLError(
                f"{url_key}={mask_url(url)} carries a user, password or secret option; Sacred stores the config "
                f"(config.json, the run document) and PyMARL2 prints it, so put that URL in the environment "
                f"variable {MONGO_URL_ENV} instead and leave {url_key} unset"
            )
    else:
        url, source = _text(environ.get(MONGO_URL_ENV)), f"${MONGO_URL_ENV}"
        if not url:
            return None
    url = check_url(url, source)
    db, db_source = _text(config_db), f"config {db_key}"
    if not db:
        db, db_source = _text(environ.get(MONGO_DB_ENV)), f"${MONGO_DB_ENV}"
    if not db:
        db, db_source = DEFAULT_DB, "default"
    return MongoTarget(url, check_db_name(db, db_source), source)
