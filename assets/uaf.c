/* Use-after-free demo: a request buffer is freed by drop_conn() and then
 * read by process_request(). The block is 300000 bytes, above glibc's mmap
 * threshold, so free() unmaps it and the late read faults (SIGSEGV) at an
 * address inside the old block.
 * Usage: uaf [delay_ms]  (waits before the first request, for attaching) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct conn {
	int id;
	char *buf;
	size_t len;
};

static char *parse_request(struct conn *c, size_t len)
{
	c->buf = malloc(len);
	memset(c->buf, 'r', len);
	c->len = len;
	return c->buf;
}

static void drop_conn(struct conn *c)
{
	free(c->buf); /* the buffer is gone, but c->buf still points at it */
}

static long process_request(struct conn *c)
{
	long sum = 0;
	for (size_t i = 0; i < c->len; i += 4096)
		sum += c->buf[i + 16]; /* use after free */
	return sum;
}

static long handle_conn(int id, size_t len, int drop_early)
{
	struct conn c = { .id = id };
	long r;

	parse_request(&c, len);
	if (drop_early)
		drop_conn(&c);
	r = process_request(&c);
	if (!drop_early)
		drop_conn(&c);
	return r;
}

int main(int argc, char **argv)
{
	int delay_ms = argc > 1 ? atoi(argv[1]) : 0;
	long total = 0;

	if (delay_ms)
		usleep(delay_ms * 1000);
	/* Small requests come from the heap; the big one is mmapped, and
	 * glibc returns it to the kernel as soon as it is freed. */
	for (int i = 0; i < 3; i++)
		total += handle_conn(i, 1000 + i * 500, 0);
	total += handle_conn(3, 300000, 1);
	printf("total %ld\n", total);
	return 0;
}
