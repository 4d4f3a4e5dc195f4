"""The official `openai` Python SDK as a real client against a running gateway.

Usage: python3 tests/sdk/openai_sdk.py BASE_URL   (e.g. http://127.0.0.1:8080/v1)
Prints one line per check and exits non-zero on the first failure. A missing SDK is a
failure, never a skip.
"""

import sys

import openai  # noqa: E402  (ImportError fails the run on purpose)

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key="sk-test-not-a-real-key", max_retries=0, timeout=20)
checks = 0


def check(name, cond, detail=""):
    global checks
    if not cond:
        print(f"FAIL {name}: {detail}")
        sys.exit(1)
    checks += 1
    print(f"ok   {name}")


# 1. A chat call.
r = client.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "hello from the sdk"}])
check("chat: content", r.choices[0].message.content == "This is a mock reply to: hello from the sdk", r)
check("chat: finish_reason", r.choices[0].finish_reason == "stop", r)
check("chat: usage", r.usage is not None and r.usage.completion_tokens > 0, r.usage)

raw = client.chat.completions.with_raw_response.create(model="gpt-mock", messages=[{"role": "user", "content": "hdr"}])
check("chat: x-request-id", len(raw.headers.get("x-request-id", "")) == 24, dict(raw.headers))
check("chat: x-shardgate-overhead-us", raw.headers.get("x-shardgate-overhead-us", "").isdigit(), dict(raw.headers))

# 2. A streamed chat call, with usage.
stream = client.chat.completions.create(
    model="gpt-mock",
    messages=[{"role": "user", "content": "stream through the sdk"}],
    stream=True,
    stream_options={"include_usage": True},
)
text, usage, finish = "", None, None
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
check("stream: content", text == "This is a mock reply to: stream through the sdk", text)
check("stream: finish_reason", finish == "stop", finish)
check("stream: usage", usage is not None and usage.completion_tokens > 0, usage)

# 3. Error cases: an unknown model is a NotFoundError with our message and code.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    check("error: unknown model raises", False, "no exception")
except openai.NotFoundError as e:
    check("error: unknown model is 404", e.status_code == 404, e)
    check("error: OpenAI-shaped body", e.code == "not_found" and "no-such-model" in e.message, e.body)
    check("error: x-shardgate-error", e.response.headers.get("x-shardgate-error") == "not_found", e.response.headers)

# An upstream failure is a 502 the SDK raises as a server error.
try:
    client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
    check("error: upstream 500 raises", False, "no exception")
except openai.InternalServerError as e:
    check("error: upstream 500 is 502", e.status_code == 502 and e.code == "upstream_status", e)

# A stream cut mid-way raises in the SDK (never a silent, complete-looking answer).
try:
    got = ""
    for chunk in client.chat.completions.create(
        model="flaky", messages=[{"role": "user", "content": "x"}], stream=True
    ):
        if chunk.choices:
            got += chunk.choices[0].delta.content or ""
    check("error: cut stream raises", False, f"stream ended quietly with {got!r}")
except openai.APIError as e:
    check("error: cut stream raises APIError", "upstream" in str(e).lower(), e)

print(f"{checks} passed, 0 failed")
