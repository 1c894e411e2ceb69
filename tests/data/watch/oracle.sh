#!/usr/bin/env bash
# Ground-truth oracle for the watchpoint corpus, independent of tm-tui.
# Builds every bad-*.c / good-*.c, runs it natively (must exit 0) and under
# valgrind memcheck, then checks valgrind's findings against expected.txt.
# Usage: tests/data/watch/oracle.sh [-k]   (-k keeps the temp dir with logs)
set -u
here=$(cd "$(dirname "$0")" && pwd)
keep=0; [ "${1:-}" = "-k" ] && keep=1
tmp=$(mktemp -d)
[ "$keep" = 1 ] || trap 'rm -rf "$tmp"' EXIT
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 2; }

# Turn a valgrind log into "kind access offset" lines, one per reported error
# (in report order). Only Invalid read/write errors against heap blocks count.
classify() {
    awk '
    /== Invalid (read|write) of size [0-9]+/ {
        acc = ($0 ~ /Invalid read/) ? "read" : "write"; pending = 1; next
    }
    pending && /Address 0x[0-9a-fA-F]+ is [0-9]+ bytes (inside|after|before) a block of size [0-9]+ (free.d|alloc.d)/ {
        match($0, /is [0-9]+ bytes/); n = substr($0, RSTART + 3, RLENGTH - 9) + 0
        match($0, /block of size [0-9]+/); m = substr($0, RSTART + 14, RLENGTH - 14) + 0
        kind = ($0 ~ /free.d/) ? "use-after-free" : "heap-buffer-overflow"
        if ($0 ~ /bytes inside/) off = n
        else if ($0 ~ /bytes after/) off = m + n
        else off = -n
        print kind, acc, off; pending = 0
    }' "$1"
}

# Human-readable first error: "Invalid read of size 8 / 0 bytes inside a block of size 32 free'd"
first_error() {
    local what addr
    what=$(grep -m1 -oE 'Invalid (read|write) of size [0-9]+' "$1")
    addr=$(grep -m1 -oE 'is [0-9]+ bytes (inside|after|before) a block of size [0-9]+ (free.d|alloc.d)' "$1" | sed 's/^is //')
    [ -n "$what" ] && echo "$what; $addr" || echo "-"
}

fail=0
printf '%-20s %4s %6s %6s  %-32s %s\n' program exit vgexit errors "derived (kind access offset)" "first valgrind error"
printf '%-20s %4s %6s %6s  %-32s %s\n' ------- ---- ------ ------ ---------------------------- --------------------
for src in "$here"/bad-*.c "$here"/good-*.c; do
    name=$(basename "$src" .c)
    bin="$tmp/$name"
    if ! gcc -O0 -g -o "$bin" "$src" -lpthread 2>"$tmp/$name.cc"; then
        echo "$name: BUILD FAILED"; cat "$tmp/$name.cc"; fail=1; continue
    fi
    "$bin" >"$tmp/$name.out" 2>&1; rc=$?
    valgrind --error-exitcode=99 --run-libc-freeres=no --run-cxx-freeres=no \
        --log-file="$tmp/$name.vg" "$bin" >/dev/null 2>&1; vrc=$?
    nerr=$(grep -oE 'ERROR SUMMARY: [0-9]+ errors' "$tmp/$name.vg" | grep -oE '[0-9]+' | head -1)
    classify "$tmp/$name.vg" >"$tmp/$name.got"
    grep "^$name " "$here/expected.txt" | cut -d' ' -f2- >"$tmp/$name.exp"
    derived=$(head -1 "$tmp/$name.got"); [ -n "$derived" ] || derived="none - -"
    extra=$(( $(sort -u "$tmp/$name.got" | wc -l) - 1 ))
    [ "$extra" -gt 0 ] && derived="$derived (+$extra more)"

    verdict=ok; why=""
    [ "$rc" -eq 0 ] || { verdict=FAIL; why="$why native-exit=$rc"; }
    if [ ! -s "$tmp/$name.exp" ]; then verdict=FAIL; why="$why no-expected-line"; fi
    case "$name" in
    bad-*)
        [ "${nerr:-0}" -ge 1 ] && [ "$vrc" -eq 99 ] || { verdict=FAIL; why="$why no-valgrind-error"; }
        # first reported error must be the first expected line ...
        [ "$(head -1 "$tmp/$name.got")" = "$(head -1 "$tmp/$name.exp")" ] || { verdict=FAIL; why="$why first-error-mismatch"; }
        # ... and every expected line must be among the reported errors
        while read -r line; do
            grep -qxF "$line" "$tmp/$name.got" || { verdict=FAIL; why="$why missing:'$line'"; }
        done <"$tmp/$name.exp"
        ;;
    good-*)
        [ "${nerr:-x}" = 0 ] && [ "$vrc" -eq 0 ] || { verdict=FAIL; why="$why valgrind-errors"; }
        [ "$(cat "$tmp/$name.exp")" = "none - -" ] || { verdict=FAIL; why="$why expected-not-none"; }
        ;;
    esac
    [ "$verdict" = ok ] || fail=1
    printf '%-20s %4s %6s %6s  %-32s %s  [%s%s]\n' "$name" "$rc" "$vrc" "${nerr:-?}" "$derived" "$(first_error "$tmp/$name.vg")" "$verdict" "$why"
done
[ "$keep" = 1 ] && echo "logs kept in $tmp"
if [ "$fail" = 0 ]; then echo "ORACLE: all programs match expected.txt"; else echo "ORACLE: MISMATCH"; fi
exit "$fail"
