/*
 * callbench.c — the loop `tm-tui bench probes` times: N calls of a small
 * function, or N one-byte writes to /dev/null. It times the loop itself
 * (no start-up or attach in the number) and writes the nanoseconds to OUT.
 *
 * Usage: callbench call|write N OUT
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

__attribute__((noinline)) int work(const char *name, int i)
{
	return name[0] + (i & 7);
}

int main(int argc, char **argv)
{
	long n = argc > 2 ? atol(argv[2]) : 100000;
	volatile int sink = 0;
	long long t0, t1;
	FILE *out;

	if (argc < 4) {
		fprintf(stderr, "usage: callbench call|write N OUT\n");
		return 2;
	}
	if (strcmp(argv[1], "call") == 0) {
		t0 = now_ns();
		for (long i = 0; i < n; i++)
			sink += work("request", (int)i);
		t1 = now_ns();
	} else {
		int fd = open("/dev/null", O_WRONLY);

		t0 = now_ns();
		for (long i = 0; i < n; i++)
			sink += write(fd, "x", 1);
		t1 = now_ns();
		close(fd);
	}
	out = fopen(argv[3], "w");
	if (!out)
		return 1;
	fprintf(out, "%lld\n", t1 - t0);
	fclose(out);
	return 0;
}
