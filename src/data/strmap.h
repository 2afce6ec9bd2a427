/* A hash map from byte strings to int64 values, keys copied into one pool
 * (NUL-terminated there), open addressing. Private to src/data: the tokenizer's
 * vocabulary and cache (bpe.c) and the trainer's word and token tables
 * (bpe_train.c). */
#ifndef TTT_DATA_STRMAP_H
#define TTT_DATA_STRMAP_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/engine_private.h"

static inline uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

/* Byte string -> int64, keys copied into a pool. */
typedef struct {
    uint64_t hash;
    size_t off;
    uint32_t len;
    int64_t val;
} sm_entry;

typedef struct {
    uint32_t *slot; /* entry index + 1; 0 = empty */
    size_t mask;
    sm_entry *e;
    size_t n, ecap;
    char *pool;
    size_t pool_n, pool_cap;
} strmap;

static inline void sm_free(strmap *m) {
    free(m->slot);
    free(m->e);
    free(m->pool);
    memset(m, 0, sizeof *m);
}

static inline void sm_clear(strmap *m) {
    if (m->slot) memset(m->slot, 0, (m->mask + 1) * sizeof *m->slot);
    m->n = 0;
    m->pool_n = 0;
}

static inline const char *sm_key(const strmap *m, size_t idx) { return m->pool + m->e[idx].off; }

/* Index of the entry with this key, or -1. */
static inline int64_t sm_find(const strmap *m, const void *k, size_t len, uint64_t h) {
    if (!m->slot) return -1;
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        uint32_t s = m->slot[i];
        if (!s) return -1;
        const sm_entry *e = &m->e[s - 1];
        if (e->hash == h && e->len == len && !memcmp(m->pool + e->off, k, len)) return (int64_t)(s - 1);
    }
}

static inline int sm_rehash(strmap *m, size_t cap) {
    uint32_t *slot = calloc(cap, sizeof *slot);
    if (!slot) return TTT_ERR;
    free(m->slot);
    m->slot = slot;
    m->mask = cap - 1;
    for (size_t j = 0; j < m->n; j++) {
        size_t i = m->e[j].hash & m->mask;
        while (slot[i]) i = (i + 1) & m->mask;
        slot[i] = (uint32_t)(j + 1);
    }
    return TTT_OK;
}

/* Adds a key known to be absent; returns its entry index or -1 (no memory). */
static inline int64_t sm_add(strmap *m, const void *k, size_t len, uint64_t h, int64_t val) {
    if (m->n >= UINT32_MAX - 1 || len > UINT32_MAX) return -1;
    if (!m->slot || (m->n + 1) * 4 > (m->mask + 1) * 3) {
        size_t cap = m->slot ? (m->mask + 1) * 2 : 1024;
        if (sm_rehash(m, cap)) return -1;
    }
    if (ttt__grow((void **)&m->e, &m->ecap, m->n + 1, sizeof *m->e)) return -1;
    uintptr_t kp = (uintptr_t)k, pp = (uintptr_t)m->pool;
    size_t inside = m->pool && kp >= pp && kp < pp + m->pool_cap ? kp - pp + 1 : 0; /* key inside the pool */
    if (ttt__grow((void **)&m->pool, &m->pool_cap, m->pool_n + len + 1, 1)) return -1;
    if (inside) k = m->pool + inside - 1;
    memcpy(m->pool + m->pool_n, k, len);
    m->pool[m->pool_n + len] = 0;
    m->e[m->n] = (sm_entry){h, m->pool_n, (uint32_t)len, val};
    m->pool_n += len + 1;
    size_t i = h & m->mask;
    while (m->slot[i]) i = (i + 1) & m->mask;
    m->slot[i] = (uint32_t)(m->n + 1);
    return (int64_t)m->n++;
}

/* Index of KEY, added with value 0 when absent; -1 when out of memory. */
static inline int64_t sm_intern(strmap *m, const void *k, size_t len) {
    uint64_t h = hash_bytes(k, len);
    int64_t e = sm_find(m, k, len, h);
    return e >= 0 ? e : sm_add(m, k, len, h, 0);
}

#endif
