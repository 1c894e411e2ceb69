#!/bin/bash
# Field check: watchpoint false positives on correct (valgrind-clean) programs.
# Three classes seen on Debian's gcc, git, python3, jq, sqlite3, xz:
#   1. calloc reusing a freed chunk: glibc's calloc tail-calls memset (jmp), so the
#      memset runs with sp == calloc's entry sp, not below it, and the hit is not
#      recognized as the allocator's (gcc/cc1 xcalloc, git xcalloc, python
#      PyMem_RawCalloc, libbfd bfd_zmalloc).
#   2. vectorized string functions (strlen/strcmp/strrchr/stpcpy-evex) reading a
#      whole 32-byte window past a short string's NUL into a freed neighbour's first
#      8 bytes (jq strdup, sqlite3DbStrDup, setlocale's _nl_make_l10nflist, gcc driver).
#   3. stopping the recording (Ctrl-C) while a free watch is armed: malloc's own
#      tcache_get/_int_malloc read of the freed block is reported as the program's.
# Each case prints the number of findings; a correct tool prints 0 for all.
# Usage (from the project root, after cargo build --release): bash field/watch-fp.sh
set -u
TM=${TM:-$PWD/target/release/tm-tui}
W=$(mktemp -d /tmp/field-watchfp.XXXXXX)
findings() { "$TM" report --json "$1" 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); f=d.get("findings") or []; print(len(f), "findings;", "first access:", " <- ".join((x.get("func") or "?") for x in (f[0]["access_stack"][:3] if f else [])))'; }

cat >"$W/fp-calloc.c" <<'EOF'
#include <stdlib.h>
#include <stdio.h>
int main(void){
  long sum=0; void *pad[8];
  for (int i=0;i<8;i++) pad[i]=malloc(1000);
  for (int r=0;r<3000;r++){
    char *p = malloc(1000); p[0]=1;
    for (int i=0;i<8;i++) free(pad[i]);   /* tcache full: p goes to the unsorted bin */
    free(p);
    for (int i=0;i<8;i++) pad[i]=malloc(1000);
    char *q = calloc(1, 1000);             /* gets p's chunk, clears it with memset */
    sum += q[0] + q[999];
    free(q);
  }
  printf("%ld\n", sum); return 0;
}
EOF
cat >"$W/fp-strlen.c" <<'EOF'
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
int main(void){
  size_t total=0;
  for (int r=0;r<2000;r++){
    char *a=malloc(24), *b=malloc(24);
    memset(a, 0, 24);
    strcpy(a+16, getenv("X") ? getenv("X") : "abcdef");
    b[0]=1; free(b);                       /* b = a + 32 */
    char * volatile va = a+16;
    total += strlen(va);                   /* evex strlen loads a+16..a+47 */
    free(a);
  }
  printf("%zu\n", total); return 0;
}
EOF
cat >"$W/churn.c" <<'EOF'
#include <stdlib.h>
#include <string.h>
#include <time.h>
int main(int argc,char**argv){
  int secs = argc>1 ? atoi(argv[1]) : 30; void *keep[64]={0}; unsigned i=0; time_t end=time(0)+secs;
  while (time(0) < end)
    for (int k=0;k<1000;k++,i++){ int s=i%64; if(keep[s]){ free(keep[s]); keep[s]=0;} else { keep[s]=malloc(16+(i*7)%100); memset(keep[s],1,16);} }
  return 0;
}
EOF
gcc -O0 -g -o "$W/fp-calloc" "$W/fp-calloc.c" && gcc -O0 -g -o "$W/fp-strlen" "$W/fp-strlen.c" && gcc -O2 -o "$W/churn" "$W/churn.c" || exit 1
for rate in 100 5000; do
  "$TM" record -o "$W/c.tmt" --watch-rate $rate -- "$W/fp-calloc" >/dev/null 2>&1
  echo "calloc reuse   (rate $rate): $(findings "$W/c.tmt")"
  "$TM" record -o "$W/s.tmt" --watch-rate $rate -- "$W/fp-strlen" >/dev/null 2>&1
  echo "strlen window  (rate $rate): $(findings "$W/s.tmt")"
done
for i in 1 2 3; do
  "$W/churn" 20 & p=$!; sleep 0.3
  "$TM" record -o "$W/i$i.tmt" --watch-rate 5000 $p >/dev/null 2>&1 & t=$!
  sleep 2; kill -INT $t; wait $t; kill $p; wait $p 2>/dev/null
  echo "stop race #$i  (rate 5000): $(findings "$W/i$i.tmt")"
done
echo "logs in $W"
