/* Bug: a block freed by a helper function is read by printf in the caller
 * (offset 0, through strlen). The caller's next call reuses the stack
 * where free's return address was: a stale copy must not hide the use.
 * expected: use-after-free read at offset 0 */
#include <stdio.h>
#include <stdlib.h>

struct conn {
    char name[32];
    int fd;
};

static struct conn *open_conn(int i)
{
    struct conn *c = malloc(sizeof *c);
    snprintf(c->name, sizeof c->name, "conn-%d", i);
    c->fd = i;
    return c;
}

static void close_conn(struct conn *c)
{
    free(c);
}

int main(void)
{
    struct conn *c = open_conn(7);
    close_conn(c);
    printf("closed %s\n", c->name); /* BUG: read after free */
    return 0;
}
