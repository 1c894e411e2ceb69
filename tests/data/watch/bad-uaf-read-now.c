/* Bug: read of a freed 32-byte struct at offset 0. expected: use-after-free read at offset 0 */
#include <stdlib.h>

struct node { long value; long pad[3]; };

int main(void)
{
    struct node *n = malloc(sizeof *n);
    n->value = 42;
    free(n);
    volatile long *vp = &n->value;
    long v = *vp; /* BUG: use-after-free read, offset 0 */
    (void)v;
    return 0;
}
