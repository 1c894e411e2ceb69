/*
 * netio.c — a file written and read back, a loopback TCP exchange and a
 * contended mutex: the io, net and lock families.
 *
 *   io:   open(/tmp/tm-tui-netio-PID.txt) write 13 B, fsync,
 *         dup2 to fd 100, write 1 B there, close both,
 *         open, pread 13 B at offset 0, close, unlink
 *   net:  listen on 127.0.0.1 (any port), connect, accept,
 *         send "ping" (4 B), recv 4 B, send "pong", recv, close both;
 *         a UDP datagram "dgram" (5 B) by sendmsg, received by recvmsg
 *   lock: a second thread holds a mutex for 50 ms while main waits on it
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int held;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void *holder(void *arg)
{
	struct timespec t = { 0, 50 * 1000000L };

	(void)arg;
	pthread_mutex_lock(&lock);
	held = 1;
	nanosleep(&t, NULL);
	pthread_mutex_unlock(&lock);
	return NULL;
}

static void file_io(void)
{
	char path[64], buf[32];
	int fd;

	snprintf(path, sizeof(path), "/tmp/tm-tui-netio-%d.txt", (int)getpid());
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		die("open");
	if (write(fd, "hello, file!\n", 13) != 13)
		die("write");
	fsync(fd);
	if (dup2(fd, 100) != 100 || write(100, "!", 1) != 1)
		die("dup2");
	close(100);
	close(fd);
	fd = open(path, O_RDONLY);
	if (fd < 0 || pread(fd, buf, sizeof(buf), 0) != 14)
		die("pread");
	close(fd);
	unlink(path);
}

static void loopback(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	char buf[8];
	int srv, cli, conn;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	srv = socket(AF_INET, SOCK_STREAM, 0);
	if (srv < 0 || bind(srv, (struct sockaddr *)&a, sizeof(a)) || listen(srv, 1) ||
	    getsockname(srv, (struct sockaddr *)&a, &len))
		die("listen");
	cli = socket(AF_INET, SOCK_STREAM, 0);
	if (cli < 0 || connect(cli, (struct sockaddr *)&a, sizeof(a)))
		die("connect");
	len = sizeof(a);
	conn = accept(srv, (struct sockaddr *)&a, &len);
	if (conn < 0)
		die("accept");
	if (send(cli, "ping", 4, 0) != 4 || recv(conn, buf, sizeof(buf), 0) != 4)
		die("ping");
	if (send(conn, "pong", 4, 0) != 4 || recv(cli, buf, sizeof(buf), 0) != 4)
		die("pong");
	close(conn);
	close(cli);
	close(srv);
}

static void datagram(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET }, from;
	socklen_t len = sizeof(a);
	char buf[8];
	struct iovec out = { "dgram", 5 }, in = { buf, sizeof(buf) };
	struct msghdr m = { .msg_name = &a, .msg_namelen = sizeof(a), .msg_iov = &out,
			    .msg_iovlen = 1 };
	int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (rx < 0 || tx < 0 || bind(rx, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(rx, (struct sockaddr *)&a, &len))
		die("udp");
	if (sendmsg(tx, &m, 0) != 5)
		die("sendmsg");
	m = (struct msghdr){ .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &in,
			     .msg_iovlen = 1 };
	if (recvmsg(rx, &m, 0) != 5)
		die("recvmsg");
	close(rx);
	close(tx);
}

int main(void)
{
	struct timespec t = { 0, 1000000L };
	pthread_t th;

	file_io();
	loopback();
	datagram();
	if (pthread_create(&th, NULL, holder, NULL))
		die("pthread_create");
	while (!held)
		nanosleep(&t, NULL);
	pthread_mutex_lock(&lock); /* waits ~50 ms in futex */
	pthread_mutex_unlock(&lock);
	pthread_join(th, NULL);
	printf("netio: done\n");
	return 0;
}
