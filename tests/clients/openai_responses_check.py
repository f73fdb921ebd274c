"""The official `openai` Python SDK's Responses API against Switchboard, unchanged but for base_url.

Usage: openai_responses_check.py BASE_URL API_KEY [CALL ...]
Runs every call below (or only the named ones), prints what it got, and exits non-zero on
the first thing that is not what the upstream was told to answer (tests/clients/scenarios.json,
key "openai", gives those answers in this order).
"""
import json
import sys

from openai import OpenAI
from pydantic import BaseModel

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


# The usage every answer reports: the fake upstream's default (tests/src/fake_upstream.rs
# DEFAULT_PROMPT_TOKENS / DEFAULT_COMPLETION_TOKENS), also the recording stub's.
INPUT_TOKENS, OUTPUT_TOKENS = 11, 7


class CalendarEvent(BaseModel):
    name: str
    date: str
    participants: list[str]


def check(condition, what):
    if not condition:
        raise SystemExit(f"mismatch: {what}")


def check_response(response):
    check(response.id.startswith("resp_"), f"a resp_ id: {response.id}")
    check(response.object == "response", f"object: {response.object}")
    check(response.status == "completed", f"status: {response.status}")
    usage = response.usage
    check(
        usage is not None
        and (usage.input_tokens, usage.output_tokens, usage.total_tokens)
        == (INPUT_TOKENS, OUTPUT_TOKENS, INPUT_TOKENS + OUTPUT_TOKENS),
        f"usage: {usage}",
    )


def create_plain(client):
    response = client.responses.create(model="gpt-4o", input="Say hello.")
    print("create-plain:", response.output_text)
    check_response(response)
    check(response.output_text == "Hello!", f"output_text: {response.output_text!r}")
    check(response.output[0].type == "message" and response.output[0].role == "assistant", response.output)


def create_instructions(client):
    response = client.responses.create(
        model="gpt-4o",
        instructions="Answer in French.",
        input="Say hello.",
        max_output_tokens=100,
        temperature=0.2,
        metadata={"case": "instructions"},
    )
    print("create-instructions:", response.output_text)
    check_response(response)
    check(response.output_text == "Bonjour !", f"output_text: {response.output_text!r}")


def function_tool(client):
    first = client.responses.create(
        model="gpt-4o",
        input="What is the weather in Paris?",
        tools=[WEATHER_TOOL],
    )
    check_response(first)
    calls = [item for item in first.output if item.type == "function_call"]
    print("function-tool: call", [(c.name, c.arguments) for c in calls])
    check(len(calls) == 1 and calls[0].name == "get_weather", f"one get_weather call: {first.output}")
    check(json.loads(calls[0].arguments) == {"city": "Paris"}, f"arguments: {calls[0].arguments}")
    check(calls[0].call_id, "a call_id")
    second = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C, sunny"}],
        tools=[WEATHER_TOOL],
    )
    print("function-tool: answer", second.output_text)
    check_response(second)
    check(second.previous_response_id == first.id, f"previous_response_id: {second.previous_response_id}")
    check(second.output_text == "It is 18 C and sunny in Paris.", f"output_text: {second.output_text!r}")


def stream(client):
    deltas = []
    kinds = []
    with client.responses.stream(model="gpt-4o", input="Count to five.") as events:
        for event in events:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = events.get_final_response()
    print("stream: deltas", deltas)
    check(len(deltas) > 1, f"more than one text delta: {deltas}")
    check("".join(deltas) == "1 2 3 4 5", f"deltas: {deltas}")
    check(final.output_text == "1 2 3 4 5", f"final output_text: {final.output_text!r}")
    check_response(final)
    check(kinds[0] == "response.created" and kinds[-1] == "response.completed", f"event order: {kinds}")


def parse(client):
    response = client.responses.parse(
        model="gpt-4o",
        input="Alice and Bob are going to a science fair on Friday.",
        text_format=CalendarEvent,
    )
    print("parse:", response.output_parsed)
    check_response(response)
    check(
        response.output_parsed == CalendarEvent(name="Science fair", date="Friday", participants=["Alice", "Bob"]),
        f"output_parsed: {response.output_parsed!r}",
    )


def stored(client):
    response = client.responses.create(model="gpt-4o", input="Remember this.", store=True)
    check_response(response)
    again = client.responses.retrieve(response.id)
    print("stored: retrieved", again.id, again.output_text)
    check(again.id == response.id and again.output_text == "Stored.", f"retrieved: {again}")
    items = list(client.responses.input_items.list(response.id))
    print("stored: input items", [(i.type, getattr(i, "role", None)) for i in items])
    check(
        len(items) == 1 and items[0].type == "message" and items[0].content[0].text == "Remember this.",
        f"input items: {items}",
    )
    client.responses.delete(response.id)
    try:
        client.responses.retrieve(response.id)
    except Exception as error:  # the SDK's NotFoundError
        check(getattr(error, "status_code", None) == 404, f"after delete: {error!r}")
    else:
        raise SystemExit("mismatch: a deleted response was still served")


CALLS = {
    "create-plain": create_plain,
    "create-instructions": create_instructions,
    "function-tool": function_tool,
    "stream": stream,
    "parse": parse,
    "stored": stored,
}


def main():
    base_url, api_key, *only = sys.argv[1:]
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    for name in only or CALLS:
        CALLS[name](client)
    print("openai responses: all calls as expected")


if __name__ == "__main__":
    main()
