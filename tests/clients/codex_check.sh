#!/usr/bin/env bash
# Codex CLI (`codex exec`) against Switchboard, with a custom provider in a throwaway
# CODEX_HOME (the config.toml that docs/clients.md gives users).
#
# Usage: codex_check.sh BASE_URL API_KEY [CALL ...]   (BASE_URL ends in /v1)
# Calls: exec-plain (a prompt answered with text), exec-tool (the model asks Codex's
# exec_command tool to run `echo hi`; Codex runs it and sends the output back).
# CODEX_BIN overrides the binary (default: the locked install in .tools/codex).
# Prints what it got and exits non-zero on any mismatch with tests/clients/scenarios.json,
# key "codex".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
codex=${CODEX_BIN:-$here/../../.tools/codex/node_modules/.bin/codex}
base_url=$1
api_key=$2
shift 2
calls=("$@")
[ ${#calls[@]} -gt 0 ] || calls=(exec-plain exec-tool)

home=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$home" "$work"' EXIT
# web_search: Codex adds OpenAI's hosted web_search tool by default; Switchboard refuses
# built-in tools the provider bills beyond tokens on the platform's key. The update check
# and analytics are off so that the test never reaches for the internet.
cat >"$home/config.toml" <<EOF
model = "gpt-4o"
model_provider = "switchboard"
web_search = "disabled"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.switchboard]
name = "Switchboard"
base_url = "$base_url"
env_key = "SWITCHBOARD_API_KEY"
wire_api = "responses"
EOF

fail() { echo "mismatch: $*" >&2; exit 1; }

codex_exec() { # prompt → the last message in $work/last.txt, the JSON events in $work/events.jsonl
  (cd "$work" && env -i PATH="$PATH" HOME="$home" CODEX_HOME="$home" SWITCHBOARD_API_KEY="$api_key" \
    timeout 120 "$codex" exec --strict-config --skip-git-repo-check --ephemeral --json \
    --sandbox danger-full-access --output-last-message "$work/last.txt" "$1" \
    </dev/null >"$work/events.jsonl" 2>"$work/stderr.txt") \
    || { cat "$work/events.jsonl" "$work/stderr.txt" >&2; fail "codex exec exited non-zero"; }
}

for call in "${calls[@]}"; do
  case "$call" in
    exec-plain)
      codex_exec "Say hello."
      echo "exec-plain: $(cat "$work/last.txt")"
      [ "$(cat "$work/last.txt")" = "Hello from Codex." ] || fail "last message: $(cat "$work/last.txt")"
      # The usage of the answer (the fake upstream's default: 11 in, 7 out).
      grep '"type":"turn.completed"' "$work/events.jsonl" | grep -q '"input_tokens":11,.*"output_tokens":7' \
        || fail "turn.completed with the answer's usage: $(grep turn.completed "$work/events.jsonl")"
      ;;
    exec-tool)
      codex_exec "Run echo hi in the shell and tell me what it printed."
      echo "exec-tool: $(cat "$work/last.txt")"
      # Codex ran the command the model asked for, and finished with the model's answer.
      grep -q '"type":"command_execution"' "$work/events.jsonl" || fail "no command ran: $(cat "$work/events.jsonl")"
      grep '"type":"command_execution"' "$work/events.jsonl" | grep -q '"aggregated_output":"hi\\n"' \
        || fail "echo hi did not print hi: $(grep command_execution "$work/events.jsonl")"
      [ "$(cat "$work/last.txt")" = "It printed hi." ] || fail "last message: $(cat "$work/last.txt")"
      ;;
    *) fail "unknown call $call" ;;
  esac
done
echo "codex: all calls as expected"
