"""The official `anthropic` Python SDK against the gateway's `POST /v1/messages`.

Usage: python3 tests/sdk/anthropic_sdk.py GATEWAY PROBE PREFIX MOCK
  GATEWAY  the gateway's root, e.g. http://127.0.0.1:8080
  PROBE    host:port of the Rust test's mock probe (tests/common `with_probe`)
  PREFIX   `gpt` (OpenAI-kind upstream: translated) or `claude` (Anthropic-kind upstream:
           relayed untouched); the config has PREFIX-mock (`mock`), PREFIX-chunks
           (`mock;chunks=5`), PREFIX-usage (`mock;cached_tokens=4;reasoning_tokens=3`),
           PREFIX-429, PREFIX-500 and PREFIX-cut (`mock;error_after=2`).
  MOCK     host:port of shardgate-mock itself, to replay what the gateway sent upstream and
           compare bytes (pass-through only).
Run by tests/sdk.rs. One line per check, then `N passed, M failed`; exit 1 on any failure.
A missing SDK is a failure, never a skip.
"""

import json
import sys

import anthropic  # noqa: E402  (ImportError fails the run on purpose)

from harness import PNG_B64, Probe, check, finish, model_tokens, post_raw, section, settled_delta

gateway, probe, prefix, mock_addr = sys.argv[1], Probe(sys.argv[2]), sys.argv[3], sys.argv[4]
assert prefix in ("gpt", "claude"), prefix
PASS_THROUGH = prefix == "claude"
KEY = "sk-ant-test-not-a-real-key"
client = anthropic.Anthropic(base_url=gateway, api_key=KEY, max_retries=0, timeout=20)
MOCK, CHUNKS, USAGE = f"{prefix}-mock", f"{prefix}-chunks", f"{prefix}-usage"
PREFIX_TEXT = "This is a mock reply to: "
TRICKY = 'météo "à" Paris \\ ☀️ 日本\nnext\tline </script> \u2028 end'

TOOLS = [
    {
        "name": "search",
        "description": "Search the web.",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
    {
        "name": "lookup",
        "description": "Look a word up.",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
]


def user(text):
    return [{"role": "user", "content": text}]


def usage_matches(tag, u, exp):
    """The SDK's usage equals the mock's (Anthropic counts: input_tokens excludes cache reads,
    output_tokens includes thinking)."""
    check(f"{tag}: usage present", u is not None, u)
    if u is None:
        return
    check(f"{tag}: input_tokens == mock input - cached", u.input_tokens == exp["input"] - exp["cached_input"], (u, exp))
    check(f"{tag}: output_tokens == mock output", u.output_tokens == exp["output"], (u, exp))
    check(f"{tag}: cache_read_input_tokens == mock cached", (u.cache_read_input_tokens or 0) == exp["cached_input"], (u, exp))
    check(f"{tag}: tokens > 0", u.input_tokens > 0 and u.output_tokens > 0, u)


def metrics_match(tag, model, before, exp):
    d = settled_delta(gateway, model, before, exp)
    check(f"{tag}: /metrics tokens delta == mock usage", d == exp, (d, exp))


def upstream_format(tag):
    path = probe.chat()["path"]
    want = "/v1/messages" if PASS_THROUGH else "/chat/completions"
    check(f"{tag}: upstream got the {'anthropic' if PASS_THROUGH else 'openai'} format", path.endswith(want), path)


def plain():
    before = model_tokens(gateway, MOCK)
    m = client.messages.create(model=MOCK, max_tokens=64, messages=user("hello from the sdk"))
    exp = probe.usage()
    upstream_format("message")
    headers = probe.chat()["headers"]
    check("message: the client's key is not sent upstream", not any(KEY in v for v in headers.values()), headers)
    check("message: anthropic-version upstream", ("anthropic-version" in headers) == PASS_THROUGH, headers)
    check("message: type and role", m.type == "message" and m.role == "assistant", m)
    check("message: one text block", len(m.content) == 1 and m.content[0].type == "text", m.content)
    check("message: text", m.content[0].text == PREFIX_TEXT + "hello from the sdk", m.content)
    check("message: stop_reason end_turn", m.stop_reason == "end_turn", m)
    check("message: id", bool(m.id), m)
    usage_matches("message", m.usage, exp)
    metrics_match("message", MOCK, before, exp)

    before = model_tokens(gateway, USAGE)
    m = client.messages.create(model=USAGE, max_tokens=64, system="be brief", messages=user("count my tokens"))
    exp = probe.usage()
    check("usage knobs: mock reported cached tokens", exp["cached_input"] == 4, exp)
    usage_matches("usage knobs", m.usage, exp)
    if PASS_THROUGH:
        # Anthropic has no separate thinking count, so the gateway cannot know reasoning.
        exp = dict(exp, reasoning=0)
    metrics_match("usage knobs", USAGE, before, exp)


def request_params():
    """The common parameters reach the upstream in its own format (or untouched)."""
    client.messages.create(
        model=MOCK,
        max_tokens=50,
        system=[{"type": "text", "text": "be brief"}],
        stop_sequences=["zz"],
        # This SDK version has no `temperature` argument; the API still takes it.
        extra_body={"temperature": 0.5},
        messages=user("params"),
    )
    body = json.loads(probe.chat()["body"])
    if PASS_THROUGH:
        check("params: system untouched", body.get("system") == [{"type": "text", "text": "be brief"}], body)
        check("params: stop_sequences untouched", body.get("stop_sequences") == ["zz"], body)
        return
    msgs = body.get("messages", [])
    check("params: system message first", msgs[:1] and msgs[0].get("role") == "system" and "be brief" in json.dumps(msgs[0].get("content")), msgs)
    check("params: then the user turn", [m.get("role") for m in msgs[1:]] == ["user"], msgs)
    check("params: max_tokens", (body.get("max_tokens") or body.get("max_completion_tokens")) == 50, body)
    check("params: temperature", body.get("temperature") == 0.5, body)
    check("params: stop", body.get("stop") in (["zz"], "zz"), body)


def streaming():
    whole = client.messages.create(model=MOCK, max_tokens=64, messages=user("stream through the sdk"))
    before = model_tokens(gateway, MOCK)
    with client.messages.stream(model=MOCK, max_tokens=64, messages=user("stream through the sdk")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    exp = probe.usage()
    check("stream: text_stream == non-streamed text", text == whole.content[0].text, (text, whole.content))
    check("stream: final message text", [b.text for b in final.content if b.type == "text"] == [text], final.content)
    check("stream: final stop_reason end_turn", final.stop_reason == "end_turn", final)
    usage_matches("stream: final usage", final.usage, exp)
    metrics_match("stream", MOCK, before, exp)

    before = model_tokens(gateway, USAGE)
    with client.messages.stream(model=USAGE, max_tokens=64, messages=user("count my streamed tokens")) as s:
        final = s.get_final_message()
    exp = probe.usage()
    usage_matches("usage knobs, streamed", final.usage, exp)
    metrics_match("usage knobs, streamed", USAGE, before, dict(exp, reasoning=0) if PASS_THROUGH else exp)

    # The raw event sequence, as the API documents it.
    events = list(client.messages.create(model=MOCK, max_tokens=64, messages=user("events"), stream=True))
    kinds = [e.type for e in events]
    check("stream events: message_start first, message_stop last", kinds[:1] == ["message_start"] and kinds[-1:] == ["message_stop"], kinds)
    check(
        "stream events: block start, deltas, stop, message_delta",
        "content_block_start" in kinds
        and "content_block_delta" in kinds
        and kinds.index("content_block_stop") < kinds.index("message_delta"),
        kinds,
    )
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    check("stream events: text deltas join to the reply", "".join(deltas) == PREFIX_TEXT + "events", deltas)

    whole = client.messages.create(model=CHUNKS, max_tokens=64, messages=user(TRICKY)).content[0].text
    with client.messages.stream(model=CHUNKS, max_tokens=64, messages=user(TRICKY)) as s:
        text = "".join(s.text_stream)
    check("stream: escapes and multi-byte text survive", whole == PREFIX_TEXT + TRICKY and text == whole, (text, whole))


def tools():
    question = "weather in Paris?"
    before = model_tokens(gateway, MOCK)
    m = client.messages.create(model=MOCK, max_tokens=64, messages=user(question), tools=TOOLS)
    exp = probe.usage()
    uses = [b for b in m.content if b.type == "tool_use"]
    check("tool use: stop_reason tool_use", m.stop_reason == "tool_use", m)
    check("tool use: one tool_use block", len(uses) == 1, m.content)
    check("tool use: first tool", uses[0].name == "search", uses[0])
    check("tool use: input", uses[0].input == {"query": question}, uses[0])
    check("tool use: id", bool(uses[0].id), uses[0])
    usage_matches("tool use", m.usage, exp)
    metrics_match("tool use", MOCK, before, exp)

    forced = client.messages.create(
        model=MOCK, max_tokens=64, messages=user("define gateway"), tools=TOOLS, tool_choice={"type": "tool", "name": "lookup"}
    )
    check("tool use: forced tool_choice honoured", [b.name for b in forced.content if b.type == "tool_use"] == ["lookup"], forced)


def tools_streamed():
    # Quotes, a backslash, a newline, a tab and multi-byte characters: the pieces are cut
    # anywhere (inside escapes and characters), the whole must still parse to the same object.
    question = TRICKY
    with client.messages.stream(model=CHUNKS, max_tokens=64, messages=user(question), tools=TOOLS) as s:
        events = list(s)
        final = s.get_final_message()
    pieces = [e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    uses = [b for b in final.content if b.type == "tool_use"]
    check("tool use stream: arguments came as several input_json_delta events", len(pieces) >= 2, pieces)
    check("tool use stream: pieces join to the input", json.loads("".join(pieces)) == {"query": question}, pieces)
    check("tool use stream: final message has one tool_use", len(uses) == 1, final.content)
    check("tool use stream: final input", uses and uses[0].input == {"query": question}, uses)
    check("tool use stream: final name and id", uses and uses[0].name == "search" and bool(uses[0].id), uses)
    check("tool use stream: stop_reason tool_use", final.stop_reason == "tool_use", final)


def tool_result():
    question = "weather in Paris?"
    first = client.messages.create(model=MOCK, max_tokens=64, messages=user(question), tools=TOOLS)
    use = [b for b in first.content if b.type == "tool_use"][0]
    history = user(question) + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]}]

    def answer(content):
        return client.messages.create(
            model=MOCK,
            max_tokens=64,
            tools=TOOLS,
            messages=history + [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": content}]}],
        )

    m = answer("sunny, 21C")
    check("tool result: echo", m.content[0].text == PREFIX_TEXT + "tool result sunny, 21C", m.content)
    check("tool result: stop_reason end_turn", m.stop_reason == "end_turn", m)
    m = answer([{"type": "text", "text": "sunny, 21C"}])
    check("tool result: text blocks echo", m.content[0].text == PREFIX_TEXT + "tool result sunny, 21C", m.content)


def image():
    content = [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
    ]
    m = client.messages.create(model=MOCK, max_tokens=64, messages=[{"role": "user", "content": content}])
    check("image: reply counts one image", m.content[0].text == PREFIX_TEXT + "what is in this picture? [1 image]", m.content)


def errors():
    try:
        client.messages.create(model=f"{prefix}-429", max_tokens=64, messages=user("x"))
        check("error: upstream 429 raises", False, "no exception")
    except anthropic.RateLimitError as e:
        check("error: upstream 429 is RateLimitError", e.status_code == 429, e)
        check("error: 429 keeps the upstream's retry-after", e.response.headers.get("retry-after") == "1", dict(e.response.headers))
        check("error: Anthropic-shaped body", isinstance(e.body, dict) and e.body.get("type") == "error" and e.body["error"].get("type") == "rate_limit_error", e.body)
    try:
        client.messages.create(model=f"{prefix}-500", max_tokens=64, messages=user("x"))
        check("error: upstream 500 raises", False, "no exception")
    except anthropic.APIStatusError as e:
        check("error: upstream 500 is a 502 APIStatusError", e.status_code == 502, e)
        check("error: 502 Anthropic-shaped body", isinstance(e.body, dict) and e.body.get("type") == "error", e.body)
    try:
        # The SDK insists on max_tokens; `omit` leaves it out of the body.
        client.messages.create(model=MOCK, max_tokens=anthropic.omit, messages=user("x"))
        check("error: missing max_tokens raises", False, "no exception")
    except anthropic.BadRequestError as e:
        check("error: missing max_tokens is BadRequestError", e.status_code == 400, e)
        msg = (e.body or {}).get("error", {}).get("message", "") if isinstance(e.body, dict) else ""
        check("error: the gateway's message", msg == "max_tokens: Field required", e.body)
        check("error: invalid_request_error", e.body["error"].get("type") == "invalid_request_error", e.body)
        check("error: x-shardgate-error header", e.response.headers.get("x-shardgate-error") == "bad_request", dict(e.response.headers))
    try:
        client.messages.create(model="no-such-model", max_tokens=64, messages=user("x"))
        check("error: unknown model raises", False, "no exception")
    except anthropic.NotFoundError as e:
        check("error: unknown model is NotFoundError", e.status_code == 404 and "no-such-model" in e.message, e)
    try:
        with client.messages.stream(model=f"{prefix}-cut", max_tokens=64, messages=user("cut me off")) as s:
            got = "".join(s.text_stream)
        check("error: in-band stream error raises", False, f"stream ended quietly with {got!r}")
    except anthropic.APIError as e:
        check("error: in-band stream error raises APIError", True, e)


def pass_through_bytes():
    """Relay untouched: the bytes the SDK got are the bytes the mock sends for the request the
    gateway forwarded (replayed straight to the mock: its answers are deterministic)."""
    sent = {"model": MOCK, "max_tokens": 64, "messages": user("relay me")}
    raw = client.messages.with_raw_response.create(**sent)
    got = raw.http_response.content
    up = probe.chat()
    body = json.loads(up["body"])
    check("pass-through: request forwarded as sent, model renamed", body == dict(sent, model="mock"), (body, sent))
    headers = {"content-type": "application/json", "anthropic-version": up["headers"].get("anthropic-version", "")}
    status, direct = post_raw(f"http://{mock_addr}{up['path']}", headers, up["body"].encode())
    check("pass-through: replay to the mock is 200", status == 200, direct)
    check("pass-through: response bytes identical to the mock's", got == direct, (got, direct))
    check("pass-through: SDK parsed it", raw.parse().content[0].text == PREFIX_TEXT + "relay me", got)

    sent = dict(sent, messages=user("relay my stream"), stream=True)
    with client.messages.with_streaming_response.create(**sent) as r:
        got = r.read()
    up = probe.chat()
    status, direct = post_raw(f"http://{mock_addr}{up['path']}", headers, up["body"].encode())
    check("pass-through stream: replay to the mock is 200", status == 200, direct)
    check("pass-through stream: event bytes identical to the mock's", got == direct, (got, direct))


sections = [
    ("plain message", plain),
    ("request parameters", request_params),
    ("streaming", streaming),
    ("tool use", tools),
    ("streamed tool use", tools_streamed),
    ("tool result round trip", tool_result),
    ("image input", image),
    ("errors", errors),
]
if PASS_THROUGH:
    sections.append(("pass-through bytes", pass_through_bytes))
for name, fn in sections:
    section(name, fn)
finish()
