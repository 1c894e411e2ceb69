/* Bug: printf("%s") of a freed strdup'd string; libc reads offset 0 first. expected: use-after-free read at offset 0 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char *p = strdup("hello, freed world");
    free(p);
    /* BUG: use-after-free read via libc (strlen/vfprintf), offset 0 first.
     * Output is whatever glibc left in the chunk (tcache pointer bytes). */
    printf("%s\n", p);
    return 0;
}
