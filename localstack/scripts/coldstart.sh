#!/usr/bin/env bash
# Cold start of the real bootstrap + Go sample app under the Lambda emulator:
# N fresh emulators, one direct invocation each; prints the emulator's Init
# Duration (bootstrap start -> app ready -> first /next) and the first
# invocation's billed ms, then the medians. Run from the repo root.
set -euo pipefail
n=${1:-7}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/layer" "$work/code"
go build -trimpath -ldflags='-s -w' -o "$work/layer/bootstrap" ./bootstrap
go build -trimpath -ldflags='-s -w' -o "$work/code/goapp" ./examples/goapp
go build -o "$work/emu" ./localstack/cmd/lambda-emulator
cat > "$work/fns.json" <<JSON
{"functions":[{"name":"app","code_dir":"$work/code","layers":["$work/layer"],"timeout":"10s","memory_mb":1769,
  "env":{"FERRY_APP_CMD":"$work/code/goapp","FERRY_READINESS_PATH":"/healthz"}}]}
JSON
event='{"version":"2.0","rawPath":"/healthz","requestContext":{"http":{"method":"GET","path":"/healthz"}}}'
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
inits=(); billed=()
for i in $(seq "$n"); do
  "$work/emu" -config "$work/fns.json" -listen "127.0.0.1:$port" 2>/dev/null & pid=$!
  until curl -sf "http://127.0.0.1:$port/_emulator/health" >/dev/null; do sleep 0.02; done
  curl -sf -X POST "http://127.0.0.1:$port/2015-03-31/functions/app/invocations" -d "$event" >/dev/null
  read -r init b < <(curl -sf "http://127.0.0.1:$port/_emulator/stats" | python3 -c 'import json,sys;s=json.load(sys.stdin)["app"];print(s["init_ms"],s["billed_ms"])')
  inits+=("$init"); billed+=("$b")
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "init ms:   ${inits[*]}   median $(median "${inits[@]}")"
echo "billed ms: ${billed[*]}   median $(median "${billed[@]}")  (first invocation, after init)"
