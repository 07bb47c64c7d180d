"""Redaction against hand-worked cases: every secret gone, everything else byte for byte."""

from __future__ import annotations

import pytest

from bikes.core.redaction import redact, redact_url, redact_values

URLS = [
    # userinfo passwords, whatever the scheme and driver
    ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
    (
        "postgresql+psycopg://postgres:s3cret@127.0.0.1:5432/test?sslmode=require",
        "postgresql+psycopg://postgres:***@127.0.0.1:5432/test?sslmode=require",
    ),
    ("http://alice:hunter2@mlflow:5000", "http://alice:***@mlflow:5000"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an unescaped @ in the password
    # a lone user in an http URL is a token; elsewhere it is a user name
    ("https://ghp_abc123@github.com/org/repo", "https://***@github.com/org/repo"),
    ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
    # secret query parameters, others untouched and in their order
    (
        "https://h/p?token=abc&x=1&sig=zz&X-Amz-Signature=qq&page=2&api_key=k&key=g",
        "https://h/p?token=***&x=1&sig=***&X-Amz-Signature=***&page=2&api_key=***&key=***",
    ),
    ("https://h/cb#access_token=abc&state=s", "https://h/cb#access_token=***&state=s"),
    # webhooks: ids kept, secrets gone
    (
        "https://hooks.slack.com/services/T0001/B0002/XXXXsecretXXXX",
        "https://hooks.slack.com/services/T0001/B0002/***",
    ),
    (
        "https://discord.com/api/webhooks/1234/tokenABC/slack",
        "https://discord.com/api/webhooks/1234/***/slack",
    ),
    ("https://example.com/my/webhook/abc123/def?x=1", "https://example.com/my/webhook/***/***?x=1"),
    ("http://127.0.0.1:8081/hooks/planted", "http://127.0.0.1:8081/hooks/***"),
    (
        "https://api.telegram.org/bot123456:ABCdef/sendMessage",
        "https://api.telegram.org/bot123456:***/sendMessage",
    ),
    # nothing to hide: returned as given
    ("http://127.0.0.1:9", "http://127.0.0.1:9"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("models:/bikes@champion", "models:/bikes@champion"),
    ("https://example.com/runs/0a1b2c3d4e5f/artifacts?page=2", None),
    ("data/splits/train.parquet", None),
]


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_redact_url(url: str, expected: str | None) -> None:
    assert redact_url(url) == (url if expected is None else expected)


TEXTS = [
    ("host=db user=me password=hunter2 dbname=x", "host=db user=me password=*** dbname=x"),
    ("password='a b c' and token=\"q w\"", "password='***' and token=\"***\""),
    (
        '{"password": "x", "api_key": "y", "user": "z"}',
        '{"password": "***", "api_key": "***", "user": "z"}',
    ),
    ("Authorization: Bearer abcdefghij123", "Authorization: Bearer ***"),
    ("authorization: Basic dXNlcjpwYXNz", "authorization: Basic ***"),
    ("sent with Bearer eyJhbGciOi.xx.yy now", "sent with Bearer *** now"),
    (
        "Server error '500 Internal Server Error' for url "
        "'https://hooks.slack.com/services/T1/B2/SEKRET'",
        "Server error '500 Internal Server Error' for url "
        "'https://hooks.slack.com/services/T1/B2/***'",
    ),
    (
        "MLflow tracking at http://u:pw@127.0.0.1:9: unreachable (API request to "
        "http://u:pw@127.0.0.1:9/api/2.0/mlflow/experiments/get-by-name failed)",
        "MLflow tracking at http://u:***@127.0.0.1:9: unreachable (API request to "
        "http://u:***@127.0.0.1:9/api/2.0/mlflow/experiments/get-by-name failed)",
    ),
    (
        "error at 'https://u:p@h:5000/api?token=1'. then",
        "error at 'https://u:***@h:5000/api?token=***'. then",
    ),
    # prose and look-alikes stay
    ("basic statistics and Basic Statistics", None),
    ("max_tokens=5 password_env=X tokens", None),
    ("the rmse rose 20% (threshold 0.2)", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), TEXTS)
def test_redact(text: str, expected: str | None) -> None:
    assert redact(text) == (text if expected is None else expected)


@pytest.mark.parametrize("text", [t for t, _ in TEXTS] + [u for u, _ in URLS])
def test_redaction_is_idempotent(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


def test_redact_values_keeps_numbers() -> None:
    assert redact_values({"source": "s3://b/k?sig=x", "rows": 3, "ok": "y"}) == {
        "source": "s3://b/k?sig=***",
        "rows": 3,
        "ok": "y",
    }
