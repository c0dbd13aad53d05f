"""Drives the gateway's Responses API with the official `openai` Python SDK.

Run by the gateway's integration tests with GATEWAY_URL, GOOD_KEY and MODELS
(comma-separated: one model per provider kind) set. Prints one line per check and exits
non-zero on the first failure.
"""

import json
import os
import sys

import openai

client = openai.OpenAI(base_url=os.environ["GATEWAY_URL"] + "/v1", api_key=os.environ["GOOD_KEY"],
                       max_retries=0, timeout=20)


def check(name, fn):
    try:
        fn()
    except Exception as e:  # report and fail
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        sys.exit(1)
    print(f"ok {name}")


TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}]


def plain(model):
    r = client.responses.create(model=model, input="hi")
    assert r.output_text == "Hello from mock provider.", r
    assert r.usage.output_tokens > 0, r


def streamed(model):
    text, completed = [], None
    for event in client.responses.create(model=model, input="hi", stream=True):
        if event.type == "response.output_text.delta":
            text.append(event.delta)
        elif event.type == "response.completed":
            completed = event.response
    assert "".join(text) == "Hello from mock provider.", text
    assert completed is not None and completed.output_text == "Hello from mock provider.", completed


def function_calling(model):
    r = client.responses.create(model=model, input="What is the weather in Paris?", tools=TOOLS)
    call = next(item for item in r.output if item.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"location": "Paris"}, call
    r = client.responses.create(model=model, tools=TOOLS, previous_response_id=r.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"forecast": "sunny"}'}])
    assert r.output_text == "It is sunny in Paris.", r


def previous_response(model):
    first = client.responses.create(model=model, input="My name is Ada.")
    second = client.responses.create(model=model, input="hi", previous_response_id=first.id)
    assert second.output_text == "Hello from mock provider.", second
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text, again


models = [m for m in os.environ["MODELS"].split(",") if m]
# Models served by `openai` entries get the request passed through to the provider's own
# Responses API; the mock answers those with text only.
passthrough = [m for m in os.environ.get("PASSTHROUGH_MODELS", "").split(",") if m]
count = 0
for model in models:
    check(f"{model}: responses.create", lambda: plain(model))
    check(f"{model}: streamed", lambda: streamed(model))
    check(f"{model}: previous_response_id", lambda: previous_response(model))
    count += 3
    if model not in passthrough:
        check(f"{model}: function calling", lambda: function_calling(model))
        count += 1
print(f"{count} passed, 0 failed")
