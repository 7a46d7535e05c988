/*
 * The https:// transport: libcurl's multi interface, loaded with dlopen the
 * first time an https endpoint is used. Linking libcurl would map it, OpenSSL
 * and a dozen other libraries into every rastro process (about 7 MB
 * resident) although most deployments export over plain HTTP to a local
 * collector.
 *
 * curl's sockets and timeouts go to the client (CURLMOPT_SOCKETFUNCTION and
 * TIMERFUNCTION), which puts them on the loop.
 */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "export/otlp_transport.h"
#include "version.h"

/* The libcurl functions rastro calls, resolved at run time. */
static struct {
	CURLcode (*global_init)(long flags);
	CURLM *(*multi_init)(void);
	CURLMcode (*multi_setopt)(CURLM *m, CURLMoption option, ...);
	CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev, int *running);
	CURLMsg *(*multi_info_read)(CURLM *m, int *left);
	CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
	CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
	CURLMcode (*multi_cleanup)(CURLM *m);
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *e, CURLoption option, ...);
	CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
	void (*easy_cleanup)(CURL *e);
	const char *(*easy_strerror)(CURLcode code);
	struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
	void (*slist_free_all)(struct curl_slist *l);
} cu;

static bool cu_loaded;
static char cu_error[512];

/* Loads libcurl once (it stays loaded). NULL, or why it cannot be used. */
static const char *load_curl(void)
{
	static const char *const names[] = {"libcurl.so.4", "libcurl-gnutls.so.4"};
	if (cu_loaded)
		return NULL;
	if (cu_error[0])
		return cu_error;
	void *h = NULL;
	for (size_t i = 0; !h && i < sizeof(names) / sizeof(names[0]); i++)
		h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(cu_error, sizeof(cu_error),
			 "https needs libcurl for TLS and it cannot be loaded (%s); install "
			 "libcurl4, or export over http:// (to a local collector, say)",
			 dlerror());
		return cu_error;
	}
	struct {
		void **fn;
		const char *name;
	} syms[] = {
		{(void **)&cu.global_init, "curl_global_init"},
		{(void **)&cu.multi_init, "curl_multi_init"},
		{(void **)&cu.multi_setopt, "curl_multi_setopt"},
		{(void **)&cu.multi_socket_action, "curl_multi_socket_action"},
		{(void **)&cu.multi_info_read, "curl_multi_info_read"},
		{(void **)&cu.multi_add_handle, "curl_multi_add_handle"},
		{(void **)&cu.multi_remove_handle, "curl_multi_remove_handle"},
		{(void **)&cu.multi_cleanup, "curl_multi_cleanup"},
		{(void **)&cu.easy_init, "curl_easy_init"},
		{(void **)&cu.easy_setopt, "curl_easy_setopt"},
		{(void **)&cu.easy_getinfo, "curl_easy_getinfo"},
		{(void **)&cu.easy_cleanup, "curl_easy_cleanup"},
		{(void **)&cu.easy_strerror, "curl_easy_strerror"},
		{(void **)&cu.slist_append, "curl_slist_append"},
		{(void **)&cu.slist_free_all, "curl_slist_free_all"},
	};
	for (size_t i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
		*syms[i].fn = dlsym(h, syms[i].name);
		if (!*syms[i].fn) {
			snprintf(cu_error, sizeof(cu_error),
				 "the libcurl found has no %s: too old for rastro's https export",
				 syms[i].name);
			return cu_error;
		}
	}
	if (cu.global_init(CURL_GLOBAL_DEFAULT)) {
		snprintf(cu_error, sizeof(cu_error), "libcurl failed to initialise (TLS library)");
		return cu_error;
	}
	cu_loaded = true;
	return NULL;
}

struct curl_t {
	struct otlp_client *c;
	CURLM *multi;
	CURL *easy;
	struct curl_slist *headers;
	bool in_flight;
	char errbuf[CURL_ERROR_SIZE];
};

static enum otlp_err err_of(CURLcode res)
{
	switch (res) {
	case CURLE_OK:
		return OTLP_ERR_NONE;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_NOT_BUILT_IN:
		return OTLP_ERR_URL;
	case CURLE_OUT_OF_MEMORY:
		return OTLP_ERR_NOMEM;
	case CURLE_COULDNT_RESOLVE_HOST:
		return OTLP_ERR_RESOLVE;
	case CURLE_COULDNT_CONNECT:
		return OTLP_ERR_CONNECT;
	case CURLE_OPERATION_TIMEDOUT:
		return OTLP_ERR_TIMEOUT;
	case CURLE_SEND_ERROR:
		return OTLP_ERR_SEND;
	case CURLE_WEIRD_SERVER_REPLY:
		return OTLP_ERR_RESPONSE;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
		return OTLP_ERR_TLS;
	default:
		return OTLP_ERR_RECV;
	}
}

static void check_done(struct curl_t *t)
{
	CURLMsg *msg;
	int left;
	while ((msg = cu.multi_info_read(t->multi, &left))) {
		if (msg->msg != CURLMSG_DONE || msg->easy_handle != t->easy)
			continue;
		CURLcode res = msg->data.result;
		long status = 0;
		cu.easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
		cu.multi_remove_handle(t->multi, t->easy);
		t->in_flight = false;
		otlp_client__finished(t->c, err_of(res), res == CURLE_OK ? status : 0,
				      t->errbuf[0] ? t->errbuf : cu.easy_strerror(res));
	}
}

static void curl_io(void *tp, int fd, uint32_t events)
{
	struct curl_t *t = tp;
	int mask = 0, running;
	if (events & EPOLLIN)
		mask |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		mask |= CURL_CSELECT_OUT;
	if (events & (EPOLLERR | EPOLLHUP))
		mask |= CURL_CSELECT_ERR;
	cu.multi_socket_action(t->multi, fd, mask, &running);
	check_done(t);
}

static void curl_timeout(void *tp)
{
	struct curl_t *t = tp;
	int running;
	cu.multi_socket_action(t->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(t);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct curl_t *t = userp;
	uint32_t ev = 0;
	if (what != CURL_POLL_REMOVE)
		ev = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	return otlp_client__watch(t->c, fd, ev);
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct curl_t *t = userp;
	return otlp_client__set_timer(t->c, timeout_ms);
}

static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
	struct curl_t *t = userp;
	otlp_client__body(t->c, data, size * n);
	return size * n;
}

static size_t on_header(char *data, size_t size, size_t n, void *userp)
{
	struct curl_t *t = userp;
	otlp_client__header(t->c, data, size * n);
	return size * n;
}

static struct curl_slist *build_headers(const struct otlp_signal *cfg)
{
	struct curl_slist *h = NULL, *n;
	char line[1024];
	h = cu.slist_append(h, "Content-Type: application/x-protobuf");
	/* curl sends "Expect: 100-continue" for big bodies and then waits up to
	 * a second for the answer: pointless against OTLP receivers. */
	if (h && (n = cu.slist_append(h, "Expect:")))
		h = n;
	if (h && cfg->gzip && (n = cu.slist_append(h, "Content-Encoding: gzip")))
		h = n;
	for (int i = 0; h && i < cfg->headers.count; i++) {
		const char *k = cfg->headers.key[i], *v = cfg->headers.value[i];
		if (!otlp_header_ok(k, v))
			continue;
		snprintf(line, sizeof(line), "%s: %s", k, v);
		if ((n = cu.slist_append(h, line)))
			h = n;
	}
	return h;
}

static void curl_close(void *tp)
{
	struct curl_t *t = tp;
	if (t->easy)
		cu.easy_cleanup(t->easy);
	if (t->multi)
		cu.multi_cleanup(t->multi); /* closes the cached connection: REMOVE callbacks */
	if (t->headers)
		cu.slist_free_all(t->headers);
	otlp_client__set_timer(t->c, -1);
	free(t);
}

static void *curl_open(struct otlp_client *c, const struct otlp_signal *cfg, const char **why)
{
	if ((*why = load_curl()))
		return NULL;
	*why = "out of memory";
	struct curl_t *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->c = c;
	t->multi = cu.multi_init();
	t->easy = cu.easy_init();
	t->headers = build_headers(cfg);
	if (!t->multi || !t->easy || !t->headers) {
		curl_close(t);
		return NULL;
	}
	cu.multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	cu.multi_setopt(t->multi, CURLMOPT_SOCKETDATA, t);
	cu.multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	cu.multi_setopt(t->multi, CURLMOPT_TIMERDATA, t);

	CURL *e = t->easy;
	cu.easy_setopt(e, CURLOPT_URL, cfg->endpoint);
	cu.easy_setopt(e, CURLOPT_POST, 1L);
	cu.easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	cu.easy_setopt(e, CURLOPT_USERAGENT, "rastro/" RASTRO_VERSION);
	cu.easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_ms);
	cu.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	cu.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	cu.easy_setopt(e, CURLOPT_WRITEDATA, t);
	cu.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	cu.easy_setopt(e, CURLOPT_HEADERDATA, t);
	cu.easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	cu.easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	return t;
}

static bool curl_start(void *tp, const uint8_t *body, size_t len)
{
	struct curl_t *t = tp;
	t->errbuf[0] = '\0';
	cu.easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	cu.easy_setopt(t->easy, CURLOPT_POSTFIELDS, (void *)body);
	if (cu.multi_add_handle(t->multi, t->easy) != CURLM_OK)
		return false;
	t->in_flight = true;
	return true;
}

static void curl_abort(void *tp)
{
	struct curl_t *t = tp;
	if (t->in_flight)
		cu.multi_remove_handle(t->multi, t->easy);
	t->in_flight = false;
}

const struct otlp_transport otlp_curl_transport = {
	.name = "libcurl",
	.open = curl_open,
	.start = curl_start,
	.io = curl_io,
	.timeout = curl_timeout,
	.abort = curl_abort,
	.close = curl_close,
};
