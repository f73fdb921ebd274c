"""Drives Switchboard with the official `openai` Python SDK, unchanged except for base_url.

Usage: openai_sdk_check.py BASE_URL API_KEY
Exits non-zero (with a message) on the first thing that does not work as the SDK expects.
"""
import json
import sys

from openai import OpenAI


def main() -> None:
    base_url, api_key = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)

    # 1. A plain completion.
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        max_tokens=50,
    )
    assert completion.object == "chat.completion", completion
    assert completion.choices[0].message.content, completion
    assert completion.usage and completion.usage.total_tokens > 0, completion
    extra = completion.model_extra or {}
    assert extra.get("_metadata", {}).get("provider_used") == "openai", extra

    # 2. A stream, with usage.
    text = []
    usage = None
    metadata = None
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Count to five."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                text.append(choice.delta.content)
        if chunk.usage:
            usage = chunk.usage
        if chunk.model_extra and "_metadata" in chunk.model_extra:
            metadata = chunk.model_extra["_metadata"]
    assert "".join(text), "no streamed text"
    assert usage and usage.completion_tokens > 0, usage
    assert metadata and metadata["request_id"], metadata

    # 3. Tools: the model asks for a call; the SDK parses it.
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }],
        tool_choice="auto",
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather", call
    assert json.loads(call.function.arguments) == {"city": "Paris"}, call
    assert completion.choices[0].finish_reason == "tool_calls", completion

    # 4. Errors surface as the SDK's typed exceptions.
    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    except Exception as error:  # openai.NotFoundError
        assert type(error).__name__ == "NotFoundError", repr(error)
    else:
        raise AssertionError("an unknown model must fail")

    # 5. Embeddings: the SDK's default (it asks for base64 and decodes it), floats, a
    # batch, and a fallback from a failing OpenAI to Gemini. The fake upstream's vectors
    # are [index + 0.25, length of the input, 0.125, 0.25, ...].
    def expected(index, text, dimensions):
        return [index + 0.25, float(len(text))] + [j * 0.125 for j in range(1, dimensions - 1)]

    texts = ["the first text", "a second", "third"]
    default = client.embeddings.create(model="text-embedding-3-small", input=texts[0], dimensions=6)
    assert default.data[0].embedding == expected(0, texts[0], 6), default.data[0].embedding
    assert default.usage.prompt_tokens > 0, default.usage
    floats = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1, 2], floats.data
    for index, text in enumerate(texts):
        assert floats.data[index].embedding == expected(index, text, 8), floats.data[index]
    assert (floats.model_extra or {}).get("_metadata", {}).get("provider_used") == "openai", floats.model_extra
    fallback = client.embeddings.create(model="auto", input=texts[:2], encoding_format="base64")
    assert (fallback.model_extra or {})["_metadata"]["provider_used"] == "google", fallback.model_extra
    assert (fallback.model_extra or {})["_metadata"]["attempts"] == 2, fallback.model_extra
    assert isinstance(fallback.data[1].embedding, str), "base64 asked for explicitly stays a string"
    try:
        client.embeddings.create(model="gpt-4o", input="not an embedding model")
    except Exception as error:  # openai.BadRequestError
        assert type(error).__name__ == "BadRequestError", repr(error)
    else:
        raise AssertionError("a chat model cannot embed")

    print("openai SDK: completion, stream, tools, errors and embeddings OK")


if __name__ == "__main__":
    main()
