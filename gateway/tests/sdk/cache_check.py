"""The official `openai` and `anthropic` Python SDKs get the same answer from a cache hit
as from the provider: text, tool calls, usage and the stream's events, with a new id.

Run by the gateway's integration tests with GATEWAY_URL and GOOD_KEY set, a workspace
whose cache is on, `gpt-4o-mini` on an `openai` entry and `claude-sonnet-4-5` on an
`anthropic` entry. Prints one line per check and exits non-zero on the first failure.
"""

import os
import sys

import anthropic
import openai

base = os.environ["GATEWAY_URL"]
key = os.environ["GOOD_KEY"]
oa = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=20)
an = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=20)
passed = 0


def check(name, fn):
    global passed
    try:
        fn()
    except Exception as e:  # report and fail
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        sys.exit(1)
    passed += 1
    print(f"ok {name}")


def twice(call):
    """The same call twice: (first, second) parsed answers and their cache headers."""
    out = []
    for _ in range(2):
        raw = call()
        out.append((raw.headers.get("x-perpetuo-cache"), raw.parse()))
    assert [c for c, _ in out] == ["miss", "hit"], [c for c, _ in out]
    return out[0][1], out[1][1]


def openai_whole():
    live, hit = twice(lambda: oa.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "cache me"}]))
    assert hit.choices[0].message.content == live.choices[0].message.content
    assert hit.choices[0].finish_reason == live.choices[0].finish_reason
    assert hit.usage == live.usage, (hit.usage, live.usage)
    assert hit.id != live.id


def openai_stream():
    def run():
        raw = oa.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "stream me"}])
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return raw.headers.get("x-perpetuo-cache"), text, len(chunks), chunks[-1].usage
    live, hit = run(), run()
    assert (live[0], hit[0]) == ("miss", "hit"), (live[0], hit[0])
    assert hit[1:] == live[1:], (hit, live)


def openai_tool_call():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}}}}]
    live, hit = twice(lambda: oa.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", tools=tools, tool_choice="required",
        messages=[{"role": "user", "content": "weather in Paris?"}]))
    a, b = live.choices[0].message.tool_calls, hit.choices[0].message.tool_calls
    assert a and [(t.function.name, t.function.arguments) for t in a] == [
        (t.function.name, t.function.arguments) for t in b], (a, b)


def openai_extra_headers():
    # A request steers the cache with standard headers, through `extra_headers`.
    raw = oa.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "cache me"}],
        extra_headers={"Cache-Control": "no-store"})
    assert raw.headers.get("x-perpetuo-cache") == "bypass"


def anthropic_whole():
    live, hit = twice(lambda: an.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "cache me"}]))
    assert [b.text for b in hit.content] == [b.text for b in live.content]
    assert hit.stop_reason == live.stop_reason
    assert hit.usage == live.usage, (hit.usage, live.usage)
    assert hit.id != live.id and hit.id.startswith("msg_")


def anthropic_stream():
    def run():
        with an.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                messages=[{"role": "user", "content": "stream me"}]) as s:
            events = [e.type for e in s]
            final = s.get_final_message()
            return s.response.headers.get("x-perpetuo-cache"), events, final
    live, hit = run(), run()
    assert (live[0], hit[0]) == ("miss", "hit"), (live[0], hit[0])
    assert hit[1] == live[1], (hit[1], live[1])
    assert [b.text for b in hit[2].content] == [b.text for b in live[2].content]
    assert hit[2].usage == live[2].usage


check("openai: a whole answer from the cache is the provider's", openai_whole)
check("openai: a stream from the cache has the provider's chunks and usage", openai_stream)
check("openai: tool calls from the cache", openai_tool_call)
check("openai: Cache-Control through extra_headers", openai_extra_headers)
check("anthropic: a whole message from the cache is the provider's", anthropic_whole)
check("anthropic: a stream from the cache has the provider's events", anthropic_stream)
print(f"{passed} passed, 0 failed")
