/* trace_printer: one line per request on stdout, as text or JSON. */
#ifndef RASTRO_PRINTER_H
#define RASTRO_PRINTER_H

#include <stdio.h>

#include "config/config.h"
#include "request.h"

/* Writes r to out in the configured format; unix_offset_ns converts the
 * record's monotonic times to Unix time. */
void printer__print(FILE *out, const struct request *r, const struct rastro_config *cfg,
		    int64_t unix_offset_ns);

#endif
