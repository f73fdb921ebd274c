"""Runs each client call against the recording stub (record_responses.py) and keeps what it sent.

Usage (from the repository root, after ./scripts/test has installed the clients):
    .venv/bin/python tests/clients/record_fixtures.py [--client NAME] [--call NAME]
        writes tests/fixtures/responses-clients/<client>-<call>.json, one per call of
        tests/clients/scenarios.json: the client's version, the replies the stub gave, and
        every request the client sent (headers with the key redacted);
    .venv/bin/python tests/clients/record_fixtures.py --probe [--client NAME] [--call NAME]
        runs each call again once per part of the answer taken away (see OMISSIONS) and
        writes tests/fixtures/responses-clients/probe.md: which parts each client needs;
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
        reason = ""
        if status != 0:
            lines = [l for l in output.splitlines() if l.strip()]
            reason = (lines[-1] if lines else str(status))[:160]
        print(f"{client} {call} without {what}: {'ok' if status == 0 else 'FAIL ' + reason}", flush=True)
        return (client, call, what, status == 0, reason)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, jobs))
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
    for client, call, what, ok, reason in results:
        result = "ok" if ok else f"FAIL: {reason.replace('|', '/')}"
        lines.append(f"| {client} | {call} | `{what}` | {result} |")
    (FIXTURES / "probe.md").write_text("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", action="append")
    parser.add_argument("--call", action="append")
    parser.add_argument("--probe", action="store_true")
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
