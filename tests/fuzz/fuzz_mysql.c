/* libFuzzer target: the MySQL / MariaDB packet parsers, and the session fed
 * through the connection tracker as syscall events (see fuzz_db.h). The
 * first byte picks how the connection starts: a MariaDB greeting, a MySQL
 * greeting with CLIENT_DEPRECATE_EOF, a COM_QUERY (a connection older than
 * rastro), or nothing. */
#include "fuzz_db.h"
#include "protocols/mysql.h"

/* protocol 10, version, connection id, scramble, filler, capabilities
 * (PROTOCOL_41 | SECURE_CONNECTION | CONNECT_WITH_DB, high: PLUGIN_AUTH,
 * LENENC, DEPRECATE_EOF in the MySQL one), charset, status, ... */
static const char maria[] = "\x3a\0\0\0\x0a" "5.5.5-10.11.2-MariaDB\0"
			    "\x01\0\0\0" "abcdefgh\0" "\x08\x82" "\x2d" "\x02\0" "\x28\0"
			    "\x15" "\0\0\0\0\0\0\0\0\0\0" "ijklmnopqrst\0";
static const char mysql[] = "\x2b\0\0\0\x0a" "8.0.36\0"
			    "\x01\0\0\0" "abcdefgh\0" "\x08\x82" "\x2d" "\x02\0" "\x29\x01"
			    "\x15" "\0\0\0\0\0\0\0\0\0\0" "ijklmnopqrst\0";
static const char query[] = "\x09\0\0\0\x03SELECT 1";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rastro_config cfg = {.max_path_length = 64, .max_pending_requests = 8};
	const char *p = (const char *)data;
	struct mysql_greeting g;
	struct mysql_login l;
	struct mysql_error e;
	struct db_slice sql;
	uint64_t v;
	uint32_t id;
	uint16_t status, cols, params;
	mysql__lenenc(p, size, &v);
	mysql__parse_greeting(p, size, &g);
	mysql__parse_login(p, size, &l);
	mysql__parse_ok(p, size, &status);
	mysql__is_eof(p, size, &status);
	mysql__parse_err(p, size, &e);
	mysql__parse_prepare_ok(p, size, &id, &cols, &params);
	mysql__query_text(p, size, -1, &sql);
	mysql__query_text(p, size, 1, &sql);
	mysql__looks_like_greeting(p, size, size);
	mysql__looks_like_command(p, size, size);
	mysql__ends_with_terminator(p, size);
	if (!size)
		return 0;
	switch (data[0] & 3) {
	case 0:
		fuzz_drive(&cfg, data + 1, size - 1, maria, sizeof(maria) - 1, RASTRO_DIR_INGRESS,
			   RASTRO_ROLE_CLIENT);
		break;
	case 1:
		fuzz_drive(&cfg, data + 1, size - 1, mysql, sizeof(mysql) - 1, RASTRO_DIR_INGRESS,
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
