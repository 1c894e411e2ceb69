/* Correct: 4 threads churn malloc/free/memcpy of sizes 1..512 for ~0.3 s, all in bounds. expected: none */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 32

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *worker(void *arg)
{
    unsigned seed = (unsigned)(unsigned long)arg * 2654435761u + 1;
    char *slot[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    unsigned char src[512];
    for (int i = 0; i < 512; i++)
        src[i] = (unsigned char)(i ^ seed);
    double end = now() + 0.3;
    unsigned long iter = 0;
    while ((iter++ & 63) || now() < end) {
        int k = rand_r(&seed) % SLOTS;
        if (slot[k]) {
            /* read back every byte before freeing */
            for (size_t i = 0; i < len[k]; i++)
                if ((unsigned char)slot[k][i] != src[i])
                    abort();
            free(slot[k]);
            slot[k] = NULL;
        } else {
            size_t n = 1 + (size_t)(rand_r(&seed) % 512);
            slot[k] = malloc(n);
            memcpy(slot[k], src, n);
            len[k] = n;
        }
    }
    for (int k = 0; k < SLOTS; k++)
        free(slot[k]);
    return NULL;
}

int main(void)
{
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    return 0;
}
