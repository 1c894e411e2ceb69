/* Correct: free a block, malloc the same size (tcache hands back the same address), write/read/memcpy it. expected: none */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char *p = malloc(64);
    memset(p, 'a', 64);
    free(p);
    char *q = malloc(64); /* normally the same address as p */
    const char msg[] = "reused block, all accesses in bounds";
    memcpy(q, msg, sizeof msg);
    volatile char *vq = q;
    vq[0] = 'R';
    char c = vq[0];
    size_t len = strlen(q);
    int same = (p == q);
    (void)same;
    if (c != 'R' || len != sizeof msg - 1)
        return 1;
    for (int i = 0; i < 100; i++) {
        char *r = malloc(64);
        memcpy(r, q, 64);
        free(r);
    }
    free(q);
    return 0;
}
