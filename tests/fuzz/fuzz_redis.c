/* libFuzzer target: the RESP reader (fed in pieces, with skips), and the
 * Redis session fed through the connection tracker as syscall events (see
 * fuzz_db.h). The first byte picks whether a command starts the connection. */
#include "fuzz_db.h"
#include "protocols/redis.h"

static const char ping[] = "*1\r\n$4\r\nPING\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rastro_config cfg = {.max_path_length = 64, .max_pending_requests = 8};
	if (!size)
		return 0;
	/* the reader alone: pieces of (data[0] % 13) + 1 bytes, every third skipped */
	struct redis_reader r;
	redis__reader_init(&r);
	size_t step = (size_t)(data[0] % 13) + 1, i = 1;
	for (int n = 0; i < size; n++) {
		size_t len = size - i < step ? size - i : step;
		bool done;
		if (n % 3 == 2) {
			if (!redis__skip(&r, len, &done))
				redis__reader_init(&r);
			i += len;
			continue;
		}
		int64_t used = redis__feed(&r, (const char *)data + i, len, &done);
		if (used < 0) {
			redis__reader_init(&r);
			used = 1;
		}
		i += (size_t)used ? (size_t)used : len;
	}
	redis__looks_like_command((const char *)data, size, size);
	if (data[0] & 0x80)
		fuzz_drive(&cfg, data + 1, size - 1, ping, sizeof(ping) - 1, RASTRO_DIR_EGRESS,
			   RASTRO_ROLE_CLIENT);
	else
		fuzz_drive(&cfg, data + 1, size - 1, NULL, 0, 0, RASTRO_ROLE_UNKNOWN);
	return 0;
}
