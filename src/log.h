/* Leveled logging to stderr. The level is checked before the arguments are
 * evaluated, so debug logging costs one comparison when off. */
#ifndef RASTRO_LOG_H
#define RASTRO_LOG_H

#include <stdarg.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

extern enum log_level log__threshold;

void log__set_level(enum log_level level);
/* Parses DEBUG/INFO/WARN/ERROR (any case); returns -1 if unknown. */
int log__parse_level(const char *text);
const char *log__level_name(enum log_level level);
void log__write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log__vwrite(enum log_level level, const char *fmt, va_list ap);
/* Routes libbpf's own messages through this logger. */
void log__attach_libbpf(void);

#define log_at(lvl, ...)                                                                           \
	do {                                                                                       \
		if ((lvl) >= log__threshold)                                                       \
			log__write((lvl), __VA_ARGS__);                                            \
	} while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

/* Logs an error and returns -1: `return error("bad thing: %s", why);` */
int error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
