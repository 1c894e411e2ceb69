/* Correct: grow a block with realloc many times (it moves), touching only the valid parts. expected: none */
#include <stdlib.h>

int main(void)
{
    size_t n = 8;
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)i;
    void *keep[64];
    int nkeep = 0;
    for (int round = 0; round < 40; round++) {
        size_t newn = n + 8 + (size_t)round * 24;
        /* allocate something after p so realloc usually has to move it */
        if (nkeep < 64)
            keep[nkeep++] = malloc(16);
        unsigned char *q = realloc(p, newn);
        if (!q)
            return 1;
        for (size_t i = 0; i < n; i++) /* old contents survived */
            if (q[i] != (unsigned char)i)
                return 1;
        for (size_t i = 0; i < newn; i++)
            q[i] = (unsigned char)i;
        p = q;
        n = newn;
    }
    for (int i = 0; i < nkeep; i++)
        free(keep[i]);
    free(p);
    return 0;
}
