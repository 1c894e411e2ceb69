/* Bug: write to a freed 48-byte block at offset 0. expected: use-after-free write at offset 0 */
#include <stdlib.h>

int main(void)
{
    /* No later malloc of this size class: the write clobbers glibc's tcache
     * next pointer, which is harmless as long as the bin is never popped. */
    long *p = malloc(48);
    p[0] = 1;
    free(p);
    volatile long *vp = &p[0];
    *vp = 7; /* BUG: use-after-free write, offset 0 */
    return 0;
}
