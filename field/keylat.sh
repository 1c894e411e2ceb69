#!/bin/bash
# Key-to-screen latency of the live UI while it ingests a full-rate churner, measured from outside
# as a person sees it: in tmux, a key is sent and the screen polled until the status line's cursor
# time changes. capture-pane itself adds a few ms.
# Usage (from the project root, after cargo build --release): THREADS=2 N=40 bash field/keylat.sh
set -u
TM=${TM:-$PWD/target/release/tm-tui}
N=${N:-40}
THREADS=${THREADS:-2}
churner=$("$TM" demo threads --build-only 2>/dev/null) || { echo "cannot build the churner"; exit 1; }
s=tm-keylat-$$
tmux new-session -d -s "$s" -x 160 -y 45 "$TM -- $churner $THREADS 50000000"
trap 'tmux kill-session -t "$s" 2>/dev/null' EXIT
sleep 2
cursor() { tmux capture-pane -p -t "$s" | head -1 | grep -o 'at +[0-9.]*s'; }
lat=()
key=Left
for _ in $(seq 1 "$N"); do
  before=$(cursor)
  t0=$(date +%s%N)
  tmux send-keys -t "$s" $key
  while [ "$(cursor)" = "$before" ] && [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 3000 ]; do :; done
  lat+=($(( ($(date +%s%N) - t0) / 1000000 )))
  [ $key = Left ] && key=Right || key=Left
  sleep 0.1
done
tmux capture-pane -p -t "$s" | head -1
tmux send-keys -t "$s" q
printf '%s\n' "${lat[@]}" | sort -n | awk '{a[NR]=$1} END {print "key to screen (ms): median", a[int(NR/2)+1], "p90", a[int(NR*0.9)], "p99", a[int(NR*0.99)], "max", a[NR], "n", NR}'
