/* Correct: malloc(n) for n in 1..64, fill exactly n bytes with memset, free. expected: none */
#include <stdlib.h>
#include <string.h>

int main(void)
{
    for (int round = 0; round < 4; round++) {
        for (size_t n = 1; n <= 64; n++) {
            char *p = malloc(n);
            memset(p, 1, n);
            volatile char *vp = p;
            if (vp[n - 1] != 1)
                return 1;
            free(p);
        }
    }
    return 0;
}
