/* Bug: off-by-one loop (i <= 10) writes int a[10] of a 40-byte block. expected: heap-buffer-overflow write at offset 40 */
#include <stdlib.h>

int main(void)
{
    int *a = malloc(10 * sizeof(int));
    /* A 40-byte request has no glibc slack: a[10] lands on the size field of
     * the next chunk (b, a 48-byte chunk => header 0x31). The loop writes the
     * value 0x31 so the clobbered header is unchanged and the program exits
     * normally; valgrind still reports the invalid write. */
    int *b = malloc(10 * sizeof(int));
    for (int i = 0; i <= 10; i++) /* BUG: should be i < 10 */
        a[i] = 0x31;              /* a[10]: heap-buffer-overflow write, offset 40 */
    b[0] = a[0];
    free(b);
    free(a);
    return 0;
}
