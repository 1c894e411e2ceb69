/* Double-free demo: release_session() frees a session's name twice; glibc
 * notices ("free(): double free detected in tcache 2") and aborts.
 * Usage: double_free [delay_ms] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct session {
	char *name;
	int refs;
};

static struct session *open_session(const char *who)
{
	struct session *s = malloc(sizeof(*s));
	s->name = strdup(who);
	s->refs = 1;
	return s;
}

static void release_session(struct session *s)
{
	free(s->name);
	if (--s->refs <= 0)
		free(s->name); /* bug: should free s */
}

int main(int argc, char **argv)
{
	int delay_ms = argc > 1 ? atoi(argv[1]) : 0;

	if (delay_ms)
		usleep(delay_ms * 1000);
	struct session *s = open_session("alice");
	release_session(s);
	puts("unreachable");
	return 0;
}
