#!/bin/bash
# report --at / open --at on a big trace file in parts (issue 15): wall time and peak RSS of
# report --at at 10/50/90% of the recording, once with the page cache dropped, and --whole;
# then how long open --at takes to hold the view at the moment (tmux).
# Usage: bash field/at.sh FILE   (TM=path/to/tm-tui; drops the page cache: run as root)
TM=${TM:-$PWD/target/release/tm-tui}; F=$1
DUR=$($TM report --json --at 100000s "$F" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["duration_ns"])')
echo "file $(du -h $F | cut -f1) duration_ns $DUR"
for frac in 0.1 0.5 0.9; do
  AT=$(python3 -c "print(int($DUR*$frac))")ns
  /usr/bin/time -f "report --at $frac: %e s, %M KiB" $TM report --at $AT "$F" > /tmp/at-r-$frac.txt
  grep -E '^(read|window|heap) ' /tmp/at-r-$frac.txt | cut -c1-160
done
sync; echo 3 > /proc/sys/vm/drop_caches
AT=$(python3 -c "print(int($DUR*0.5))")ns
/usr/bin/time -f "report --at 0.5, cold cache: %e s, %M KiB" $TM report --at $AT "$F" > /dev/null
/usr/bin/time -f "report --at 0.5 --whole: %e s, %M KiB" $TM report --at $AT --whole "$F" > /tmp/at-w.txt
grep -E '^(heap) ' /tmp/at-w.txt
for frac in 0.5 0.9; do
  AT=$(python3 -c "print(int($DUR*$frac/1e9))")s
tmux kill-session -t oa 2>/dev/null
t0=$(date +%s.%N)
tmux new-session -d -s oa -x 100 -y 30 "$TM open --at $AT $F; sleep 100"
for _ in $(seq 3000); do tmux capture-pane -p -t oa | grep -q '(--at)' && break; sleep 0.02; done
t1=$(date +%s.%N)
echo "open --at $AT: held at the moment after $(python3 -c "print(round($t1-$t0,2))") s"
tmux capture-pane -p -t oa | head -1
tmux capture-pane -p -t oa | tail -1
tmux send-keys -t oa q; sleep 0.5; tmux kill-session -t oa 2>/dev/null
done
