/* Bug: malloc(strlen(s)) forgets the +1, strcpy writes the NUL at p[20]. expected: heap-buffer-overflow write at offset 20 */
#include <stdlib.h>
#include <string.h>

char src[] = "twenty-chars-string!"; /* 20 chars; non-const so gcc cannot fold it */

int main(void)
{
    size_t n = strlen(src);
    char *p = malloc(n); /* BUG: should be n + 1 */
    strcpy(p, src);      /* heap-buffer-overflow write of the NUL, offset 20 (glibc slack) */
    free(p);
    return 0;
}
