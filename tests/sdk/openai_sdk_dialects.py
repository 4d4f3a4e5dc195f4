"""The official `openai` Python SDK against a gateway that translates to another provider kind.

Usage: python3 tests/sdk/openai_sdk_dialects.py GATEWAY PROBE PREFIX
  GATEWAY  the gateway's root, e.g. http://127.0.0.1:8080
  PROBE    host:port of the Rust test's mock probe (tests/common `with_probe`)
  PREFIX   `claude` (Anthropic-kind upstream) or `gemini` (Gemini-kind upstream); the config
           has PREFIX-mock (`mock`), PREFIX-chunks (`mock;chunks=5`), PREFIX-usage
           (`mock;cached_tokens=4;reasoning_tokens=3`), PREFIX-429, PREFIX-500 and PREFIX-cut
           (`mock;error_after=2`).
Run by tests/sdk.rs. One line per check, then `N passed, M failed`; exit 1 on any failure.
A missing SDK is a failure, never a skip.
"""

import json
import sys

import openai  # noqa: E402  (ImportError fails the run on purpose)

from harness import PNG_B64, Probe, check, delta, finish, model_tokens, section, settled_delta

gateway, probe, prefix = sys.argv[1], Probe(sys.argv[2]), sys.argv[3]
assert prefix in ("claude", "gemini"), prefix
KEY = "sk-test-not-a-real-key"
client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0, timeout=20)
MOCK, CHUNKS, USAGE = f"{prefix}-mock", f"{prefix}-chunks", f"{prefix}-usage"
# Anthropic folds thinking into output_tokens and has no separate count, so a gateway in front
# of it cannot know the reasoning share; Gemini reports it (thoughtsTokenCount).
REASONING_KNOWN = prefix == "gemini"
PREFIX_TEXT = "This is a mock reply to: "
TRICKY = 'météo "à" Paris \\ ☀️ 日本\nnext\tline </script> \u2028 end'

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    },
]


def user(text):
    return [{"role": "user", "content": text}]


def usage_matches(tag, u, exp):
    """The SDK's usage equals what the mock reported (OpenAI counts: prompt includes cached,
    completion includes reasoning)."""
    check(f"{tag}: usage present", u is not None, u)
    if u is None:
        return
    check(f"{tag}: prompt_tokens == mock input", u.prompt_tokens == exp["input"], (u, exp))
    check(f"{tag}: completion_tokens == mock output", u.completion_tokens == exp["output"], (u, exp))
    check(f"{tag}: total_tokens", u.total_tokens == exp["input"] + exp["output"], u)
    cached = (u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0) or 0
    check(f"{tag}: cached_tokens == mock cached_input", cached == exp["cached_input"], (u, exp))
    if REASONING_KNOWN:
        reasoning = (u.completion_tokens_details.reasoning_tokens if u.completion_tokens_details else 0) or 0
        check(f"{tag}: reasoning_tokens == mock reasoning", reasoning == exp["reasoning"], (u, exp))


def metrics_match(tag, model, before, exp):
    """The gateway accounted exactly the mock's usage for this one call."""
    kinds = ["input", "output", "cached_input"] + (["reasoning"] if REASONING_KNOWN else [])
    d = settled_delta(gateway, model, before, {k: exp[k] for k in kinds})
    check(f"{tag}: /metrics tokens delta == mock usage", all(d[k] == exp[k] for k in kinds), (d, exp))


def upstream_path_is_translated(tag):
    path = probe.chat()["path"]
    want = "/v1/messages" if prefix == "claude" else ":generateContent"
    check(f"{tag}: upstream got the {prefix} format", want in path, path)


def plain():
    before = model_tokens(gateway, MOCK)
    r = client.chat.completions.create(model=MOCK, messages=user("hello from the sdk"))
    exp = probe.usage()
    upstream_path_is_translated("chat")
    headers = probe.chat()["headers"]
    check("chat: the client's key is not sent upstream", not any(KEY in v for v in headers.values()), headers)
    check("chat: object", r.object == "chat.completion", r)
    check("chat: content", r.choices[0].message.content == PREFIX_TEXT + "hello from the sdk", r)
    check("chat: role", r.choices[0].message.role == "assistant", r)
    check("chat: finish_reason stop", r.choices[0].finish_reason == "stop", r)
    check("chat: no tool_calls", not r.choices[0].message.tool_calls, r)
    usage_matches("chat", r.usage, exp)
    metrics_match("chat", MOCK, before, exp)


def request_params():
    """The common parameters reach the upstream in its own format."""
    client.chat.completions.create(
        model=MOCK,
        messages=[{"role": "system", "content": "be brief"}] + user("params"),
        max_tokens=50,
        temperature=0.5,
        stop=["zz"],
    )
    body = json.loads(probe.chat()["body"])
    if prefix == "claude":
        check("params: system", body.get("system") in ("be brief", [{"type": "text", "text": "be brief"}]), body)
        check("params: max_tokens", body.get("max_tokens") == 50, body)
        check("params: temperature", body.get("temperature") == 0.5, body)
        check("params: stop_sequences", body.get("stop_sequences") == ["zz"], body)
        check("params: only the user turn in messages", [m["role"] for m in body.get("messages", [])] == ["user"], body)
    else:
        gen = body.get("generationConfig", {})
        sys_text = [p.get("text") for p in body.get("systemInstruction", {}).get("parts", [])]
        check("params: systemInstruction", sys_text == ["be brief"], body)
        check("params: maxOutputTokens", gen.get("maxOutputTokens") == 50, body)
        check("params: temperature", gen.get("temperature") == 0.5, body)
        check("params: stopSequences", gen.get("stopSequences") == ["zz"], body)
        check("params: only the user turn in contents", [c.get("role") for c in body.get("contents", [])] == ["user"], body)


def usage_details():
    before = model_tokens(gateway, USAGE)
    r = client.chat.completions.create(model=USAGE, messages=user("count my tokens"))
    exp = probe.usage()
    check("usage knobs: mock reported cached and reasoning", exp["cached_input"] == 4 and exp["reasoning"] == 3, exp)
    usage_matches("usage knobs", r.usage, exp)
    metrics_match("usage knobs", USAGE, before, exp)

    before = model_tokens(gateway, USAGE)
    chunks = list(
        client.chat.completions.create(
            model=USAGE, messages=user("count my streamed tokens"), stream=True, stream_options={"include_usage": True}
        )
    )
    exp = probe.usage()
    usage_matches("usage knobs, streamed", chunks[-1].usage, exp)
    metrics_match("usage knobs, streamed", USAGE, before, exp)


def streaming():
    whole = client.chat.completions.create(model=MOCK, messages=user("stream through the sdk")).choices[0].message.content
    before = model_tokens(gateway, MOCK)
    chunks = list(
        client.chat.completions.create(
            model=MOCK,
            messages=user("stream through the sdk"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    exp = probe.usage()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    check("stream: several chunks", len(chunks) > 2, len(chunks))
    check("stream: object", all(c.object == "chat.completion.chunk" for c in chunks), chunks[:1])
    check("stream: text == non-streamed text", text == whole, (text, whole))
    check("stream: one finish_reason, stop", finish == ["stop"], finish)
    check("stream: first delta has role assistant", chunks[0].choices and chunks[0].choices[0].delta.role == "assistant", chunks[0])
    last = chunks[-1]
    check("stream+usage: final chunk has usage and no choices", last.usage is not None and last.choices == [], last)
    check("stream+usage: only the final chunk has usage", all(c.usage is None for c in chunks[:-1]), [c.usage for c in chunks])
    usage_matches("stream+usage", last.usage, exp)
    metrics_match("stream+usage", MOCK, before, exp)

    chunks = list(client.chat.completions.create(model=MOCK, messages=user("stream through the sdk"), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("stream, no include_usage: text == non-streamed", text == whole, text)
    check("stream, no include_usage: no chunk has usage", all(c.usage is None for c in chunks), [c.usage for c in chunks if c.usage])
    check("stream, no include_usage: every chunk has a choice", all(len(c.choices) == 1 for c in chunks), chunks[-1])

    whole = client.chat.completions.create(model=CHUNKS, messages=user(TRICKY)).choices[0].message.content
    chunks = client.chat.completions.create(model=CHUNKS, messages=user(TRICKY), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("stream: escapes and multi-byte text survive", whole == PREFIX_TEXT + TRICKY and text == whole, (text, whole))


def tools():
    before = model_tokens(gateway, MOCK)
    r = client.chat.completions.create(model=MOCK, messages=user("weather in Paris?"), tools=TOOLS)
    exp = probe.usage()
    msg = r.choices[0].message
    check("tools: finish_reason tool_calls", r.choices[0].finish_reason == "tool_calls", r)
    check("tools: one call", msg.tool_calls is not None and len(msg.tool_calls) == 1, msg)
    call = msg.tool_calls[0]
    check("tools: type function", call.type == "function", call)
    check("tools: id present", bool(call.id), call)
    check("tools: first tool called", call.function.name == "search", call)
    check("tools: arguments", json.loads(call.function.arguments) == {"query": "weather in Paris?"}, call)
    check("tools: no text", not msg.content, msg)
    usage_matches("tools", r.usage, exp)
    metrics_match("tools", MOCK, before, exp)

    forced = client.chat.completions.create(
        model=MOCK,
        messages=user("define gateway"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    calls = forced.choices[0].message.tool_calls or []
    check("tools: forced tool_choice is honoured", [c.function.name for c in calls] == ["lookup"], forced)

    none = client.chat.completions.create(model=MOCK, messages=user("just talk"), tools=TOOLS, tool_choice="none")
    check("tools: tool_choice none gives text", none.choices[0].message.content == PREFIX_TEXT + "just talk", none)


def tools_streamed():
    # Quotes, a backslash, a newline, a tab and multi-byte characters: the pieces are cut
    # anywhere (inside escapes and characters), the whole must still parse to the same object.
    question = TRICKY
    want = {"query": question}
    stream = client.chat.completions.create(model=CHUNKS, messages=user(question), tools=TOOLS, stream=True)
    calls, arg_deltas, finish = {}, 0, []
    for chunk in stream:
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        if ch.finish_reason:
            finish.append(ch.finish_reason)
        for tc in ch.delta.tool_calls or []:
            # As OpenAI documents it: the id and name come once, in the call's first delta
            # (the SDK's own accumulator concatenates names, so a repeat would show).
            c = calls.setdefault(tc.index, {"ids": [], "name": "", "arguments": ""})
            if tc.id:
                c["ids"].append(tc.id)
            if tc.function and tc.function.name:
                c["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                c["arguments"] += tc.function.arguments
                arg_deltas += 1
    check("tools stream: one call at index 0", list(calls) == [0], calls)
    c = calls.get(0, {})
    check("tools stream: id sent once", len(c.get("ids", [])) == 1 and bool(c["ids"][0]), c)
    check("tools stream: name sent once", c.get("name") == "search", c)
    check("tools stream: arguments parse to the same object", json.loads(c.get("arguments") or "null") == want, c)
    check("tools stream: finish_reason tool_calls", finish == ["tool_calls"], finish)
    if prefix == "claude":
        # The Anthropic mock sends the arguments as 5 input_json_delta pieces.
        check("tools stream: arguments came in several deltas", arg_deltas >= 2, arg_deltas)
    else:
        # The Gemini mock sends the whole call in one chunk.
        check("tools stream: arguments came in one delta", arg_deltas == 1, arg_deltas)

    # The SDK's own stream helper accumulates the same call.
    with client.chat.completions.stream(model=CHUNKS, messages=user(question), tools=TOOLS) as s:
        kinds = [ev.type for ev in s]
        final = s.get_final_completion()
    fc = final.choices[0]
    check("stream helper: finish_reason tool_calls", fc.finish_reason == "tool_calls", fc)
    check("stream helper: one call", fc.message.tool_calls is not None and len(fc.message.tool_calls) == 1, fc.message)
    tc = fc.message.tool_calls[0]
    check("stream helper: arguments parse to the same object", json.loads(tc.function.arguments) == want, tc)
    check("stream helper: name", tc.function.name == "search", tc)
    check("stream helper: arguments.done event", "tool_calls.function.arguments.done" in kinds, kinds)


def tool_result():
    first = client.chat.completions.create(model=MOCK, messages=user("weather in Paris?"), tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    history = user("weather in Paris?") + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
            ],
        },
    ]
    r = client.chat.completions.create(
        model=MOCK, messages=history + [{"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}], tools=TOOLS
    )
    # Gemini's functionResponse.response must be an object: the gateway wraps a plain text
    # result as {"result": text}, which the mock echoes compactly.
    echo = "sunny, 21C" if prefix == "claude" else '{"result":"sunny, 21C"}'
    check("tool result: text result echoed", r.choices[0].message.content == PREFIX_TEXT + "tool result " + echo, r)
    check("tool result: finish_reason stop", r.choices[0].finish_reason == "stop", r)

    r = client.chat.completions.create(
        model=MOCK, messages=history + [{"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}], tools=TOOLS
    )
    echo = '{"temp": 21}' if prefix == "claude" else '{"temp":21}'
    check("tool result: JSON result echoed", r.choices[0].message.content == PREFIX_TEXT + "tool result " + echo, r)

    # Two calls in one assistant turn, two results: one upstream turn carries both.
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "search", "arguments": '{"query": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "search", "arguments": '{"query": "Lyon"}'}},
    ]
    r = client.chat.completions.create(
        model=MOCK,
        tools=TOOLS,
        messages=user("weather in Paris and Lyon?")
        + [{"role": "assistant", "content": None, "tool_calls": calls}]
        + [{"role": "tool", "tool_call_id": "call_a", "content": "r1"}, {"role": "tool", "tool_call_id": "call_b", "content": "r2"}],
    )
    echo = "r1 r2" if prefix == "claude" else '{"result":"r1"} {"result":"r2"}'
    check("tool result: parallel results in one turn", r.choices[0].message.content == PREFIX_TEXT + "tool result " + echo, r)

    chunks = list(
        client.chat.completions.create(
            model=MOCK,
            messages=history + [{"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}],
            tools=TOOLS,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check("tool result: streamed echo", text.startswith(PREFIX_TEXT + "tool result "), text)


def image():
    content = [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]
    r = client.chat.completions.create(model=MOCK, messages=[{"role": "user", "content": content}])
    check("image: reply counts one image", r.choices[0].message.content == PREFIX_TEXT + "what is in this picture? [1 image]", r)
    body = json.loads(probe.chat()["body"])
    check("image: the bytes reached the upstream", PNG_B64 in json.dumps(body), body)


def errors():
    try:
        client.chat.completions.create(model=f"{prefix}-429", messages=user("x"))
        check("error: upstream 429 raises", False, "no exception")
    except openai.RateLimitError as e:
        check("error: upstream 429 is RateLimitError", e.status_code == 429, e)
        check("error: 429 keeps the upstream's retry-after", e.response.headers.get("retry-after") == "1", dict(e.response.headers))
        check("error: 429 has an OpenAI-shaped body", isinstance(e.body, dict) and bool(e.message), e.body)
    try:
        client.chat.completions.create(model=f"{prefix}-429", messages=user("x"), stream=True)
        check("error: streamed upstream 429 raises", False, "no exception")
    except openai.RateLimitError as e:
        check("error: streamed upstream 429 is RateLimitError", e.status_code == 429, e)
    try:
        client.chat.completions.create(model=f"{prefix}-500", messages=user("x"))
        check("error: upstream 500 raises", False, "no exception")
    except openai.APIStatusError as e:
        check("error: upstream 500 is a 502 APIStatusError", e.status_code == 502, e)
        check("error: 502 code upstream_status", e.code == "upstream_status", e.body)
    try:
        got = ""
        for chunk in client.chat.completions.create(model=f"{prefix}-cut", messages=user("cut me off"), stream=True):
            if chunk.choices:
                got += chunk.choices[0].delta.content or ""
        check("error: in-band stream error raises", False, f"stream ended quietly with {got!r}")
    except openai.APIError as e:
        check("error: in-band stream error raises APIError", True, e)


for name, fn in [
    ("plain chat", plain),
    ("request parameters", request_params),
    ("usage details", usage_details),
    ("streaming", streaming),
    ("tool calls", tools),
    ("streamed tool calls", tools_streamed),
    ("tool result round trip", tool_result),
    ("image input", image),
    ("upstream errors", errors),
]:
    section(name, fn)
finish()
