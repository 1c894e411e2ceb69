/* Bug: one-byte write just past the end of a 100-byte block (p[100]). expected: heap-buffer-overflow write at offset 100 */
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char *p = malloc(100);
    memset(p, 0, 100);
    volatile char *vp = p;
    vp[100] = 'x'; /* BUG: heap-buffer-overflow write, offset 100 (glibc slack, no corruption) */
    free(p);
    return 0;
}
