#!/bin/bash
# The cost of watchpoints on the allocation-only churner (1 thread, 600,000
# malloc+free pairs, -O2 without frame pointers): the target's own time from
# exec to exit as the recording saw it, recorded with children followed and
# --watch off, then at --watch-rate 1, 20 (the default) and 100, interleaved.
# Usage (root, after cargo build --release and one `tm-tui demo threads
# --build-only`): bash field/watch-cost.sh [runs]
set -eu
TM=${TM:-$PWD/target/release/tm-tui}
BIN=$("$TM" demo threads --build-only 2>/dev/null)
BIN=${BIN%threads}threads-O2
[ -x "$BIN" ] || { echo "no $BIN: run tm-tui bench once (it builds the -O2 churner)"; exit 2; }
T=$(mktemp -d)
t() {
    "$TM" record "$@" -o "$T/t.tmt" -- "$BIN" 1 600000 >/dev/null 2>&1
    "$TM" report --json --filter 'kind=exec,exit' "$T/t.tmt" | python3 -c '
import json, sys
w = json.load(sys.stdin)["window"]
ts = [e["time_ns"] for e in w]
print(round((max(ts) - min(ts)) / 1e9, 3))'
}
printf '%-8s %-8s %-8s %-8s %-8s\n' run off rate1 rate20 rate100
for i in $(seq "${1:-5}"); do
    printf '%-8s %-8s %-8s %-8s %-8s\n' "$i" "$(t --watch off)" "$(t --watch-rate 1)" "$(t --watch-rate 20)" "$(t --watch-rate 100)"
done
rm -rf "$T"
