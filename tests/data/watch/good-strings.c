/* Correct: strdup/strlen/strcmp/free of strings of length 1..100 in neighbouring blocks (vectorized strlen reads its aligned window). expected: none */
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char buf[101];
    char *s[101];
    for (int round = 0; round < 10; round++) {
        for (int n = 1; n <= 100; n++) {
            for (int i = 0; i < n; i++)
                buf[i] = (char)('a' + (i + n + round) % 26);
            buf[n] = '\0';
            s[n] = strdup(buf); /* neighbouring small blocks */
        }
        for (int n = 1; n <= 100; n++) {
            if (strlen(s[n]) != (size_t)n)
                return 1;
            if (n > 1 && strcmp(s[n], s[n - 1]) == 0)
                return 1;
            if (strchr(s[n], '\0') != s[n] + n)
                return 1;
        }
        for (int n = 1; n <= 100; n++)
            free(s[n]);
    }
    return 0;
}
