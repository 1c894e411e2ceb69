/* Bug: reads of a freed 64-byte struct at offset 0 and offset 40. expected: use-after-free read at offset 0 and offset 40 */
#include <stdlib.h>

struct rec {
    long id;        /* offset 0  */
    char name[32];  /* offset 8  */
    long count;     /* offset 40 */
    long flags;     /* offset 48 */
    long extra;     /* offset 56 */
};

int main(void)
{
    _Static_assert(sizeof(struct rec) == 64, "struct must be 64 bytes");
    struct rec *r = calloc(1, sizeof *r);
    r->id = 1;
    r->count = 5;
    free(r);
    volatile struct rec *vr = r;
    long a = vr->id;    /* BUG: use-after-free read, offset 0 */
    long b = vr->count; /* BUG: use-after-free read, offset 40 */
    (void)a;
    (void)b;
    return 0;
}
