#include "app.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/loop.h"
#include "log.h"

/* ---- traces stage */

static uint64_t rng_state;

static uint64_t next_random(void)
{
	/* xorshift64*: ids only need to be unique and unpredictable enough. */
	uint64_t x = rng_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

void app__trace(struct app *app, struct request *r)
{
	(void)app;
	uint64_t a = next_random(), b = next_random(), c = next_random();
	memcpy(r->trace_id, &a, 8);
	memcpy(r->trace_id + 8, &b, 8);
	memcpy(r->span_id, &c, 8);
	r->sampled = true;
}

/* ---- routes stage */

bool app__route(struct app *app, struct request *r)
{
	(void)app;
	(void)r;
	return true;
}

/* ---- metrics stage */

void app__measure(struct app *app, struct request *r)
{
	(void)app;
	(void)r;
}

/* ---- lifecycle */

int app__start_stages(struct app *app)
{
	rng_state = loop__now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
	(void)app;
	return 0;
}

void app__stop_stages(struct app *app)
{
	(void)app;
}
