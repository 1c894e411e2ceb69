/* Bug: read of a freed 200-byte block at offset 0, ~1 ms and 10 unrelated 24-byte malloc/free later. expected: use-after-free read at offset 0 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void)
{
    char *big = malloc(200);
    memset(big, 'A', 200);
    free(big);

    /* unrelated work in a different size class (24 bytes -> 32-byte chunks) */
    for (int i = 0; i < 10; i++) {
        char *s = malloc(24);
        memset(s, i, 24);
        free(s);
    }
    volatile unsigned long acc = 0;
    double t0 = now();
    while (now() - t0 < 0.001)
        acc += 1;

    volatile char *vp = big;
    char c = vp[0]; /* BUG: use-after-free read, offset 0 */
    (void)c;
    return 0;
}
