#!/bin/bash
# Field check: Debian's nginx (-O2, no frame pointers, forking workers, its own pools over glibc
# malloc) recorded by tm-tui under wrk. Prints throughput untraced vs traced, losses, and what
# the stacks look like. The like of ../shared/field/redis.sh.
# Usage (from the project root, after cargo build --release): bash field/nginx.sh [extra tm-tui record args]
set -u
TM=${TM:-$PWD/target/release/tm-tui}
W=$(mktemp -d /tmp/field-nginx.XXXXXX)
command -v nginx >/dev/null || apt-get install -y -qq nginx-light >/dev/null 2>&1 || apt-get install -y -qq nginx >/dev/null 2>&1 || { echo "cannot install nginx"; exit 1; }
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 || { echo "cannot install wrk"; exit 1; }
port=$((20000 + RANDOM % 10000))
mkdir -p "$W/html" "$W/logs"
head -c 2048 /dev/urandom | base64 >"$W/html/index.html"
cat >"$W/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process on;
pid $W/nginx.pid;
error_log $W/logs/error.log;
events { worker_connections 256; }
http {
  access_log off;
  server { listen 127.0.0.1:$port; root $W/html;
           location / { try_files \$uri \$uri/ =404; } }
}
CONF
nginx -c "$W/nginx.conf" -p "$W" &
np=$!; trap 'kill $tp 2>/dev/null; kill $np 2>/dev/null; wait 2>/dev/null' EXIT
for i in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
# The one worker serves every request: that is the process to record.
wp=$(pgrep -P $np | head -1)
[ -n "$wp" ] || { echo "no nginx worker"; exit 1; }
rps() { wrk -t1 -c8 -d5s "http://127.0.0.1:$port/" 2>/dev/null | awk '/Requests\/sec/ {print int($2)}'; }
base=$(rps)
"$TM" record -o "$W/nginx.tmt" "$@" $wp >"$W/record.out" 2>&1 & tp=$!
sleep 2; traced=$(rps); kill -INT $tp; wait $tp; tp=
echo "nginx GET /index.html: untraced $base rps, traced $traced rps"
"$TM" report "$W/nginx.tmt" --json --window 500ms >"$W/nginx.json" 2>/dev/null || { echo "report failed"; exit 1; }
python3 - "$W/nginx.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("lost:", {k: v for k, v in d["events"]["lost"].items() if v} or "none")
ev = [e for e in d.get("window") or [] if e.get("kind") in ("alloc", "free", "realloc")]
roots = ("main", "ngx_worker_process_cycle", "ngx_spawn_process")
deep = sum(1 for e in ev if any((f.get("func") or "") in roots for f in e.get("stack") or []))
junk = sum(1 for e in ev for f in e.get("stack") or [] if not f.get("module"))
print(f"heap events in the last 500 ms: {len(ev)}; stacks reaching the worker loop or main: {deep}; frames outside any module: {junk}")
print(f"allocation sites live at the end: {len(d.get('leaks') or [])}")
for g in (d.get("leaks") or [])[:3]:
    print("  ", g.get("bytes"), "B", g.get("blocks"), "blocks:", " <- ".join((f.get("func") or f.get("addr") or "?") for f in (g.get("stack") or [])[:8]))
PY
echo "trace and JSON kept in $W"
