"""A recording stand-in for `POST /v1/responses` (the OpenAI Responses API), stdlib only.

It answers the way the official types describe the Responses API (openai-python
`src/openai/types/responses/`: `Response`, `ResponseOutputMessage`, `ResponseFunctionToolCall`,
`ResponseUsage`, and the stream events), and writes every request it receives (path,
headers with the key redacted, body) as one JSON line to the log. It exists to learn exactly
what each real client sends and which parts of the answer each one needs
(tests/fixtures/responses-clients/ holds what it recorded; record_fixtures.py drives it).

Usage:
    record_responses.py --log FILE [--replies FILE] [--port N] [--omit WHAT ...]

It prints `listening on http://127.0.0.1:PORT` once it accepts requests.

`--replies` is a JSON list of replies, one per `POST /v1/responses`, in order:
    {"text": "Hello!"}
    {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    {"tool_calls": [{...}, {...}]}                      (parallel calls)
    {"text": "...", "tool_call": {...}}                 (both: a message, then the call)
    {"status": 402, "code": "insufficient_credits", "message": "..."}
                                                        (an error answer, JSON, before any stream)
    {"fail_stream": "Hel", "event": "response.failed"}  (a stream that sends the text "Hel",
                                                        then fails with this event or `error`)
When the list is used up, a text reply `Hello from the recording stub.` answers.

`--omit` takes away one part of the answer, to learn whether a client needs it:
    event:<type>          do not send this SSE event (e.g. event:response.output_item.done)
    response:<field>      drop a field of the Response object (JSON and events), e.g. response:usage
    item:<field>          drop a field of each output item, e.g. item:status
    part:<field>          drop a field of each output_text part, e.g. part:annotations
    usage:<path>          drop a field of usage, e.g. usage:input_tokens_details or
                          usage:input_tokens_details.cache_write_tokens
    event-field:<field>   drop a field of every SSE event, e.g. event-field:sequence_number
    sse:event-line        send `data:` lines only, no `event:` lines
    completed:usage       response.completed without usage (the other events keep theirs: none)
`--add output_text` adds the SDKs' convenience field `output_text` to the Response JSON (the
real API does not send it); `--add _metadata` adds Switchboard's `_metadata` object to it.

Other routes: `GET /v1/models` (and `/models`) lists gpt-4o and gpt-4o-mini;
`GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, `DELETE /v1/responses/{id}`
serve what this process answered before; a `previous_response_id` it never answered gets a
404 in OpenAI's error shape. Anything else is a 404, logged too.
"""

import argparse
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

DEFAULT_TEXT = "Hello from the recording stub."
INPUT_TOKENS = 11
OUTPUT_TOKENS = 7
SECRET_HEADERS = {"authorization", "api-key", "x-api-key", "openai-api-key"}


def new_id(prefix):
    return f"{prefix}_{secrets.token_hex(12)}"


class Recorder:
    """The stub's state: the replies still to give, what it answered, the log."""

    def __init__(self, log_path, replies, omit, add):
        self.lock = threading.Lock()
        self.log_path = log_path
        self.replies = list(replies)
        self.omit = set(omit)
        self.add = set(add)
        self.stored = {}  # response id -> (input items, response)

    def log(self, entry):
        with self.lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def next_reply(self):
        with self.lock:
            return self.replies.pop(0) if self.replies else {"text": DEFAULT_TEXT}

    def omitted(self, kind, name):
        return f"{kind}:{name}" in self.omit


def redacted_headers(headers):
    out = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            value = f"{scheme} <redacted>".strip()
        out[lower] = value
    return out


def usage(recorder):
    value = {
        "input_tokens": INPUT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": OUTPUT_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }
    for spec in recorder.omit:
        if spec.startswith("usage:"):
            path = spec[len("usage:") :].split(".")
            parent = value
            for key in path[:-1]:
                parent = parent.get(key, {})
            parent.pop(path[-1], None)
    return value


def text_part(recorder, text):
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {k: v for k, v in part.items() if not recorder.omitted("part", k)}


def strip_item(recorder, item):
    return {k: v for k, v in item.items() if not recorder.omitted("item", k)}


def output_items(reply):
    """The finished output items of a reply (ids made here)."""
    items = []
    if reply.get("text") is not None:
        items.append(
            {
                "id": new_id("msg"),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [reply["text"]],  # the text; parts are made per recorder
            }
        )
    calls = list(reply.get("tool_calls", []))
    if "tool_call" in reply:
        calls.append(reply["tool_call"])
    for call in calls:
        arguments = call.get("arguments", {})
        items.append(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "completed",
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                "call_id": call.get("call_id") or new_id("call"),
                "name": call["name"],
            }
        )
    return items


def render_item(recorder, item, done=True):
    """An output item as the API shows it: finished (`done`) or as first announced."""
    item = dict(item)
    if item["type"] == "message":
        item["content"] = [text_part(recorder, t) for t in item["content"]] if done else []
    elif not done:
        item["arguments"] = ""
    if not done:
        item["status"] = "in_progress"
    return strip_item(recorder, item)


def response_object(recorder, request, rid, created, items, status):
    text_config = request.get("text") or {}
    response = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": request.get("model", "gpt-4o"),
        "output": [render_item(recorder, i) for i in items] if status == "completed" else [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text_config.get("format", {"type": "text"}), "verbosity": "medium"},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_logprobs": 0,
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage(recorder) if status == "completed" else None,
        "user": None,
        "metadata": request.get("metadata") or {},
    }
    if "_metadata" in recorder.add and status == "completed":
        # What Switchboard adds (api.md): clients must ignore an unknown field.
        response["_metadata"] = {"provider_used": "openai", "request_id": "req_recording"}
    if "output_text" in recorder.add and status == "completed":
        response["output_text"] = "".join(
            t for i in items if i["type"] == "message" for t in i["content"]
        )
    return {k: v for k, v in response.items() if not recorder.omitted("response", k)}


def stream_events(recorder, request, rid, created, items):
    """The SSE events of one answer, in the order the API sends them."""
    yield {"type": "response.created", "response": response_object(recorder, request, rid, created, items, "in_progress")}
    yield {"type": "response.in_progress", "response": response_object(recorder, request, rid, created, items, "in_progress")}
    for index, item in enumerate(items):
        yield {"type": "response.output_item.added", "output_index": index, "item": render_item(recorder, item, done=False)}
        if item["type"] == "message":
            text = item["content"][0]
            yield {
                "type": "response.content_part.added",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "part": text_part(recorder, ""),
            }
            for piece in split_text(text):
                yield {
                    "type": "response.output_text.delta",
                    "item_id": item["id"],
                    "output_index": index,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                }
            yield {
                "type": "response.output_text.done",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            }
            yield {
                "type": "response.content_part.done",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "part": text_part(recorder, text),
            }
        else:
            for piece in split_text(item["arguments"]):
                yield {
                    "type": "response.function_call_arguments.delta",
                    "item_id": item["id"],
                    "output_index": index,
                    "delta": piece,
                }
            yield {
                "type": "response.function_call_arguments.done",
                "item_id": item["id"],
                "output_index": index,
                "arguments": item["arguments"],
            }
        yield {"type": "response.output_item.done", "output_index": index, "item": render_item(recorder, item)}
    completed = response_object(recorder, request, rid, created, items, "completed")
    if recorder.omitted("completed", "usage"):
        completed.pop("usage", None)
    yield {"type": "response.completed", "response": completed}


def split_text(text):
    """A few deltas, split after spaces, so that clients assemble pieces."""
    if not text:
        return []
    pieces, current = [], ""
    for ch in text:
        current += ch
        if ch == " " or ch == ",":
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def input_items_of(request):
    """The request's input as stored items (a string is one user message)."""
    value = request.get("input")
    if isinstance(value, str):
        value = [{"role": "user", "content": [{"type": "input_text", "text": value}]}]
    items = []
    for item in value or []:
        item = dict(item)
        item.setdefault("type", "message")
        item.setdefault("id", new_id("msg" if item["type"] == "message" else "item"))
        if item["type"] == "message" and isinstance(item.get("content"), str):
            item["content"] = [{"type": "input_text", "text": item["content"]}]
        items.append(item)
    return items


def error_body(message, kind, param=None, code=None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder = None  # set in main

    def log_message(self, *args):  # quiet: the JSON log says it all
        pass

    def read_body(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None, raw
        try:
            return json.loads(raw), raw
        except ValueError:
            return None, raw

    def record(self, body, raw):
        url = urlsplit(self.path)
        entry = {
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "headers": redacted_headers(self.headers),
            "body": body if body is not None else raw.decode("utf-8", "replace"),
            "at": time.time(),
        }
        self.recorder.log(entry)

    def send_json(self, status, value, headers=()):
        data = json.dumps(value).encode()
        self.send_response(status)
        for name, header in headers:
            self.send_header(name, header)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.record(None, b"")
        path = urlsplit(self.path).path.rstrip("/")
        if path.endswith("/models"):
            created = int(time.time())
            self.send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": created, "owned_by": "openai"}
                        for m in ("gpt-4o", "gpt-4o-mini")
                    ],
                },
            )
            return
        parts = path.split("/")
        if "responses" in parts:
            at = parts.index("responses")
            rid = parts[at + 1] if len(parts) > at + 1 else ""
            stored = self.recorder.stored.get(rid)
            if stored is None:
                self.send_json(404, error_body(f"No response found with id '{rid}'.", "invalid_request_error"))
            elif parts[-1] == "input_items":
                items = stored[0]
                self.send_json(
                    200,
                    {
                        "object": "list",
                        "data": list(reversed(items)),
                        "first_id": items[-1]["id"] if items else None,
                        "last_id": items[0]["id"] if items else None,
                        "has_more": False,
                    },
                )
            else:
                self.send_json(200, stored[1])
            return
        self.send_json(404, error_body(f"Unknown path {path}", "invalid_request_error"))

    def do_DELETE(self):
        self.record(None, b"")
        rid = urlsplit(self.path).path.rstrip("/").split("/")[-1]
        if self.recorder.stored.pop(rid, None) is None:
            self.send_json(404, error_body(f"No response found with id '{rid}'.", "invalid_request_error"))
        else:
            self.send_json(200, {"id": rid, "object": "response", "deleted": True})

    def do_POST(self):
        body, raw = self.read_body()
        self.record(body, raw)
        path = urlsplit(self.path).path.rstrip("/")
        if not path.endswith("/responses"):
            self.send_json(404, error_body(f"Unknown path {path}", "invalid_request_error"))
            return
        if not isinstance(body, dict):
            self.send_json(400, error_body("The body must be a JSON object.", "invalid_request_error"))
            return
        previous = body.get("previous_response_id")
        if previous and previous not in self.recorder.stored:
            self.send_json(
                404,
                error_body(f"Previous response with id '{previous}' not found.", "invalid_request_error", "previous_response_id"),
            )
            return
        reply = self.recorder.next_reply()
        if "status" in reply:
            error = error_body(reply.get("message", "failed"), reply.get("type", "invalid_request_error"), None, reply.get("code"))
            retry = [("retry-after", str(reply["retry_after"]))] if "retry_after" in reply else []
            self.send_json(reply["status"], error, retry)
            return
        if "fail_stream" in reply:
            reply = dict(reply, text=reply["fail_stream"])
        items = output_items(reply)
        rid = new_id("resp")
        created = int(time.time())
        final = response_object(self.recorder, body, rid, created, items, "completed")
        if body.get("store", True):
            self.recorder.stored[rid] = (input_items_of(body), final)
        if body.get("stream") and "fail_stream" in reply:
            self.stream(body, rid, created, items, fail=reply.get("event", "response.failed"))
        elif "fail_stream" in reply:
            self.send_json(502, error_body("The upstream failed.", "api_error", None, "upstream_error"))
        elif body.get("stream"):
            self.stream(body, rid, created, items)
        else:
            self.send_json(200, final)

    def stream(self, request, rid, created, items, fail=None):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        sequence = 0
        for event in stream_events(self.recorder, request, rid, created, items):
            kind = event["type"]
            if fail and kind == "response.output_text.done":
                # The failure after streaming began, as the contract sends it.
                error = {"code": "server_error", "message": "The upstream failed mid-stream."}
                if fail == "error":
                    event = {"type": "error", "code": "server_error", "message": error["message"], "param": None}
                else:
                    failed = response_object(self.recorder, request, rid, created, items, "in_progress")
                    failed.update(status="failed", error=error)
                    event = {"type": "response.failed", "response": failed}
                kind = event["type"]
                event["sequence_number"] = sequence
                self.chunk(f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode())
                break
            if self.recorder.omitted("event", kind):
                continue
            event["sequence_number"] = sequence
            sequence += 1
            event = {k: v for k, v in event.items() if not self.recorder.omitted("event-field", k)}
            frame = "" if "sse:event-line" in self.recorder.omit else f"event: {kind}\n"
            frame += f"data: {json.dumps(event)}\n\n"
            self.chunk(frame.encode())
        self.chunk(b"")

    def chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True)
    parser.add_argument("--replies")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--omit", action="append", default=[])
    parser.add_argument("--add", action="append", default=[])
    args = parser.parse_args()
    replies = []
    if args.replies:
        with open(args.replies, encoding="utf-8") as f:
            replies = json.load(f)
    Handler.recorder = Recorder(args.log, replies, args.omit, args.add)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
