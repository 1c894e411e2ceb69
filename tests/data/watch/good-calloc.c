/* Correct: free blocks, then calloc the same sizes (zeroing reuses the freed memory) and use them. expected: none */
#include <stdlib.h>
#include <string.h>

int main(void)
{
    static const size_t sizes[] = {16, 24, 40, 64, 100, 200, 512, 1000};
    enum { N = sizeof sizes / sizeof sizes[0] };
    char *blk[N];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) {
            blk[i] = malloc(sizes[i]);
            memset(blk[i], 0xAB, sizes[i]);
        }
        for (int i = 0; i < N; i++)
            free(blk[i]);
        for (int i = 0; i < N; i++) {
            blk[i] = calloc(1, sizes[i]);
            for (size_t j = 0; j < sizes[i]; j++)
                if (blk[i][j] != 0)
                    return 1;
            blk[i][0] = 1;
            blk[i][sizes[i] - 1] = 2;
        }
        for (int i = 0; i < N; i++)
            free(blk[i]);
    }
    return 0;
}
