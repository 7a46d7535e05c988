/* The Prometheus endpoint's HTTP server with a test handler, under ASan:
 * what the end-to-end tests cannot reach cheaply (a short idle timeout, a
 * body that fails half way, release of every body whatever happens to its
 * connection). The server runs on the main thread's loop, the client in a
 * second thread with blocking sockets. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "check.h"
#include "common/loop.h"
#include "export/http_server.h"

#define IDLE_MS 300
#define PIECE 10000
#define PIECES 50 /* 500 kB: more than the socket buffers hold */

static int started, released, pieces_made; /* bodies, set on the loop's thread */
static int client_done;
static uint16_t port;

struct body {
	int left;
	bool fail; /* /fail: the body breaks after two pieces */
	char piece[PIECE];
};

static int body_next(void *ctx, const char **data, size_t *len)
{
	struct body *b = ctx;
	if (b->fail && b->left == PIECES - 2)
		return -1;
	__atomic_add_fetch(&pieces_made, 1, __ATOMIC_SEQ_CST);
	*data = b->piece;
	*len = b->left-- > 0 ? PIECE : 0;
	return 0;
}

static void body_release(void *ctx)
{
	free(ctx);
	__atomic_add_fetch(&released, 1, __ATOMIC_SEQ_CST);
}

static void handler(void *ctx, const struct http_request *req, struct http_response *resp)
{
	(void)ctx;
	bool fail = req->path_len == 5 && !memcmp(req->path, "/fail", 5);
	bool endless = req->path_len == 8 && !memcmp(req->path, "/endless", 8);
	if (!fail && !endless && !(req->path_len == 7 && !memcmp(req->path, "/stream", 7))) {
		*resp = (struct http_response){
		    .status = 404, .content_type = "text/plain", .body = "no\n", .body_len = 3};
		return;
	}
	struct body *b = malloc(sizeof(*b));
	b->left = endless ? 1 << 30 : PIECES; /* more than any socket buffer */
	b->fail = fail;
	memset(b->piece, 'x', sizeof(b->piece));
	b->piece[PIECE - 1] = '\n';
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	*resp = (struct http_response){
	    .status = 200, .content_type = "text/plain", .stream = {body_next, body_release, b}};
}

/* ---- the client side */

static int load(int *v)
{
	return __atomic_load_n(v, __ATOMIC_SEQ_CST);
}

static int client(int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		perror("connect");
	return fd;
}

static void put(int fd, const char *s)
{
	CHECK_INT(send(fd, s, strlen(s), MSG_NOSIGNAL), strlen(s));
}

/* Reads until EOF (or reset); returns the byte count, -1 on a timeout. */
static long read_to_eof(int fd)
{
	static char buf[65536];
	long total = 0;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n > 0) {
			total += n;
			continue;
		}
		if (n == 0 || errno == ECONNRESET)
			return total;
		return -1;
	}
}

static uint64_t ms_since(uint64_t start_ns)
{
	return (loop__now_ns() - start_ns) / 1000000;
}

static void wait_released(int want)
{
	for (int i = 0; i < 500 && load(&released) < want; i++)
		usleep(10000);
	CHECK_INT(load(&released), want);
}

static void *client_main(void *arg)
{
	(void)arg;
	/* a client that sends nothing is closed after the idle timeout */
	uint64_t t0 = loop__now_ns();
	int fd = client(0);
	CHECK_INT(read_to_eof(fd), 0);
	uint64_t ms = ms_since(t0);
	CHECK(ms >= IDLE_MS - 50 && ms < IDLE_MS + 1000);
	close(fd);

	/* so does one that stops half way through its head */
	t0 = loop__now_ns();
	fd = client(0);
	put(fd, "GET /stream HTTP/1.1\r\nHo");
	CHECK_INT(read_to_eof(fd), 0);
	CHECK(ms_since(t0) >= IDLE_MS - 50);
	close(fd);
	CHECK_INT(load(&started), 0);

	/* a whole body over HTTP/1.0: every piece, then the close */
	fd = client(0);
	put(fd, "GET /stream HTTP/1.0\r\n\r\n");
	long n = read_to_eof(fd);
	CHECK(n > (long)PIECES * PIECE && n < (long)PIECES * PIECE + 300);
	close(fd);
	wait_released(1);

	/* a client that leaves after a little of the body: released */
	fd = client(4096);
	put(fd, "GET /endless HTTP/1.1\r\n\r\n");
	char buf[1000];
	CHECK_INT(recv(fd, buf, sizeof(buf), MSG_WAITALL), sizeof(buf));
	close(fd);
	wait_released(2);

	/* a body that fails: the connection is cut before the terminator */
	fd = client(0);
	put(fd, "GET /fail HTTP/1.1\r\n\r\n");
	n = read_to_eof(fd);
	CHECK(n > 2 * PIECE && n < 3 * PIECE);
	close(fd);
	wait_released(3);

	/* HEAD: the body is released without a piece made */
	int before = load(&pieces_made);
	fd = client(0);
	put(fd, "HEAD /stream HTTP/1.1\r\nConnection: close\r\n\r\n");
	n = read_to_eof(fd);
	CHECK(n > 0 && n < 300);
	close(fd);
	wait_released(4);
	CHECK_INT(load(&pieces_made), before);

	/* the third connection is over the limit (2): closed at once */
	usleep(100000); /* the server has seen the earlier ones close */
	int a = client(0), b = client(0), c = client(0);
	CHECK_INT(read_to_eof(c), 0);
	put(a, "GET /x HTTP/1.1\r\n\r\n");
	CHECK_INT(recv(a, buf, 5, MSG_WAITALL), 5);
	CHECK(!memcmp(buf, "HTTP/", 5));
	close(a);
	close(b);
	close(c);

	/* left mid-body: released by http_server__stop */
	fd = client(4096);
	put(fd, "GET /endless HTTP/1.1\r\n\r\n");
	CHECK_INT(recv(fd, buf, sizeof(buf), MSG_WAITALL), sizeof(buf));
	__atomic_store_n(&client_done, 1, __ATOMIC_SEQ_CST);
	usleep(200000);
	close(fd);
	return NULL;
}

/* ---- the server side */

static struct loop *loop;

static void poll_done(void *ctx)
{
	(void)ctx;
	if (load(&client_done))
		loop__stop(loop);
	else
		loop__after(loop, 10, poll_done, NULL);
}

int main(void)
{
	loop = loop__new();
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 16) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len)) {
		perror("listen");
		return 1;
	}
	port = ntohs(sa.sin_port);
	struct http_server_opts opts = {
	    .max_conns = 2, .idle_timeout_ms = IDLE_MS, .log_name = "test"};
	struct http_server *s = http_server__start(loop, lfd, &opts, handler, NULL);
	CHECK(s != NULL);
	pthread_t th;
	pthread_create(&th, NULL, client_main, NULL);
	loop__after(loop, 10, poll_done, NULL);
	loop__run(loop);
	CHECK_INT(load(&started), 5);
	CHECK_INT(load(&released), 4);
	http_server__stop(s);
	CHECK_INT(load(&released), 5);
	pthread_join(th, NULL);
	loop__free(loop);
	return check_done("test_http_server");
}
