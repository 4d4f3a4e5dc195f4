"""The official `openai` and `anthropic` Python SDKs with virtual keys: admitted, refused as
unauthenticated, rate limited (429 with `Retry-After`), and the `x-ratelimit-*` quota headers.

Usage: python3 tests/sdk/keys_sdk.py GATEWAY OPEN OPENAI_LIMITED ANTHROPIC_LIMITED
  GATEWAY            the gateway's root, e.g. http://127.0.0.1:8080; it has the model `gpt-mock`
                     and `[limits] exact = true`
  OPEN               the secret of a key without limits
  OPENAI_LIMITED     the secret of a key with `limits = { rpm = 3 }`, used by the openai SDK only
  ANTHROPIC_LIMITED  the same, used by the anthropic SDK only (its own window)
Each limited key must be fresh: the checks count its 3 requests from the start of its window.
Run by tests/sdk.rs. One line per check, then `N passed, M failed`; exit 1 on any failure.
A missing SDK is a failure, never a skip.
"""

import json
import sys
import time
import urllib.request
from unittest import mock

import anthropic  # noqa: E402  (ImportError fails the run on purpose)
import openai  # noqa: E402

from harness import check, finish, section

gateway, OPEN, OA_LIMITED, AN_LIMITED = sys.argv[1:5]
MODEL = "gpt-mock"
LIMIT = 3
PREFIX_TEXT = "This is a mock reply to: "
# Shaped like a generated key, but known to no one.
WRONG = "sk-sg-wrong".ljust(49, "x")
REFUSALS = 'gateway_limit_refusals_total{scope="key",measure="requests"}'


def openai_client(key, retries=0):
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=retries, timeout=20)


def anthropic_client(key):
    return anthropic.Anthropic(base_url=gateway, api_key=key, max_retries=0, timeout=20)


def user(text):
    return [{"role": "user", "content": text}]


def metric(line_prefix):
    """The value of the first /metrics line starting with `line_prefix` (0 when absent)."""
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(line_prefix):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def metric_reaches(line_prefix, want, tries=50):
    """`line_prefix`'s value, read again (0.05 s apart) until it reaches `want`."""
    for _ in range(tries):
        got = metric(line_prefix)
        if got >= want:
            return got
        time.sleep(0.05)
    return got


def whole_error_text(e):
    """Everything of an SDK error a caller could print or log."""
    return " ".join([str(e), getattr(e, "message", ""), json.dumps(e.body), e.response.text])


def quota_headers(tag, headers, remaining):
    """The `x-ratelimit-*-requests` trio of a limited key's response."""
    check(f"{tag}: x-ratelimit-limit-requests == {LIMIT}", headers.get("x-ratelimit-limit-requests") == str(LIMIT), dict(headers))
    check(
        f"{tag}: x-ratelimit-remaining-requests == {remaining}",
        headers.get("x-ratelimit-remaining-requests") == str(remaining),
        dict(headers),
    )
    reset = headers.get("x-ratelimit-reset-requests") or ""
    # OpenAI's duration form (`7s`, `59s`, `1m0s`, `20ms`).
    check(f"{tag}: x-ratelimit-reset-requests is a duration", reset[:1].isdigit() and reset.endswith("s"), dict(headers))


def retry_after_of(tag, e):
    """The refusal's `Retry-After`, checked to be whole seconds in 1..=60; None otherwise."""
    value = e.response.headers.get("retry-after")
    ok = check(f"{tag}: Retry-After is an integer >= 1", value is not None and value.isdigit() and int(value) >= 1, value)
    if ok:
        check(f"{tag}: Retry-After within the minute window", int(value) <= 60, value)
    return int(value) if ok else None


# 1. The key without limits: whole answers and streams in both dialects.


def openai_success():
    c = openai_client(OPEN)
    r = c.chat.completions.create(model=MODEL, messages=user("hello with a key"))
    check("openai: whole answer", r.choices[0].message.content == PREFIX_TEXT + "hello with a key", r)
    check("openai: finish_reason stop", r.choices[0].finish_reason == "stop", r)
    text, finish_reason = "", None
    for chunk in c.chat.completions.create(model=MODEL, messages=user("stream with a key"), stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish_reason = chunk.choices[0].finish_reason or finish_reason
    check("openai: stream", text == PREFIX_TEXT + "stream with a key", text)
    check("openai: stream finish_reason stop", finish_reason == "stop", finish_reason)


def anthropic_success():
    c = anthropic_client(OPEN)
    m = c.messages.create(model=MODEL, max_tokens=64, messages=user("hello with a key"))
    check("anthropic: whole answer", [b.text for b in m.content if b.type == "text"] == [PREFIX_TEXT + "hello with a key"], m)
    check("anthropic: stop_reason end_turn", m.stop_reason == "end_turn", m)
    with c.messages.stream(model=MODEL, max_tokens=64, messages=user("stream with a key")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check("anthropic: stream", text == PREFIX_TEXT + "stream with a key", text)
    check("anthropic: stream stop_reason end_turn", final.stop_reason == "end_turn", final)


# 2. A key the gateway does not know: the SDK's AuthenticationError, never quoting the key.


def openai_wrong_key():
    try:
        openai_client(WRONG).chat.completions.create(model=MODEL, messages=user("x"))
        check("openai wrong key: raises", False, "no exception")
    except openai.AuthenticationError as e:
        check("openai wrong key: AuthenticationError 401", e.status_code == 401, e)
        check("openai wrong key: code unauthorized", e.code == "unauthorized", e.body)
        check("openai wrong key: the key is not quoted", WRONG not in whole_error_text(e), whole_error_text(e))
        check("openai wrong key: no key prefix quoted", "sk-sg-" not in whole_error_text(e), whole_error_text(e))


def anthropic_wrong_key():
    try:
        anthropic_client(WRONG).messages.create(model=MODEL, max_tokens=16, messages=user("x"))
        check("anthropic wrong key: raises", False, "no exception")
    except anthropic.AuthenticationError as e:
        check("anthropic wrong key: AuthenticationError 401", e.status_code == 401, e)
        body = e.body if isinstance(e.body, dict) else {}
        check(
            "anthropic wrong key: Anthropic-shaped authentication_error",
            body.get("type") == "error" and body.get("error", {}).get("type") == "authentication_error",
            e.body,
        )
        check("anthropic wrong key: the key is not quoted", WRONG not in whole_error_text(e), whole_error_text(e))
        check("anthropic wrong key: no key prefix quoted", "sk-sg-" not in whole_error_text(e), whole_error_text(e))


# 3 and 4. A key with rpm = 3 (exact): three answers whose quota headers count down, then
# RateLimitError with Retry-After.


def openai_limited():
    c = openai_client(OA_LIMITED)
    for i in range(LIMIT):
        raw = c.chat.completions.with_raw_response.create(model=MODEL, messages=user(f"limited {i}"))
        r = raw.parse()
        check(f"openai limited {i}: answered", r.choices[0].message.content == PREFIX_TEXT + f"limited {i}", r)
        quota_headers(f"openai limited {i}", raw.headers, LIMIT - 1 - i)
    try:
        c.chat.completions.create(model=MODEL, messages=user("one too many"))
        check("openai over the limit: raises", False, "no exception")
    except openai.RateLimitError as e:
        check("openai over the limit: RateLimitError 429", e.status_code == 429, e)
        check("openai over the limit: code rate_limited", e.code == "rate_limited", e.body)
        check("openai over the limit: names the key by id", "`oa-limited`" in e.message, e.message)
        check("openai over the limit: the key is not quoted", OA_LIMITED not in whole_error_text(e), whole_error_text(e))
        retry_after_of("openai over the limit", e)
        quota_headers("openai over the limit", e.response.headers, 0)


def openai_sdk_retries():
    """5. With max_retries=2 the SDK retries a 429 after the Retry-After it was given, and
    raises RateLimitError once its retries are spent.

    Sleeping for real is out of the question: an rpm window's Retry-After is up to 60 s and
    this SDK honours up to 120 s, so two retries could sleep two minutes. `time.sleep` (which
    the SDK calls between attempts) is replaced for this one call by a stub that records the
    delay and returns at once: the check sees the delays the SDK chose, and the retries reach
    the gateway while the window is still closed, so each is refused again."""
    slept = []
    before = metric(REFUSALS)
    c = openai_client(OA_LIMITED, retries=2)
    with mock.patch.object(time, "sleep", side_effect=slept.append):
        try:
            c.chat.completions.create(model=MODEL, messages=user("retry me"))
            check("openai retries: raises", False, "no exception")
            return
        except openai.RateLimitError as e:
            err = e
    check("openai retries: RateLimitError 429 after retrying", err.status_code == 429, err)
    sent = err.response.request.headers.get("x-stainless-retry-count")
    check("openai retries: the last attempt was the 2nd retry", sent == "2", sent)
    last = retry_after_of("openai retries: last refusal", err)
    print(f"note openai retries: the SDK would have slept {slept} s; last Retry-After {last}")
    check("openai retries: slept twice", len(slept) == 2, slept)
    # Each wait is the Retry-After of the refusal before it: whole seconds, no shorter than
    # the last refusal's (the window end only comes nearer) and within the minute.
    check(
        "openai retries: waited Retry-After each time",
        last is not None and all(float(s).is_integer() and last <= s <= 60 for s in slept),
        (slept, last),
    )
    refused = metric_reaches(REFUSALS, before + 3) - before
    check("openai retries: the gateway refused 3 requests", refused == 3, refused)


def anthropic_limited():
    c = anthropic_client(AN_LIMITED)
    for i in range(LIMIT):
        raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=16, messages=user(f"limited {i}"))
        m = raw.parse()
        check(f"anthropic limited {i}: answered", [b.text for b in m.content if b.type == "text"] == [PREFIX_TEXT + f"limited {i}"], m)
        quota_headers(f"anthropic limited {i}", raw.headers, LIMIT - 1 - i)
    try:
        c.messages.create(model=MODEL, max_tokens=16, messages=user("one too many"))
        check("anthropic over the limit: raises", False, "no exception")
    except anthropic.RateLimitError as e:
        check("anthropic over the limit: RateLimitError 429", e.status_code == 429, e)
        body = e.body if isinstance(e.body, dict) else {}
        check(
            "anthropic over the limit: Anthropic-shaped rate_limit_error",
            body.get("type") == "error" and body.get("error", {}).get("type") == "rate_limit_error",
            e.body,
        )
        check("anthropic over the limit: the key is not quoted", AN_LIMITED not in whole_error_text(e), whole_error_text(e))
        retry_after_of("anthropic over the limit", e)
        quota_headers("anthropic over the limit", e.response.headers, 0)


section("openai success", openai_success)
section("anthropic success", anthropic_success)
section("openai wrong key", openai_wrong_key)
section("anthropic wrong key", anthropic_wrong_key)
section("openai limited", openai_limited)
section("openai retries", openai_sdk_retries)
section("anthropic limited", anthropic_limited)
finish()
