#include "common/utf8.h"

#include <string.h>

size_t utf8__char_len(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	if (!n)
		return 0;
	unsigned char c = s[0];
	if (c < 0x80)
		return 1;
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0; /* overlong */
		else if (c == 0xED)
			hi = 0x9F; /* surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90; /* overlong */
		else if (c == 0xF4)
			hi = 0x8F; /* beyond U+10FFFF */
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

size_t utf8__sanitize(const char *s, size_t len, char *out, size_t cap)
{
	size_t o = 0, i = 0;
	while (i < len) {
		size_t n = utf8__char_len(s + i, len - i);
		const char *src = s + i;
		size_t take = n;
		if (!n) {
			src = "\xEF\xBF\xBD"; /* U+FFFD REPLACEMENT CHARACTER */
			take = 3;
			n = 1;
		}
		if (o + take > cap)
			break;
		memcpy(out + o, src, take);
		o += take;
		i += n;
	}
	return o;
}
