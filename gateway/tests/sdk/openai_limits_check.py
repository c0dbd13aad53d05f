"""Rate limits as the official `openai` Python SDK sees them.

Run by the gateway's integration tests with GATEWAY_URL and GOOD_KEY set; the key has
an RPM of 2 and a fresh minute window. Prints one line per check and exits non-zero on
the first failure.
"""

import os
import sys

import openai

client = openai.OpenAI(
    base_url=os.environ["GATEWAY_URL"] + "/v1", api_key=os.environ["GOOD_KEY"], max_retries=0, timeout=20
)
MESSAGES = [{"role": "user", "content": "hi"}]


def check(name, fn):
    try:
        fn()
    except Exception as e:  # report and fail
        print(f"FAIL {name}: {type(e).__name__}: {e}")
        sys.exit(1)
    print(f"ok {name}")


def raw_headers():
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-ratelimit-limit-requests"] == "2", dict(raw.headers)
    assert raw.headers["x-ratelimit-remaining-requests"] == "1", dict(raw.headers)
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s"), dict(raw.headers)
    assert raw.parse().choices[0].message.content


def second_passes():
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def third_is_refused():
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    except openai.RateLimitError as e:
        assert e.status_code == 429
        assert e.code == "rate_limit_exceeded", e.body
        assert "requests per minute" in e.message, e.message
        assert int(e.response.headers["retry-after"]) >= 1
        assert e.response.headers["x-ratelimit-remaining-requests"] == "0"
        return
    raise AssertionError("no RateLimitError")


checks = [("raw_headers", raw_headers), ("second_passes", second_passes), ("third_is_refused", third_is_refused)]
for name, fn in checks:
    check(name, fn)
print(f"{len(checks)} passed, 0 failed")
