/* Minimal unit-test assertions: a failed check prints where and why, and the
 * test binary exits non-zero at the end. Built with ASan + UBSan. */
#ifndef RASTRO_CHECK_H
#define RASTRO_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		check_count++;                                                                     \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
			check_failures++;                                                          \
		}                                                                                  \
	} while (0)

#define CHECK_INT(got, want)                                                                       \
	do {                                                                                       \
		long long g_ = (long long)(got), w_ = (long long)(want);                           \
		check_count++;                                                                     \
		if (g_ != w_) {                                                                    \
			fprintf(stderr, "%s:%d: %s == %lld, want %lld\n", __FILE__, __LINE__, #got, g_, \
				w_);                                                               \
			check_failures++;                                                          \
		}                                                                                  \
	} while (0)

#define CHECK_STR(got, want)                                                                       \
	do {                                                                                       \
		const char *g_ = (got), *w_ = (want);                                              \
		check_count++;                                                                     \
		if (!g_ || strcmp(g_, w_)) {                                                       \
			fprintf(stderr, "%s:%d: %s == \"%s\", want \"%s\"\n", __FILE__, __LINE__, #got, \
				g_ ? g_ : "(null)", w_);                                           \
			check_failures++;                                                          \
		}                                                                                  \
	} while (0)

#define CHECK_MEM(ptr, len, want)                                                                  \
	do {                                                                                       \
		const char *w_ = (want);                                                           \
		size_t l_ = (len);                                                                 \
		check_count++;                                                                     \
		if (l_ != strlen(w_) || memcmp((ptr), w_, l_)) {                                   \
			fprintf(stderr, "%s:%d: %s == \"%.*s\", want \"%s\"\n", __FILE__, __LINE__, \
				#ptr, (int)l_, (const char *)(ptr), w_);                           \
			check_failures++;                                                          \
		}                                                                                  \
	} while (0)

static inline int check_done(const char *name)
{
	if (check_failures) {
		fprintf(stderr, "%s: %d of %d checks failed\n", name, check_failures, check_count);
		return 1;
	}
	printf("%s: %d checks passed\n", name, check_count);
	return 0;
}

#endif
