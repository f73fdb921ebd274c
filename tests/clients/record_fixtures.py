"""Runs each client call against the recording stub (record_responses.py) and keeps what it sent.

Usage (from the repository root, after ./scripts/test has installed the clients):
    .venv/bin/python tests/clients/record_fixtures.py [--client NAME] [--call NAME]
        writes tests/fixtures/responses-clients/<client>-<call>.json, one per call of
        tests/clients/scenarios.json: the client's version, the replies the stub gave, and
        every request the client sent (headers with the key redacted);
    .venv/bin/python tests/clients/record_fixtures.py --probe [--client NAME] [--call NAME]
        runs each call again once per part of the answer taken away (see OMISSIONS) and
        writes tests/fixtures/responses-clients/probe.md: which parts each client needs;
    .venv/bin/python tests/clients/record_fixtures.py --errors [--client NAME]
        answers each client with failures (400, 402, 429, 502, a stream failing midway) and
        writes tests/fixtures/responses-clients/errors.md: what it reports, how often it retries;
    .venv/bin/python tests/clients/record_fixtures.py --omit WHAT [--add WHAT] --client NAME
        one run with the stub's --omit/--add options, printing the client's output.

Stdlib only (the clients themselves come from .venv and .tools).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENTS_DIR = ROOT / "tests" / "clients"
FIXTURES = ROOT / "tests" / "fixtures" / "responses-clients"
PYTHON = ROOT / ".venv" / "bin" / "python"
KEY = "sk-sb-recording-0123456789abcdef"

COMMANDS = {
    "openai": [str(PYTHON), str(CLIENTS_DIR / "openai_responses_check.py")],
    "agents": [str(PYTHON), str(CLIENTS_DIR / "agents_check.py")],
    "langchain": [str(PYTHON), str(CLIENTS_DIR / "langchain_check.py")],
    "ai-sdk": ["node", str(CLIENTS_DIR / "ai_sdk_check.mjs")],
    "codex": ["bash", str(CLIENTS_DIR / "codex_check.sh")],
}

# Parts of the answer taken away one at a time by --probe. Stream events only matter to
# calls that stream; the others get the object-level ones.
STREAM_OMISSIONS = [
    "event:response.created",
    "event:response.in_progress",
    "event:response.output_item.added",
    "event:response.content_part.added",
    "event:response.output_text.delta",
    "event:response.output_text.done",
    "event:response.content_part.done",
    "event:response.function_call_arguments.delta",
    "event:response.function_call_arguments.done",
    "event:response.output_item.done",
    "event:response.completed",
    "completed:usage",
    "event-field:sequence_number",
    "event-field:item_id",
    "event-field:output_index",
    "sse:event-line",
]
OBJECT_OMISSIONS = [
    "response:usage",
    "usage:input_tokens_details",
    "usage:input_tokens_details.cache_write_tokens",
    "usage:output_tokens_details",
    "response:output",
    "response:status",
    "response:created_at",
    "response:model",
    "response:completed_at",
    "response:incomplete_details",
    "response:error",
    "response:tools",
    "response:tool_choice",
    "response:parallel_tool_calls",
    "response:text",
    "response:previous_response_id",
    "response:instructions",
    "item:id",
    "item:status",
    "part:annotations",
    "part:logprobs",
    "add:_metadata",
]


def scenarios():
    with open(CLIENTS_DIR / "scenarios.json", encoding="utf-8") as f:
        data = json.load(f)
    return {k: v for k, v in data.items() if not k.startswith("_")}


def client_version(client):
    if client in ("openai", "agents", "langchain"):
        package = {"openai": "openai", "agents": "openai-agents", "langchain": "langchain-openai"}[client]
        out = subprocess.run(
            [str(PYTHON), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
            capture_output=True,
            text=True,
        )
        return f"{package} {out.stdout.strip()}"
    if client == "ai-sdk":
        versions = []
        for package in ("ai", "@ai-sdk/openai"):
            path = ROOT / ".tools" / "ai-sdk" / "node_modules" / package / "package.json"
            versions.append(f"{package} {json.loads(path.read_text())['version']}")
        return ", ".join(versions)
    path = ROOT / ".tools" / "codex" / "node_modules" / "@openai" / "codex" / "package.json"
    return f"@openai/codex {json.loads(path.read_text())['version']}"


def run_call(client, call, replies, omit=(), add=()):
    """One call against a fresh stub: (exit status, client output, the requests logged)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "requests.jsonl"
        replies_file = Path(tmp) / "replies.json"
        replies_file.write_text(json.dumps(replies))
        stub_args = [str(PYTHON), str(CLIENTS_DIR / "record_responses.py"), "--log", str(log), "--replies", str(replies_file)]
        for what in omit:
            stub_args += ["--omit", what]
        for what in add:
            stub_args += ["--add", what]
        stub = subprocess.Popen(stub_args, stdout=subprocess.PIPE, text=True)
        try:
            url = stub.stdout.readline().strip().rsplit(" ", 1)[-1]
            try:
                done = subprocess.run(
                    COMMANDS[client] + [f"{url}/v1", KEY, call],
                    capture_output=True,
                    text=True,
                    timeout=180,
                    cwd=ROOT,
                )
                status, output = done.returncode, done.stdout + done.stderr
            except subprocess.TimeoutExpired as timeout:
                status, output = "timeout", f"{timeout.stdout or ''}{timeout.stderr or ''}"
        finally:
            stub.terminate()
            stub.wait()
        requests = []
        if log.exists():
            port = url.rsplit(":", 1)[-1]
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                entry.pop("at", None)
                if entry["headers"].get("host", "").endswith(f":{port}"):
                    entry["headers"]["host"] = "127.0.0.1:PORT"
                requests.append(entry)
        return status, output, requests


def record(selected):
    FIXTURES.mkdir(parents=True, exist_ok=True)
    failures = []
    for client, call in selected:
        spec = call_spec(client, call)
        status, output, requests = run_call(client, call, spec["replies"])
        print(f"== {client} {call}: exit {status}, {len(requests)} request(s)")
        if status != 0:
            print(output)
            failures.append(f"{client} {call}")
            continue
        fixture = {
            "client": client,
            "call": call,
            "client_version": client_version(client),
            "record_only": spec.get("record_only", False),
            "replies": spec["replies"],
            "requests": requests,
        }
        text = json.dumps(fixture, indent=2, sort_keys=True) + "\n"
        if KEY in text:
            raise SystemExit(f"the key leaked into the {client}-{call} fixture")
        (FIXTURES / f"{client}-{call}.json").write_text(text)
    if failures:
        raise SystemExit(f"failed: {failures}")


def call_spec(client, call):
    for spec in scenarios()[client]:
        if spec["call"] == call:
            return spec
    raise SystemExit(f"no call {call} for {client} in scenarios.json")


def probe(selected):
    """For each call, which omissions break it. Runs two at a time (the machine has 2 cores)."""
    jobs = []
    for client, call in selected:
        spec = call_spec(client, call)
        _, _, baseline = run_call(client, call, spec["replies"])
        streams = any(isinstance(r["body"], dict) and r["body"].get("stream") for r in baseline)
        omissions = (STREAM_OMISSIONS if streams else []) + OBJECT_OMISSIONS
        for what in omissions:
            jobs.append((client, call, spec["replies"], what))

    def one(job):
        client, call, replies, what = job
        omit, add = ([], [what[len("add:") :]]) if what.startswith("add:") else ([what], [])
        status, output, _ = run_call(client, call, replies, omit, add)
        reason = "" if status == 0 else failure_reason(output, status)
        print(f"{client} {call} without {what}: {'ok' if status == 0 else 'FAIL ' + reason}", flush=True)
        return (client, call, what, status == 0, reason)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, jobs))
    # Rows of calls not probed this time are kept from the last probe.md.
    rows = {}
    probe_md = FIXTURES / "probe.md"
    if probe_md.exists():
        for line in probe_md.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 4 and cells[2].startswith("`"):
                rows[(cells[0], cells[1], cells[2].strip("`"))] = cells[3]
    for client, call, what, ok, reason in results:
        rows[(client, call, what)] = "ok" if ok else f"FAIL: {reason.replace('|', '/')}"
    order = {(client, spec["call"]): i for i, (client, specs) in enumerate(scenarios().items()) for spec in specs}
    order = {key: n for n, key in enumerate(sorted(order, key=order.get))}
    omission_order = {what: n for n, what in enumerate(STREAM_OMISSIONS + OBJECT_OMISSIONS)}
    lines = [
        "# What each client needs in the answer",
        "",
        "Written by `tests/clients/record_fixtures.py --probe`: each call of each client run against",
        "the recording stub once per part of the answer taken away (`record_responses.py --omit`), or",
        "with `_metadata` added. `ok`: the client still did all its script checks; `FAIL`: the",
        "client's last line of output. Stream events are probed on calls that stream.",
        "",
        "| client | call | without | result |",
        "|---|---|---|---|",
    ]
    for (client, call, what) in sorted(
        rows, key=lambda k: (order.get(k[:2], len(order)), omission_order.get(k[2], len(omission_order)))
    ):
        lines.append(f"| {client} | {call} | `{what}` | {rows[(client, call, what)]} |")
    probe_md.write_text("\n".join(lines) + "\n")


# Answers that fail, for --errors: how each client reports them and how often it retries.
ERRORS = {
    "400 invalid_request_error": {"status": 400, "type": "invalid_request_error", "code": None, "message": "Bad input."},
    "402 insufficient_credits": {"status": 402, "type": "insufficient_credits", "code": "insufficient_credits", "message": "Not enough credits."},
    "429 rate_limit_exceeded": {"status": 429, "type": "rate_limit_exceeded", "code": "rate_limit_exceeded", "message": "Slow down.", "retry_after": 1},
    "502 upstream_error": {"status": 502, "type": "upstream_error", "code": "upstream_error", "message": "Every candidate failed."},
    "stream: response.failed": {"fail_stream": "Hel", "event": "response.failed"},
    "stream: error event": {"fail_stream": "Hel", "event": "error"},
}
ERROR_CALLS = {
    "openai": ["create-plain", "stream"],
    "agents": ["run", "run-streamed"],
    "ai-sdk": ["generate-text", "stream-text"],
    "langchain": ["invoke", "stream"],
    "codex": ["exec-plain"],
}


def errors(selected_clients):
    """Each client's reaction to each failing answer: its exit, its message, its retries."""
    jobs = []
    for client, calls in ERROR_CALLS.items():
        if selected_clients and client not in selected_clients:
            continue
        for call in calls:
            for name, answer in ERRORS.items():
                if name.startswith("stream:") and call not in ("stream", "run-streamed", "stream-text", "exec-plain"):
                    continue
                jobs.append((client, call, name, answer))

    def one(job):
        client, call, name, answer = job
        status, output, requests = run_call(client, call, [answer] * 40)
        posts = sum(1 for r in requests if r["method"] == "POST")
        reason = "(no error)" if status == 0 else failure_reason(output, status)
        print(f"{client} {call} {name}: exit {status}, {posts} request(s): {reason}", flush=True)
        return client, call, name, status, posts, reason

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, jobs))
    lines = [
        "# How each client reports a failed answer",
        "",
        "Written by `tests/clients/record_fixtures.py --errors`: the recording stub answers every",
        "request of the call with the same failure (an error status with OpenAI's error body, or a",
        "stream that sends `Hel` then `response.failed` or an `error` event). `requests`: how many",
        "times the client sent the request (its own retries). The Python scripts build their",
        "clients with `max_retries=0`; the AI SDK and Codex run with their default retries.",
        "",
        "| client | call | answer | exit | requests | what the client said |",
        "|---|---|---|---|---|---|",
    ]
    for client, call, name, status, posts, reason in results:
        lines.append(f"| {client} | {call} | {name} | {status} | {posts} | {reason.replace('|', '/')} |")
    (FIXTURES / "errors.md").write_text("\n".join(lines) + "\n")


def failure_reason(output, status):
    """The telling line of a failed run: the script's mismatch, the client's error and, for
    a schema validation error, the path it names."""
    # Codex's warning about its model metadata comes first in every run: not the reason.
    lines = [l.strip() for l in output.splitlines() if l.strip() and "Model metadata for" not in l]
    picked = []
    for pattern in ("mismatch:", "Error:", "Error ", "RangeError", "TypeError", '"message":'):
        for line in lines:
            if pattern in line and not line.startswith(("File ", "at ", "raise ", "return ")) and len(picked) < 2:
                if line[:200] not in picked:
                    picked.append(line[:200])
    path = []
    for i, line in enumerate(lines):
        if line.startswith('"path": ['):
            for item in lines[i + 1 :]:
                if item.startswith("]"):
                    break
                path.append(item.strip(",").strip('"'))
            break
    reason = " / ".join(picked) if picked else (lines[-1][:200] if lines else str(status))
    if path:
        reason += f" (path: {'.'.join(path)})"
    return reason


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", action="append")
    parser.add_argument("--call", action="append")
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--errors", action="store_true")
    parser.add_argument("--omit", action="append", default=[])
    parser.add_argument("--add", action="append", default=[])
    parser.add_argument("--with-record-only", action="store_true", help="also the record-only calls (default when recording)")
    args = parser.parse_args()
    selected = [
        (client, spec["call"])
        for client, specs in scenarios().items()
        for spec in specs
        if (not args.client or client in args.client)
        and (not args.call or spec["call"] in args.call)
        and (not spec.get("record_only") or not args.probe or args.with_record_only)
    ]
    if args.errors:
        errors(args.client)
        return
    if args.omit or args.add:
        for client, call in selected:
            status, output, requests = run_call(client, call, call_spec(client, call)["replies"], args.omit, args.add)
            print(f"== {client} {call}: exit {status}, {len(requests)} request(s)\n{output}")
        return
    if args.probe:
        probe(selected)
    else:
        record(selected)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
