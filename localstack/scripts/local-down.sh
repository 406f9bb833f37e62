#!/usr/bin/env bash
# Stop the local AWS that local-up.sh started (by its pid file only).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${LOCAL_DIR:-.local}
pidfile=$dir/moto.pid
rm -f "$dir/local-aws.json"
if [ ! -f "$pidfile" ]; then
	echo "local AWS not running (no $pidfile)"
	exit 0
fi
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null && grep -q ferry_moto.py "/proc/$pid/cmdline" 2>/dev/null; then
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null || true
	echo "local AWS stopped (pid $pid)"
else
	echo "local AWS not running (stale $pidfile)"
fi
rm -f "$pidfile"
