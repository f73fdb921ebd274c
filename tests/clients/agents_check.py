"""The OpenAI Agents SDK against Switchboard: its default model class (the Responses API).

Usage: agents_check.py BASE_URL API_KEY [CALL ...]
The SDK's client is Switchboard (`set_default_openai_client`) and tracing is off, so nothing
goes to api.openai.com. The agents name no model: `OPENAI_DEFAULT_MODEL=gpt-4o` picks one
the catalog serves (the SDK's own default, a GPT-5 model, is what `run-unset-model` sends;
that call is for recording only). Prints what it got and exits non-zero on any mismatch
with tests/clients/scenarios.json, key "agents".
"""
import asyncio
import os
import sys

from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent

# The usage every answer reports: the fake upstream's default (tests/src/fake_upstream.rs
# DEFAULT_PROMPT_TOKENS / DEFAULT_COMPLETION_TOKENS), also the recording stub's.
INPUT_TOKENS, OUTPUT_TOKENS = 11, 7

weather_calls = []


@function_tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    weather_calls.append(city)
    return "18 C, sunny"


def check(condition, what):
    if not condition:
        raise SystemExit(f"mismatch: {what}")


async def run(_base_url):
    agent = Agent(name="Greeter", instructions="Be brief.")
    result = await Runner.run(agent, "Say hello.")
    print("run:", result.final_output)
    check(result.final_output == "Hello from the agent.", f"final_output: {result.final_output!r}")
    usage = result.context_wrapper.usage
    check(
        (usage.requests, usage.input_tokens, usage.output_tokens) == (1, INPUT_TOKENS, OUTPUT_TOKENS),
        f"usage: {usage}",
    )


async def run_streamed(_base_url):
    agent = Agent(name="Counter", instructions="Be brief.")
    result = Runner.run_streamed(agent, "Count to five.")
    deltas = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            deltas.append(event.data.delta)
    print("run-streamed: deltas", deltas, "final", result.final_output)
    check(len(deltas) > 1 and "".join(deltas) == "1 2 3 4 5", f"deltas: {deltas}")
    check(result.final_output == "1 2 3 4 5", f"final_output: {result.final_output!r}")
    usage = result.context_wrapper.usage
    check((usage.input_tokens, usage.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS), f"usage: {usage}")


async def function_tool_call(_base_url):
    weather_calls.clear()
    agent = Agent(name="Weather", instructions="Use the tool.", tools=[get_weather])
    result = await Runner.run(agent, "What is the weather in Paris?")
    print("function-tool: tool calls", weather_calls, "final", result.final_output)
    check(weather_calls == ["Paris"], f"the tool ran once for Paris: {weather_calls}")
    check(result.final_output == "It is 18 C and sunny in Paris.", f"final_output: {result.final_output!r}")
    usage = result.context_wrapper.usage
    check(
        (usage.requests, usage.input_tokens, usage.output_tokens) == (2, 2 * INPUT_TOKENS, 2 * OUTPUT_TOKENS),
        f"two model calls: {usage}",
    )


async def function_tool_chained(_base_url):
    """The tool round trip with the server keeping the conversation (previous_response_id)."""
    weather_calls.clear()
    agent = Agent(name="Weather", instructions="Use the tool.", tools=[get_weather])
    result = await Runner.run(agent, "What is the weather in Paris?", auto_previous_response_id=True)
    print("function-tool-chained: tool calls", weather_calls, "final", result.final_output)
    check(weather_calls == ["Paris"], f"the tool ran once for Paris: {weather_calls}")
    check(result.final_output == "It is 18 C and sunny in Paris.", f"final_output: {result.final_output!r}")
    check(result.last_response_id and result.last_response_id.startswith("resp_"), result.last_response_id)


async def run_unset_model(_base_url):
    """What the SDK sends with no model named anywhere (recording only: not in the catalog)."""
    saved = os.environ.pop("OPENAI_DEFAULT_MODEL", None)
    try:
        agent = Agent(name="Default", instructions="Be brief.")
        result = await Runner.run(agent, "Say hello.")
        print("run-unset-model:", result.final_output)
    finally:
        if saved is not None:
            os.environ["OPENAI_DEFAULT_MODEL"] = saved


CALLS = {
    "run": run,
    "run-streamed": run_streamed,
    "function-tool": function_tool_call,
    "function-tool-chained": function_tool_chained,
}
RECORD_ONLY = {"run-unset-model": run_unset_model}


async def main():
    base_url, api_key, *only = sys.argv[1:]
    os.environ["OPENAI_DEFAULT_MODEL"] = "gpt-4o"
    # use_for_tracing=False: otherwise the SDK would hand the Switchboard key to its trace
    # exporter, which posts to api.openai.com; tracing is off as well.
    set_default_openai_client(
        AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30),
        use_for_tracing=False,
    )
    set_default_openai_api("responses")  # already the default; said here for the reader
    set_tracing_disabled(True)
    for name in only or CALLS:
        await {**CALLS, **RECORD_ONLY}[name](base_url)
    print("agents: all calls as expected")


if __name__ == "__main__":
    asyncio.run(main())
