#include "common/u64map.h"

#include <stdlib.h>

void u64map__init(struct u64map *m)
{
	m->keys = NULL;
	m->values = NULL;
	m->capacity = 0;
	m->count = 0;
}

void u64map__free(struct u64map *m)
{
	free(m->keys);
	free(m->values);
	u64map__init(m);
}

void *u64map__get(const struct u64map *m, uint64_t key)
{
	if (!m->capacity)
		return NULL;
	uint32_t mask = m->capacity - 1;
	for (uint32_t i = (uint32_t)u64map__hash(key) & mask;; i = (i + 1) & mask) {
		if (m->keys[i] == key)
			return m->values[i];
		if (!m->keys[i])
			return NULL;
	}
}

static int grow(struct u64map *m)
{
	uint32_t cap = m->capacity ? m->capacity * 2 : 64;
	uint64_t *keys = calloc(cap, sizeof(*keys));
	void **values = calloc(cap, sizeof(*values));
	if (!keys || !values) {
		free(keys);
		free(values);
		return -1;
	}
	for (uint32_t j = 0; j < m->capacity; j++) {
		if (!m->keys[j])
			continue;
		uint32_t i = (uint32_t)u64map__hash(m->keys[j]) & (cap - 1);
		while (keys[i])
			i = (i + 1) & (cap - 1);
		keys[i] = m->keys[j];
		values[i] = m->values[j];
	}
	free(m->keys);
	free(m->values);
	m->keys = keys;
	m->values = values;
	m->capacity = cap;
	return 0;
}

int u64map__put(struct u64map *m, uint64_t key, void *value)
{
	if ((m->count + 1) * 4 > m->capacity * 3 && grow(m))
		return -1;
	uint32_t mask = m->capacity - 1;
	uint32_t i = (uint32_t)u64map__hash(key) & mask;
	while (m->keys[i] && m->keys[i] != key)
		i = (i + 1) & mask;
	if (!m->keys[i]) {
		m->keys[i] = key;
		m->count++;
	}
	m->values[i] = value;
	return 0;
}

void *u64map__remove(struct u64map *m, uint64_t key)
{
	if (!m->capacity)
		return NULL;
	uint32_t mask = m->capacity - 1;
	uint32_t i = (uint32_t)u64map__hash(key) & mask;
	while (m->keys[i] != key) {
		if (!m->keys[i])
			return NULL;
		i = (i + 1) & mask;
	}
	void *value = m->values[i];
	m->count--;
	/* Backward shift: move later entries of the probe run into the hole. */
	for (uint32_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
		uint32_t home = (uint32_t)u64map__hash(m->keys[j]) & mask;
		/* Entry j may fill hole i if its home is not in (i, j]. */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->keys[i] = m->keys[j];
			m->values[i] = m->values[j];
			i = j;
		}
	}
	m->keys[i] = 0;
	m->values[i] = NULL;
	return value;
}
