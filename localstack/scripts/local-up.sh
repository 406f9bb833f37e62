#!/usr/bin/env bash
# Start the local AWS (moto_server with ferry's CloudFormation providers,
# localstack/moto/ferry_moto.py) on 127.0.0.1:$LOCAL_PORT, record its pid in
# $LOCAL_DIR/moto.pid, and wait until it answers. Safe to run twice.
#   LOCAL_PORT (default 4566, LocalStack's edge port)  LOCAL_DIR (default .local)
set -euo pipefail
cd "$(dirname "$0")/../.."
port=${LOCAL_PORT:-4566}
dir=${LOCAL_DIR:-.local}
pidfile=$dir/moto.pid
mkdir -p "$dir"
# Where it answers, for ferry to find it without AWS_* variables.
describe() { printf '{"endpoint": "http://127.0.0.1:%s", "region": "us-east-1"}\n' "$port" >"$dir/local-aws.json"; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$(cat "$pidfile")/status" 2>/dev/null; }
answers() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/moto-api/" 2>/dev/null; }

if running; then
	echo "local AWS already running: pid $(cat "$pidfile"), http://127.0.0.1:$port"
	[ -f "$dir/local-aws.json" ] || describe
	exit 0
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
	echo "local-up: 127.0.0.1:$port is already taken by another process; stop it or pick another port: make local-up LOCAL_PORT=4567" >&2
	exit 1
fi
if ! python3 -c 'import moto.server' 2>/dev/null; then
	echo "local-up: moto is not installed for python3. Install it with: pip install 'moto[server]==5.2.1'" >&2
	echo "          (or run LocalStack with Docker: docker compose -f localstack/docker-compose.yml up -d)" >&2
	exit 1
fi
setsid python3 localstack/moto/ferry_moto.py -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 < /dev/null &
echo $! >"$pidfile"
for _ in $(seq 1 300); do
	if answers; then
		describe
		echo "local AWS up: pid $(cat "$pidfile"), http://127.0.0.1:$port (log: $dir/moto.log)"
		exit 0
	fi
	if ! running; then
		echo "local-up: moto exited at start:" >&2
		tail -20 "$dir/moto.log" >&2
		rm -f "$pidfile"
		exit 1
	fi
	sleep 0.1
done
echo "local-up: moto did not answer on 127.0.0.1:$port within 30s (log: $dir/moto.log)" >&2
exit 1
