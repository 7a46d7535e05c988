#include "log.h"

#include <bpf/libbpf.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

enum log_level log__threshold = LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

void log__set_level(enum log_level level)
{
	log__threshold = level;
}

int log__parse_level(const char *text)
{
	for (int i = LOG_DEBUG; i <= LOG_ERROR; i++)
		if (!strcasecmp(text, level_names[i]))
			return i;
	if (!strcasecmp(text, "WARNING"))
		return LOG_WARN;
	return -1;
}

const char *log__level_name(enum log_level level)
{
	return level_names[level];
}

void log__vwrite(enum log_level level, const char *fmt, va_list ap)
{
	char stamp[32];
	struct timespec now;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf per line so concurrent writers do not interleave. */
	char line[2048];
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n > 0 && (size_t)n < sizeof(line) && line[n - 1] == '\n')
		line[n - 1] = '\0';
	fprintf(stderr, "%s.%03ldZ %-5s rastro: %s\n", stamp, now.tv_nsec / 1000000,
		level_names[level], line);
}

void log__write(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log__vwrite(level, fmt, ap);
	va_end(ap);
}

int error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (LOG_ERROR >= log__threshold)
		log__vwrite(LOG_ERROR, fmt, ap);
	va_end(ap);
	return -1;
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* libbpf's messages (verifier logs, feature probing) are debugging aids:
	 * rastro reports every failure itself in one line. */
	(void)level;
	if (LOG_DEBUG < log__threshold)
		return 0;
	char buf[1024];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	log__write(LOG_DEBUG, "%s", buf); /* libbpf prefixes its own lines */
	return 0;
}

void log__attach_libbpf(void)
{
	libbpf_set_print(libbpf_print);
}
