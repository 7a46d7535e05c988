/* libFuzzer target: the PostgreSQL message parsers, and the PostgreSQL
 * session fed through the connection tracker as syscall events (see
 * fuzz_db.h). The first byte picks how the connection starts: a startup
 * message, an SSLRequest, a Query (a connection older than rastro), or
 * nothing. */
#include "fuzz_db.h"
#include "protocols/postgres.h"

static const char startup[] = "\0\0\0\x25\0\x03\0\0user\0app\0database\0shop\0\0";
static const char ssl[] = "\0\0\0\x08\x04\xd2\x16\x2f";
static const char query[] = "Q\0\0\0\x0dSELECT 1;\0";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rastro_config cfg = {.max_path_length = 64, .max_pending_requests = 8};
	const char *p = (const char *)data;
	struct db_slice a, b;
	struct pg_error e;
	char what;
	pg__untyped_kind(p, size, size);
	pg__looks_like_frontend(p, size, size);
	pg__looks_like_frontend(p, size, size + 7);
	pg__parse_query(p, size, &a);
	pg__parse_parse(p, size, &a, &b);
	pg__parse_bind(p, size, &a, &b);
	pg__parse_execute(p, size, &a);
	pg__parse_close(p, size, &what, &a);
	pg__parse_startup(p, size, &a, &b);
	pg__parse_error(p, size, &e);
	pg__ends_with_ready(p, size);
	if (!size)
		return 0;
	switch (data[0] & 3) {
	case 0:
		fuzz_drive(&cfg, data + 1, size - 1, startup, sizeof(startup) - 1,
			   RASTRO_DIR_EGRESS, RASTRO_ROLE_CLIENT);
		break;
	case 1:
		fuzz_drive(&cfg, data + 1, size - 1, ssl, sizeof(ssl) - 1, RASTRO_DIR_EGRESS,
			   RASTRO_ROLE_CLIENT);
		break;
	case 2:
		fuzz_drive(&cfg, data + 1, size - 1, query, sizeof(query) - 1, RASTRO_DIR_EGRESS,
			   RASTRO_ROLE_UNKNOWN);
		break;
	default:
		fuzz_drive(&cfg, data + 1, size - 1, NULL, 0, 0, RASTRO_ROLE_UNKNOWN);
		break;
	}
	return 0;
}
