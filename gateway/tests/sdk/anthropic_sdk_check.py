"""Drives the gateway's Messages API with the official `anthropic` Python SDK.

Run by the gateway's integration tests with GATEWAY_URL, GOOD_KEY, BAD_KEY and MODELS
(comma-separated: one model per provider kind) set; `error-429` (every provider answers
429) must exist. Prints one line per check and exits non-zero on the first failure.
"""

import os
import sys

import anthropic

base = os.environ["GATEWAY_URL"]
good = anthropic.Anthropic(base_url=base, api_key=os.environ["GOOD_KEY"], max_retries=0, timeout=20)
bad = anthropic.Anthropic(base_url=base, api_key=os.environ["BAD_KEY"], max_retries=0, timeout=20)


def check(name, fn):
    try:
        fn()
    except Exception as e:  # report and fail
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        sys.exit(1)
    print(f"ok {name}")


TOOLS = [{
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}]


def create(model):
    r = good.messages.create(model=model, max_tokens=256, messages=[{"role": "user", "content": "hi"}])
    assert r.content[0].text == "Hello from mock provider.", r
    assert r.stop_reason == "end_turn", r
    assert r.usage.output_tokens > 0, r


def stream(model):
    with good.messages.stream(model=model, max_tokens=256, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello from mock provider.", text
    assert final.stop_reason == "end_turn", final
    assert final.usage.output_tokens > 0, final


def tools(model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = good.messages.create(model=model, max_tokens=256, messages=messages, tools=TOOLS)
    assert r.stop_reason == "tool_use", r
    call = next(b for b in r.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"location": "Paris"}, call
    messages.append({"role": "assistant", "content": r.content})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": '{"forecast": "sunny"}'}]})
    r = good.messages.create(model=model, max_tokens=256, messages=messages, tools=TOOLS)
    assert r.content[0].text == "It is sunny in Paris.", r


def auth_error():
    try:
        bad.messages.create(model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    except anthropic.AuthenticationError:
        return
    raise AssertionError("no AuthenticationError")


def rate_limit():
    try:
        good.messages.create(model="error-429", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    except anthropic.RateLimitError:
        return
    raise AssertionError("no RateLimitError")


def count_tokens():
    r = good.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.input_tokens > 0, r


def list_models():
    page = good.models.list()
    ids = [m.id for m in page.data]
    assert "gpt-4o-mini" in ids, ids
    assert all(m.type == "model" for m in page.data), page
    assert page.has_more is False and page.first_id == ids[0] and page.last_id == ids[-1], page


models = [m for m in os.environ["MODELS"].split(",") if m]
count = 0
for model in models:
    check(f"{model}: create", lambda: create(model))
    check(f"{model}: stream helper", lambda: stream(model))
    check(f"{model}: tool use round trip", lambda: tools(model))
    count += 3
check("AuthenticationError on a bad key", auth_error)
check("count_tokens", count_tokens)
check("models.list in Anthropic's shape", list_models)
# Last: the 429s open both entries' breakers for their Retry-After.
check("RateLimitError when every provider answers 429", rate_limit)
print(f"{count + 4} passed, 0 failed")
