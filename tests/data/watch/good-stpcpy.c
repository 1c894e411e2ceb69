/* Correct: stpcpy of a short string in a 24-byte block followed by a freed
 * block. glibc's SIMD stpcpy loads the second 32-byte vector (0x20(%rsi),
 * the freed neighbour's first bytes) before it looks for the end in the
 * first: a read the routine discards, not a use after free.
 * expected: none */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    size_t total = 0;
    char dst[128];
    for (int r = 0; r < 2000; r++) {
        char *a = malloc(24), *b = malloc(24);
        strcpy(a, "abcdef");
        b[0] = 1;
        free(b); /* b == a + 32 */
        char *volatile va = a;
        total += stpcpy(dst, va) - dst;
        free(a);
    }
    printf("%zu\n", total);
    return 0;
}
