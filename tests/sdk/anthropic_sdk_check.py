"""Drives Switchboard's /v1/messages with the official `anthropic` Python SDK, unchanged
except for base_url, against Anthropic-, OpenAI- and Gemini-format providers.

Usage: anthropic_sdk_check.py BASE_URL API_KEY POOR_KEY LIMITED_KEY
  API_KEY     a funded user's gateway key
  POOR_KEY    a key of an account with no credits (402)
  LIMITED_KEY a key limited to 1 request per minute (429 on its second request)
Exits non-zero (with a message) on the first thing that does not work as the SDK expects.

The fake upstream behind the gateway answers in the order of the steps the Rust test
scripted; the calls below must stay in that order.
"""
import sys

import anthropic
from anthropic import Anthropic

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def expect_error(kind, status, call):
    try:
        call()
    except anthropic.APIStatusError as error:
        assert isinstance(error, kind), f"expected {kind.__name__}, got {type(error).__name__}: {error!r}"
        assert error.status_code == status, (status, error.status_code, error)
        body = error.body
        assert isinstance(body, dict) and body.get("type") == "error", body
        assert body["error"]["type"] and body["error"]["message"], body
        return error
    raise AssertionError(f"expected {kind.__name__} ({status})")


def main() -> None:
    base_url, api_key, poor_key, limited_key = sys.argv[1:5]
    client = Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)

    # 1. A message to an Anthropic-format provider (the SDK sends x-api-key).
    message = client.messages.create(
        model="claude-3-5-sonnet-20241022",
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Say hello."}],
    )
    assert message.type == "message" and message.role == "assistant", message
    assert message.content[0].type == "text" and message.content[0].text == "Hello from Claude.", message
    assert message.stop_reason == "end_turn", message
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0, message.usage
    assert message.usage.cache_read_input_tokens == 40, message.usage
    assert message.usage.cache_creation_input_tokens == 60, message.usage

    # 2. A streamed message with extended thinking; the SDK's helpers assemble the final
    # message, thinking block (and its signature) included.
    with client.messages.stream(
        model="claude-3-5-sonnet-20241022",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Count to five."}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "1 2 3 4 5", text
    assert final.content[0].type == "thinking", final
    assert final.content[0].thinking == "Counting from one." and final.content[0].signature == "sig-sdk-1", final
    assert final.content[1].text == "1 2 3 4 5", final
    assert final.stop_reason == "end_turn", final
    assert final.usage.output_tokens == 9, final.usage

    # 3. Tools, with a tool-use round trip, through an OpenAI-format provider.
    first = client.messages.create(
        model="openai/gpt-4o",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use", first
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}, call
    second = client.messages.create(
        model="openai/gpt-4o",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C, sunny"}]},
        ],
    )
    assert second.content[0].text == "It is 18 C and sunny in Paris.", second
    assert second.stop_reason == "end_turn", second

    # 4. A streamed message from a Gemini-format provider, tool call included.
    with client.messages.stream(
        model="gemini-2.0-flash",
        max_tokens=100,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    ) as stream:
        final = stream.get_final_message()
    tool_uses = [block for block in final.content if block.type == "tool_use"]
    assert tool_uses and tool_uses[0].input == {"city": "Rome"}, final
    assert final.stop_reason == "tool_use", final

    # 5. count_tokens: an estimate, no charge, no upstream call.
    counted = client.messages.count_tokens(
        model="claude-3-5-sonnet-20241022",
        messages=[{"role": "user", "content": "How many tokens is this?"}],
    )
    assert counted.input_tokens > 0, counted

    # 6. The models list in Anthropic's shape.
    ids = [model.id for model in client.models.list()]
    assert "claude-3-5-sonnet-20241022" in ids and "text-embedding-3-small" not in ids, ids

    # 7. Every error class the SDK maps.
    bad = Anthropic(base_url=base_url, api_key="sk-sb-not-a-real-key", max_retries=0, timeout=30)
    hi = [{"role": "user", "content": "hi"}]
    expect_error(anthropic.AuthenticationError, 401,
                 lambda: bad.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=5, messages=hi))
    poor = Anthropic(base_url=base_url, api_key=poor_key, max_retries=0, timeout=30)
    billing = expect_error(anthropic.APIStatusError, 402,
                           lambda: poor.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=5, messages=hi))
    assert billing.body["error"]["type"] == "billing_error", billing.body
    expect_error(anthropic.NotFoundError, 404,
                 lambda: client.messages.create(model="no-such-model", max_tokens=5, messages=hi))
    expect_error(anthropic.BadRequestError, 400,
                 lambda: client.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=0, messages=hi))
    limited = Anthropic(base_url=base_url, api_key=limited_key, max_retries=0, timeout=30)
    limited.messages.count_tokens(model="claude-3-5-sonnet-20241022", messages=hi)
    limited.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=5, messages=hi)
    expect_error(anthropic.RateLimitError, 429,
                 lambda: limited.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=5, messages=hi))
    # The provider fails (scripted 500s on every candidate): a 5xx the SDK maps.
    expect_error(anthropic.InternalServerError, 502,
                 lambda: client.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=5, messages=hi))

    print("anthropic SDK: message, stream, tools round trip, Gemini stream, count_tokens, models, errors OK")


if __name__ == "__main__":
    main()
