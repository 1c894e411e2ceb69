// The program recorded into snap.tmt (the report JSON snapshot's input):
// allocates, reallocs, frees, leaks, makes probed calls, a few system
// calls, sleeps, then uses a freed block and crashes.
// cc -g -O0 -fno-omit-frame-pointer -o snap snap.c
// tm-tui record --trace all --probe 'handle(int, str)' -o snap.tmt -- ./snap
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char *kept[3];

__attribute__((noinline)) int handle(int n, const char *what)
{
	char *buf = malloc(64 + n);
	if (!buf)
		return -1;
	strcpy(buf, what);
	if (n % 2) {
		kept[n / 2] = buf; // leaked
		return -1;
	}
	buf = realloc(buf, 4096);
	free(buf);
	return n;
}

__attribute__((noinline)) int use(volatile int *p)
{
	return p[4];
}

int main(void)
{
	handle(0, "zero");
	handle(1, "one");
	handle(2, "two");
	handle(3, "three");
	int fd = open("/dev/null", O_WRONLY);
	write(fd, "hello", 5);
	close(fd);
	char b[8];
	fd = open("/dev/zero", O_RDONLY);
	pread(fd, b, sizeof(b), 16);
	int fd2 = dup(fd);
	close(fd2);
	close(fd);
	// Port 1 on loopback: refused.
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(1) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	connect(s, (struct sockaddr *)&a, sizeof(a));
	close(s);
	struct timespec ts = { 0, 5 * 1000 * 1000 };
	nanosleep(&ts, NULL);
	int *big = malloc(300000);
	free(big);
	return use(big);
}
