/*
 * calls.c — requests through a tiny parser, for function probes.
 *
 *   process_request(id, path)   10 calls; ids 5 and 10 fail with -1
 *     parse_body(body, id)      10 calls; 2 leave by longjmp (no return)
 *       fail_parse(id)          2 calls, both leave by longjmp
 *       checksum(s, depth)      recursion 4 deep under each of the other 8
 *
 * Usage: calls [N]  (N requests, default 10). Each request sleeps 2 ms so
 * durations are visible. Built with frame pointers by tm-tui.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static jmp_buf on_error;

static void nap_ms(long ms)
{
	struct timespec t = { 0, ms * 1000000L };
	nanosleep(&t, NULL);
}

__attribute__((noinline)) int checksum(const char *s, int depth)
{
	if (depth == 0)
		return s[0];
	return checksum(s, depth - 1) + 1;
}

__attribute__((noinline)) void fail_parse(int id)
{
	longjmp(on_error, id);
}

__attribute__((noinline)) int parse_body(const char *body, int id)
{
	if (id % 5 == 0)
		fail_parse(id);
	return checksum(body, 3);
}

__attribute__((noinline)) int process_request(int id, const char *path)
{
	char *volatile buf = malloc(64);
	int r;

	snprintf(buf, 64, "%s?id=%d", path, id);
	if (setjmp(on_error)) {
		free(buf);
		return -1;
	}
	nap_ms(2);
	r = parse_body(buf, id);
	free(buf);
	return r;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10;
	int failed = 0;

	for (int id = 1; id <= n; id++)
		if (process_request(id, id % 2 ? "/get" : "/put") < 0)
			failed++;
	printf("calls: %d requests, %d failed\n", n, failed);
	return 0;
}
