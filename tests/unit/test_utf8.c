/* UTF-8 validation and the sanitising copy into request records. */
#include <string.h>

#include "check.h"
#include "common/utf8.h"
#include "request.h"

int main(void)
{
	CHECK_INT(utf8__char_len("a", 1), 1);
	CHECK_INT(utf8__char_len("\xC3\xA9", 2), 2);         /* é */
	CHECK_INT(utf8__char_len("\xE2\x82\xAC", 3), 3);     /* € */
	CHECK_INT(utf8__char_len("\xF0\x9F\x98\x80", 4), 4); /* 😀 */
	CHECK_INT(utf8__char_len("\xC3", 1), 0);             /* cut */
	CHECK_INT(utf8__char_len("\xC0\xAF", 2), 0);         /* overlong '/' */
	CHECK_INT(utf8__char_len("\xE0\x80\xAF", 3), 0);     /* overlong */
	CHECK_INT(utf8__char_len("\xED\xA0\x80", 3), 0);     /* surrogate */
	CHECK_INT(utf8__char_len("\xF4\x90\x80\x80", 4), 0); /* > U+10FFFF */
	CHECK_INT(utf8__char_len("\xFF", 1), 0);
	CHECK_INT(utf8__char_len("\x80", 1), 0);

	char out[64];
	size_t n = utf8__sanitize("a\xFF" "b\xC3\xA9", 5, out, sizeof(out));
	CHECK_MEM(out, n, "a\xEF\xBF\xBD" "b\xC3\xA9");
	/* never a partial character at the end */
	n = utf8__sanitize("ab\xE2\x82\xAC", 5, out, 4);
	CHECK_MEM(out, n, "ab");

	static struct request r;
	request__init(&r, REQ_HTTP_SERVER);
	struct rstr p = request__store(&r, "/caf\xE9/\xC3\xA9", 8);
	CHECK_STR(request__str(&r, p), "/caf\xEF\xBF\xBD/\xC3\xA9");
	struct rstr q = request__store(&r, "plain", 5);
	CHECK_STR(request__str(&r, q), "plain");
	/* a full arena truncates at a character boundary */
	char big[REQUEST_ARENA];
	memset(big, 'x', sizeof(big));
	struct rstr b = request__store(&r, big, sizeof(big));
	CHECK(b.len > 0 && b.len < REQUEST_ARENA);
	CHECK_INT(strlen(request__str(&r, b)), b.len);
	return check_done("test_utf8");
}
