/* Bug: thread A frees a 64-byte block, thread B (started after A is joined) reads it at offset 0. expected: use-after-free read at offset 0 */
#include <pthread.h>
#include <stdlib.h>

static long *shared;

static void *thread_a(void *arg)
{
    (void)arg;
    free(shared);
    return NULL;
}

static void *thread_b(void *arg)
{
    (void)arg;
    volatile long *vp = shared;
    long v = vp[0]; /* BUG: use-after-free read, offset 0 */
    (void)v;
    return NULL;
}

int main(void)
{
    pthread_t a, b;
    shared = malloc(64);
    shared[0] = 123;
    pthread_create(&a, NULL, thread_a, NULL);
    pthread_join(a, NULL);
    pthread_create(&b, NULL, thread_b, NULL);
    pthread_join(b, NULL);
    return 0;
}
