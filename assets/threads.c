/* Allocator churner: N threads each doing M malloc/free pairs of mixed
 * sizes as fast as they can. Every pair is freed: nothing leaks.
 * Usage: threads [threads] [pairs_per_thread] [file for the churn's seconds] */
#include <pthread.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>

static long pairs = 100000;
/* Where each block escapes to: without it -O2 elides the malloc/free pair. */
static char *volatile sink;

static void *churn(void *arg)
{
	unsigned long seed = (unsigned long)arg * 2654435761u + 1;
	long sum = 0;

	for (long i = 0; i < pairs; i++) {
		seed = seed * 6364136223846793005ul + 1442695040888963407ul;
		size_t size = 16 + (seed >> 33) % 2048;
		char *p = malloc(size);
		p[0] = (char)i;
		sink = p;
		sum += p[0];
		free(p);
	}
	return (void *)sum;
}

int main(int argc, char **argv)
{
	int nthreads = argc > 1 ? atoi(argv[1]) : 2;
	pthread_t tids[64];

	if (argc > 2)
		pairs = atol(argv[2]);
	if (nthreads > 64)
		nthreads = 64;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < nthreads; i++)
		pthread_create(&tids[i], NULL, churn, (void *)(long)i);
	for (int i = 0; i < nthreads; i++)
		pthread_join(tids[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%d threads x %ld pairs\n", nthreads, pairs);
	/* The churn's own time, for a benchmark whose tracer starts slowly. */
	if (argc > 3) {
		FILE *f = fopen(argv[3], "w");

		if (f) {
			fprintf(f, "%.9f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
			fclose(f);
		}
	}
	return 0;
}
