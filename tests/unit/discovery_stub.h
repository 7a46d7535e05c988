/* Discovery as the connection tracker sees it, for unit and fuzz tests that
 * run the protocol code without a real discovery. The including file defines
 * first the services it needs, indexed by id:
 *   static struct service *const stub_services[] = {NULL, &svc};
 */
#ifndef RASTRO_TEST_DISCOVERY_STUB_H
#define RASTRO_TEST_DISCOVERY_STUB_H

#include "discover/discover.h"

struct service *discovery__service(struct discovery *d, uint32_t id)
{
	(void)d;
	return id < sizeof(stub_services) / sizeof(stub_services[0]) ? stub_services[id] : NULL;
}

void service__ref(struct service *s)
{
	s->refs++;
}

void service__unref(struct service *s)
{
	if (s)
		s->refs--;
}

#endif
