"""The official `openai` and `anthropic` Python SDKs reading cached answers that were
translated: the OpenAI SDK on a model whose upstream speaks Anthropic, the Anthropic SDK on a
model whose upstream speaks OpenAI. Each asks twice (the second is a cache hit, replayed as a
stream, or made whole from the stored stream) and must parse the hit exactly as the first.

Usage: python3 tests/sdk/cache_sdk.py GATEWAY
  GATEWAY  the gateway's root, e.g. http://127.0.0.1:8080; it has `claude-mock` (Anthropic
           upstream) and `gpt-mock` (OpenAI upstream), both with `cache_ttl_s`
Run by tests/sdk.rs. One line per check, then `N passed, M failed`; exit 1 on any failure.
A missing SDK is a failure, never a skip.
"""

import sys
import urllib.request

import anthropic  # noqa: E402  (ImportError fails the run on purpose)
import openai  # noqa: E402

from harness import check, finish, section

gateway = sys.argv[1]
oa = openai.OpenAI(base_url=f"{gateway}/v1", api_key="unused", max_retries=0, timeout=20)
an = anthropic.Anthropic(base_url=gateway, api_key="unused", max_retries=0, timeout=20)


def hits():
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("gateway_cache_hits_total "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def user(text):
    return [{"role": "user", "content": text}]


def openai_stream(text):
    chunks = list(
        oa.chat.completions.create(
            model="claude-mock",
            messages=user(text),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage]
    return content, finish, usage


def openai_on_anthropic_upstream():
    before = hits()
    first = openai_stream("cache me, openai")
    second = openai_stream("cache me, openai")
    check("openai stream: the second is a hit", hits() == before + 1, (before, hits()))
    check("openai stream: the hit parses to the same text", second[0] == first[0] and first[0], (first, second))
    check("openai stream: finish_reason stop", second[1] == ["stop"], second[1])
    check(
        "openai stream: usage on the hit",
        len(second[2]) == 1 and second[2][0].completion_tokens == first[2][0].completion_tokens,
        (first[2], second[2]),
    )
    whole = oa.chat.completions.create(model="claude-mock", messages=user("cache me, openai"))
    check("openai whole from the stored stream: a hit", hits() == before + 2, hits())
    check("openai whole from the stored stream: same text", whole.choices[0].message.content == first[0], whole)


def anthropic_stream(text):
    with an.messages.stream(model="gpt-mock", max_tokens=64, messages=user(text)) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    return streamed, final


def anthropic_on_openai_upstream():
    before = hits()
    first_text, first = anthropic_stream("cache me, anthropic")
    second_text, second = anthropic_stream("cache me, anthropic")
    check("anthropic stream: the second is a hit", hits() == before + 1, (before, hits()))
    check("anthropic stream: the hit parses to the same text", second_text == first_text and first_text, (first_text, second_text))
    check("anthropic stream: stop_reason end_turn", second.stop_reason == "end_turn", second)
    check("anthropic stream: usage on the hit", second.usage.output_tokens == first.usage.output_tokens, (first.usage, second.usage))
    whole = an.messages.create(model="gpt-mock", max_tokens=64, messages=user("cache me, anthropic"))
    check("anthropic whole from the stored stream: a hit", hits() == before + 2, hits())
    check("anthropic whole from the stored stream: same text", whole.content[0].text == first_text, whole)


section("openai sdk, anthropic upstream", openai_on_anthropic_upstream)
section("anthropic sdk, openai upstream", anthropic_on_openai_upstream)
finish()
