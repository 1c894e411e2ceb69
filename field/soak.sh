#!/bin/bash
# Soak (issue 15, item 7): the 2-thread churner recorded at full rate with a bounded trace for
# DURATION seconds (default 1800). Every STEP seconds: tm-tui's RSS (and its peak), the trace
# directory's size on disk, segments held, events recorded so far. At the end: SIGINT, the
# summary line (events, losses), `report` of the held window (time, peak RSS) and `open` of it
# in tmux (first frame, loaded). Writes the samples as CSV to $OUT (default /tmp/soak.csv).
# Usage (from the project root, after cargo build --release):
#   DURATION=1800 MAX=1GiB bash field/soak.sh
set -u
TM=${TM:-$PWD/target/release/tm-tui}
DURATION=${DURATION:-1800}
STEP=${STEP:-10}
MAX=${MAX:-1GiB}
OUT=${OUT:-/tmp/soak.csv}
W=$(mktemp -d /tmp/soak.XXXXXX)
churner=$("$TM" demo threads --build-only 2>/dev/null) || { echo "cannot build the churner"; exit 1; }
"$TM" record --max-size "$MAX" -o "$W/trace" -- "$churner" 2 100000000000 2>"$W/err" &
tp=$!
# Ctrl-C as a terminal sends it: to tm-tui and the program (the churner ends on it).
stop() { pkill -INT -P $tp 2>/dev/null; kill -INT $tp 2>/dev/null; }
trap 'stop; wait $tp 2>/dev/null' EXIT
echo "t_s,rss_kib,peak_rss_kib,disk_kib,segments,loadavg" >"$OUT"
t0=$(date +%s)
while [ $(( $(date +%s) - t0 )) -lt "$DURATION" ] && kill -0 $tp 2>/dev/null; do
  sleep "$STEP"
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$tp/status 2>/dev/null)
  hwm=$(awk '/^VmHWM/ {print $2}' /proc/$tp/status 2>/dev/null)
  disk=$(du -sk "$W/trace" 2>/dev/null | cut -f1)
  segs=$(ls "$W/trace" 2>/dev/null | grep -c '^seg-')
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "$(( $(date +%s) - t0 )),${rss:-0},${hwm:-0},${disk:-0},${segs:-0},$load" >>"$OUT"
done
stop; wait $tp; rc=$?; trap - EXIT
echo "record exit $rc"; cat "$W/err"
/usr/bin/time -f "report: %e s, peak RSS %M KiB" "$TM" report "$W/trace" 2>&1 | grep -E "^(report:|events|lost|window|heap|tm-tui)" | head -12
s=soak-$$
tmux new-session -d -s "$s" -x 120 -y 30 "$TM open $W/trace; sleep 600"
t1=$(date +%s%N)
while ! tmux capture-pane -p -t "$s" | grep -q "LOADING\|REPLAY"; do sleep 0.01; done
echo "open: first frame after $(( ($(date +%s%N) - t1) / 1000000 )) ms"
while ! tmux capture-pane -p -t "$s" | grep -q "REPLAY"; do sleep 0.2; done
echo "open: read after $(( ($(date +%s%N) - t1) / 1000000 )) ms"
tmux capture-pane -p -t "$s" | head -1; tmux capture-pane -p -t "$s" | tail -1
tmux kill-session -t "$s"
du -sh "$W/trace"; echo "samples: $OUT; trace: $W/trace (rm -r it when done)"
