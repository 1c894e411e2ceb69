/* Leak demo: remember_request() keeps a 64-byte record per request and
 * never frees it; scratch buffers are freed. Steady growth from one site.
 * Usage: leak [requests] [delay_us_between] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *remember_request(int i)
{
	char *rec = malloc(64);
	snprintf(rec, 64, "request %d", i);
	return rec; /* nobody keeps the pointer: leaked */
}

static void handle_request(int i)
{
	char *scratch = calloc(1, 256 + (i % 7) * 16);
	scratch = realloc(scratch, 1024);
	remember_request(i);
	free(scratch);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 200;
	int delay_us = argc > 2 ? atoi(argv[2]) : 0;

	for (int i = 0; i < n; i++) {
		handle_request(i);
		if (delay_us)
			usleep(delay_us);
	}
	printf("handled %d requests\n", n);
	return 0;
}
