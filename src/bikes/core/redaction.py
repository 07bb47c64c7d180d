"""Credentials out of anything printed: URLs, DSNs, headers, webhook secrets.

Pure text in, text out, so every exit of a message (log line, error, results JSON, HTML report,
MLflow tag) can pass through the same function. Replaced values become ``***``; what is left
(scheme, user, host, port, path, the names of the secret parts) still tells a reader which
server or which webhook was meant.

What counts as a secret, and why:

- the password of a URL's userinfo (``postgresql://user:***@host/db``); a user alone in an
  http(s) URL is a token more often than a name (``https://***@github.com``);
- libpq ``key=value`` pairs and ``"key": "value"`` pairs named password, secret, token,
  api_key...;
- URL query parameters named like a credential (``token``, ``key``, ``sig``, ``signature``,
  ``access_token``, ``X-Amz-Signature``, anything containing token, secret, password...);
- the secret part of a webhook's path: Slack (``hooks.slack.com/services/T.../B.../***``),
  Discord and Microsoft Teams keep their ids and lose their tokens; any other URL with a path
  segment containing ``hook`` loses every segment after it; Telegram's ``/bot<token>``;
- ``Authorization:`` headers and ``Bearer``/``Basic`` credentials.

A secret hidden anywhere else in a path cannot be told from a run id: put it in the
environment (``url_env``, ``BIKES_STORE_URI``) and out of configs.
"""

from __future__ import annotations

import re
import typing as T
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# Query parameters whose value is a credential: exact names, then names containing these.
_SECRET_PARAMETERS = frozenset(
    {
        "key",
        "apikey",
        "api_key",
        "api-key",
        "sig",
        "signature",
        "auth",
        "pwd",
        "pass",
        "passwd",
        "code",
        "client_secret",
        "sas",
        "credential",
        "x-amz-credential",
    }
)
_SECRET_PARTS = ("token", "secret", "password", "passwd", "signature", "apikey", "api_key")

# Key-value pairs in free text: libpq DSNs (``password=x``), ``--password x`` is not covered.
_KEY_NAMES = (
    r"password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|api_key|"
    r"apikey|api-key|auth_token|private_key"
)
_KEY_VALUE = re.compile(rf"(?i)(?<![\w-])({_KEY_NAMES})(\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s&;,'\"]+)")
_QUOTED_KEY_VALUE = re.compile(
    rf"(?i)([\"'])({_KEY_NAMES}|authorization)\1(\s*:\s*)([\"'])((?:(?!\4).)*)\4"
)
_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-auth-token)(\s*[:=]\s*)"
    r"(?:(bearer|basic|token|digest|negotiate)\s+)?([^\s'\",;)\]}]+)"
)
_BEARER = re.compile(r"\b((?i:bearer|basic))(\s+)([A-Za-z0-9._~+/=-]{8,})")
# A URL: a scheme, ``://``, then anything printable that is not a quote or a bracket.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`\x00-\x1f\x7f]+")
_TELEGRAM_BOT = re.compile(r"^bot\d+:.+$")

_SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
_DISCORD_HOSTS = ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")


def redact(text: str) -> str:
    """``text`` with every credential it holds replaced by ``***`` (idempotent)."""
    if not text:
        return text
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    text = _HEADER.sub(_header, text)
    text = _BEARER.sub(_bearer, text)
    text = _QUOTED_KEY_VALUE.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}{m.group(4)}{MASK}{m.group(4)}",
        text,
    )
    return _KEY_VALUE.sub(_key_value, text)


def redact_url(url: str) -> str:
    """One URL or DSN with its password, secret query values and webhook secrets replaced.

    Everything else is left byte for byte as it was (no re-encoding), so a redacted URL still
    names its server. A string that does not parse as a URL is redacted as text.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _KEY_VALUE.sub(_key_value, url)
    if not parts.scheme or (not parts.netloc and not parts.query):
        return _KEY_VALUE.sub(_key_value, url)
    netloc = _netloc(parts.scheme.lower(), parts.netloc)
    path = _path(parts.scheme.lower(), parts.hostname or "", parts.path)
    query = _query(parts.query)
    fragment = _query(parts.fragment)  # OAuth implicit flows put tokens after the #
    if (netloc, path, query, fragment) == (parts.netloc, parts.path, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, path, query, fragment))


def _netloc(scheme: str, netloc: str) -> str:
    if "@" not in netloc:
        return netloc
    userinfo, host = netloc.rsplit("@", 1)
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{user}:{MASK}@{host}"
    if scheme in ("http", "https") and user != MASK:
        return f"{MASK}@{host}"  # a lone "user" of an http URL is a token (GitHub, GitLab...)
    return netloc


def _path(scheme: str, host: str, path: str) -> str:
    if scheme not in ("http", "https") or not path:
        return path
    segments = path.split("/")  # "" first: the path starts with "/"
    host = host.lower()
    if host in _SLACK_HOSTS:
        # /services/T.../B.../SECRET and /workflows/T.../A.../ID/SECRET: ids keep, secret goes.
        keep = 4 if len(segments) > 2 and segments[1] == "services" else 5
        return "/".join(s if i < keep or not s else MASK for i, s in enumerate(segments))
    if host in _DISCORD_HOSTS or host.endswith(".discord.com"):
        # /api/webhooks/<id>/<token>[/slack|/github]
        marker = _index(segments, "webhooks")
        if marker is not None:
            return "/".join(MASK if i == marker + 2 and s else s for i, s in enumerate(segments))
    if host == "api.telegram.org":
        return "/".join(
            (s.split(":", 1)[0] + ":" + MASK) if _TELEGRAM_BOT.match(s) else s for s in segments
        )
    marker = next((i for i, s in enumerate(segments) if "hook" in s.lower()), None)
    if marker is None:
        return path
    return "/".join(s if i <= marker or not s else MASK for i, s in enumerate(segments))


def _index(segments: list[str], name: str) -> int | None:
    return next((i for i, s in enumerate(segments) if s.lower() == name), None)


def _query(query: str) -> str:
    if not query:
        return query
    pairs = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if equals and value and value != MASK and _is_secret_parameter(name):
            pairs.append(f"{name}={MASK}")
        else:
            pairs.append(pair)
    return "&".join(pairs)


def _is_secret_parameter(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_PARAMETERS or any(part in lowered for part in _SECRET_PARTS)


def _key_value(match: re.Match[str]) -> str:
    value = match.group(3)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{match.group(2)}{quote}{MASK}{quote}"


def _bearer(match: re.Match[str]) -> str:
    """``Bearer <token>`` unless the "token" is a plain word of prose ("basic statistics"):
    credentials hold a digit, a symbol or a capital after their first character."""
    token = match.group(3)
    if not any(c.isdigit() or c in "._~+/=-" or c.isupper() for c in token[1:]):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}"


def _header(match: re.Match[str]) -> str:
    scheme = f"{match.group(3)} " if match.group(3) else ""
    return f"{match.group(1)}{match.group(2)}{scheme}{MASK}"


def redact_values(values: T.Mapping[str, T.Any]) -> dict[str, T.Any]:
    """MLflow params or tags with their text values redacted (numbers pass as they are)."""
    return {
        key: redact(value) if isinstance(value, str) else value for key, value in values.items()
    }
