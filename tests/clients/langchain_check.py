"""LangChain's `ChatOpenAI(use_responses_api=True)` against Switchboard.

Usage: langchain_check.py BASE_URL API_KEY [CALL ...]
Prints what it got and exits non-zero on any mismatch with tests/clients/scenarios.json,
key "langchain".
"""
import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


# The usage every answer reports: the fake upstream's default (tests/src/fake_upstream.rs
# DEFAULT_PROMPT_TOKENS / DEFAULT_COMPLETION_TOKENS), also the recording stub's.
INPUT_TOKENS, OUTPUT_TOKENS = 11, 7


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return "18 C, sunny"


def check(condition, what):
    if not condition:
        raise SystemExit(f"mismatch: {what}")


def invoke(llm):
    message = llm.invoke("Say hello.")
    print("invoke:", repr(message.text))
    check(message.text == "Hello from LangChain.", f"text: {message.content!r}")
    usage = message.usage_metadata
    check(usage and (usage["input_tokens"], usage["output_tokens"]) == (INPUT_TOKENS, OUTPUT_TOKENS), f"usage_metadata: {usage}")
    check(message.response_metadata.get("id", "").startswith("resp_"), message.response_metadata)


def stream(llm):
    chunks = list(llm.stream("Count to five."))
    texts = [c.text for c in chunks if c.text]
    print("stream: chunks", texts)
    check(len(texts) > 1 and "".join(texts) == "1 2 3 4 5", f"chunks: {texts}")
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    usage = whole.usage_metadata
    check(usage and (usage["input_tokens"], usage["output_tokens"]) == (INPUT_TOKENS, OUTPUT_TOKENS), f"usage: {usage}")


def bind_tools(llm):
    with_tools = llm.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    first = with_tools.invoke([question])
    print("bind-tools: calls", first.tool_calls)
    check(
        len(first.tool_calls) == 1
        and first.tool_calls[0]["name"] == "get_weather"
        and first.tool_calls[0]["args"] == {"city": "Paris"},
        f"tool_calls: {first.tool_calls}",
    )
    call = first.tool_calls[0]
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    second = with_tools.invoke([question, first, result])
    print("bind-tools: answer", repr(second.text))
    check(second.text == "It is 18 C and sunny in Paris.", f"text: {second.content!r}")


CALLS = {"invoke": invoke, "stream": stream, "bind-tools": bind_tools}


def main():
    base_url, api_key, *only = sys.argv[1:]
    llm = ChatOpenAI(
        model="gpt-4o",
        base_url=base_url,
        api_key=api_key,
        use_responses_api=True,
        max_retries=0,
        timeout=30,
    )
    for name in only or CALLS:
        CALLS[name](llm)
    print("langchain: all calls as expected")


if __name__ == "__main__":
    main()
