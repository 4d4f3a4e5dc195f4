"""The official `openai` Python SDK, with its own retries off, against a model one of whose two
deployments is down: every call, streamed or not, must succeed through the other.

Usage: python3 tests/sdk/openai_sdk_failover.py BASE_URL MODEL LIVE_DEPLOYMENT N
(e.g. http://127.0.0.1:8080/v1 m d1 20). Prints one line per failed call and
`N passed, M failed`; a missing SDK is a failure, never a skip.
"""

import sys

import openai  # noqa: E402  (ImportError fails the run on purpose)

base_url, model, live, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = openai.OpenAI(base_url=base_url, api_key="sk-test-not-a-real-key", max_retries=0, timeout=20)
passed, failed = 0, []


def check(name, cond, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failed.append(name)
        print(f"FAIL {name}: {detail}")


for i in range(n):
    prompt = f"whole {i}"
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}]
        )
        r = raw.parse()
        check(f"whole {i}: content", r.choices[0].message.content == f"This is a mock reply to: {prompt}", r)
        check(f"whole {i}: deployment", raw.headers.get("x-shardgate-deployment") == live, dict(raw.headers))
    except openai.APIError as e:
        check(f"whole {i}", False, f"raised {type(e).__name__}: {e}")

for i in range(n):
    prompt = f"stream {i}"
    try:
        with client.chat.completions.with_streaming_response.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
        ) as raw:
            deployment = raw.headers.get("x-shardgate-deployment")
            text, finish, usage = "", None, None
            for chunk in raw.parse():
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
                if chunk.usage:
                    usage = chunk.usage
        check(f"stream {i}: content", text == f"This is a mock reply to: {prompt}", text)
        check(f"stream {i}: finish_reason and usage", finish == "stop" and usage is not None, (finish, usage))
        check(f"stream {i}: deployment", deployment == live, deployment)
    except openai.APIError as e:
        check(f"stream {i}", False, f"raised {type(e).__name__}: {e}")

print(f"{passed} passed, {len(failed)} failed")
sys.exit(1 if failed else 0)
