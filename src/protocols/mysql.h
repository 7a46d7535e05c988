/* MySQL / MariaDB client/server protocol (protocol 10, PROTOCOL_41): pure
 * functions over packet payloads, no I/O, no globals, no allocation. A
 * packet is a 3-byte little-endian payload length, a sequence id and the
 * payload; payloads may be cut short (a capture limit). */
#ifndef RASTRO_MYSQL_H
#define RASTRO_MYSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocols/db.h"

/* Capability flags */
#define MYSQL_CLIENT_CONNECT_WITH_DB 0x8u
#define MYSQL_CLIENT_PROTOCOL_41 0x200u
#define MYSQL_CLIENT_SSL 0x800u
#define MYSQL_CLIENT_SECURE_CONNECTION 0x8000u
#define MYSQL_CLIENT_PLUGIN_AUTH_LENENC 0x200000u
#define MYSQL_CLIENT_DEPRECATE_EOF 0x1000000u
#define MYSQL_CLIENT_OPTIONAL_RESULTSET_METADATA 0x2000000u
#define MYSQL_CLIENT_QUERY_ATTRIBUTES 0x8000000u

/* Server status flags */
#define MYSQL_SERVER_MORE_RESULTS 0x0008u
#define MYSQL_SERVER_CURSOR_EXISTS 0x0040u

/* Largest payload of one packet; a longer one continues in the next. */
#define MYSQL_MAX_PACKET 0xffffffu

enum mysql_command {
	MYSQL_COM_QUIT = 0x01,
	MYSQL_COM_INIT_DB = 0x02,
	MYSQL_COM_QUERY = 0x03,
	MYSQL_COM_FIELD_LIST = 0x04,
	MYSQL_COM_STATISTICS = 0x09,
	MYSQL_COM_PING = 0x0e,
	MYSQL_COM_CHANGE_USER = 0x11,
	MYSQL_COM_STMT_PREPARE = 0x16,
	MYSQL_COM_STMT_EXECUTE = 0x17,
	MYSQL_COM_STMT_SEND_LONG_DATA = 0x18,
	MYSQL_COM_STMT_CLOSE = 0x19,
	MYSQL_COM_STMT_RESET = 0x1a,
	MYSQL_COM_SET_OPTION = 0x1b,
	MYSQL_COM_STMT_FETCH = 0x1c,
	MYSQL_COM_RESET_CONNECTION = 0x1f,
	MYSQL_COM_STMT_BULK_EXECUTE = 0xfa, /* MariaDB */
};

/* Length-encoded integer: bytes used, or 0 when cut or invalid. */
size_t mysql__lenenc(const char *p, size_t len, uint64_t *v);

struct mysql_greeting {
	struct db_slice version;
	uint32_t caps;
	bool mariadb; /* the version string says MariaDB */
};
/* Initial handshake packet (protocol version 10), sent by the server. */
bool mysql__parse_greeting(const char *p, size_t len, struct mysql_greeting *out);

struct mysql_login {
	uint32_t caps;
	bool ssl_request; /* the client switches to TLS now */
	struct db_slice user, database;
};
/* HandshakeResponse41 (or SSLRequest), sent by the client. */
bool mysql__parse_login(const char *p, size_t len, struct mysql_login *out);

/* OK packet (header 0x00, or 0xFE ending a result set with DEPRECATE_EOF). */
bool mysql__parse_ok(const char *p, size_t len, uint16_t *status);
/* EOF packet: header 0xFE, payload of exactly 5 bytes. */
bool mysql__is_eof(const char *p, size_t len, uint16_t *status);
/* A packet that ends rows: 0xFE and shorter than a continued packet. */
static inline bool mysql__is_terminator(const char *p, size_t kept, uint32_t len)
{
	return kept && (uint8_t)p[0] == 0xfe && len < MYSQL_MAX_PACKET;
}

struct mysql_error {
	uint16_t code;
	char sqlstate[6]; /* "" when absent */
	struct db_slice message;
};
/* ERR packet (header 0xFF). */
bool mysql__parse_err(const char *p, size_t len, struct mysql_error *out);

/* COM_STMT_PREPARE_OK. */
bool mysql__parse_prepare_ok(const char *p, size_t len, uint32_t *stmt_id, uint16_t *columns,
			     uint16_t *params);

/* The SQL of a COM_QUERY payload (after the command byte), skipping query
 * attributes when the client sends them. attrs: -1 unknown, 0 no, 1 yes. */
bool mysql__query_text(const char *p, size_t len, int attrs, struct db_slice *sql);

/* Detection from a whole chunk: a server greeting (the first thing on a
 * connection), or one command packet a client sent (connections opened
 * before rastro). captured of total bytes were copied. */
bool mysql__looks_like_greeting(const char *buf, size_t captured, size_t total);
bool mysql__looks_like_command(const char *buf, size_t captured, size_t total);

/* Whether bytes end with the packet that ends a reply's last result set
 * (EOF, or OK with header 0xFE, without SERVER_MORE_RESULTS). */
bool mysql__ends_with_terminator(const char *buf, size_t len);

#endif
