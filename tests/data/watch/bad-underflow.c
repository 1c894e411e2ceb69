/* Bug: write one byte before a 64-byte block (p[-1]). expected: heap-buffer-overflow write at offset -1 */
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char *p = malloc(64);
    memset(p, 0, 64);
    /* p[-1] is the most significant byte of glibc's chunk size field, which is
     * 0 for any small chunk, so writing 0 leaves the heap intact and free()
     * does not abort; valgrind still reports the invalid write. */
    volatile char *vp = p;
    vp[-1] = 0; /* BUG: heap-buffer-underflow write, offset -1 */
    free(p);
    return 0;
}
