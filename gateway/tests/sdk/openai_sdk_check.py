"""Drives the gateway with the official `openai` Python SDK.

Run by the gateway's integration tests with GATEWAY_URL, GOOD_KEY, BAD_KEY and MODELS
(comma-separated: one model per provider kind) set; `error-429` (every provider answers
429) must exist. Prints one line per check and exits non-zero on the first failure.
"""

import json
import os
import sys

import openai

base = os.environ["GATEWAY_URL"] + "/v1"
good = openai.OpenAI(base_url=base, api_key=os.environ["GOOD_KEY"], max_retries=0, timeout=20)
bad = openai.OpenAI(base_url=base, api_key=os.environ["BAD_KEY"], max_retries=0, timeout=20)


def check(name, fn):
    try:
        fn()
    except Exception as e:  # report and fail
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        sys.exit(1)
    print(f"ok {name}")


TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}]


def non_stream(model):
    r = good.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello from mock provider.", r
    assert r.usage.total_tokens > 0


def tools(model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = good.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls", r
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    messages.append(r.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sunny"}'})
    r = good.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    assert r.choices[0].message.content == "It is sunny in Paris.", r


def stream(model):
    parts = []
    usage = None
    for chunk in good.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            parts.append(c.delta.content or "")
    assert "".join(parts) == "Hello from mock provider.", parts
    assert usage is not None and usage.completion_tokens == 5, usage


def auth_error():
    try:
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    except openai.AuthenticationError:
        return
    raise AssertionError("no AuthenticationError")


def rate_limit():
    try:
        good.chat.completions.create(model="error-429", messages=[{"role": "user", "content": "hi"}])
    except openai.RateLimitError:
        return
    raise AssertionError("no RateLimitError")


def embeddings():
    r = good.embeddings.create(model="text-embedding-3-small", input=["a b c"])
    assert len(r.data[0].embedding) == 8


models = [m for m in os.environ["MODELS"].split(",") if m]
count = 0
for model in models:
    check(f"{model}: non-stream", lambda: non_stream(model))
    check(f"{model}: stream", lambda: stream(model))
    check(f"{model}: tool call round trip", lambda: tools(model))
    count += 3
check("AuthenticationError on a bad key", auth_error)
check("embeddings", embeddings)
# Last: the 429s open both entries' breakers for their Retry-After.
check("RateLimitError when every provider answers 429", rate_limit)
print(f"{count + 3} passed, 0 failed")
