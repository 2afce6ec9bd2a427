/* Token shards: the documented file format of include/ttt/shards.h and
 * docs/shards.md. The reader maps the file and checks every size against the
 * file length before it touches the mapping. The writer keeps the document
 * table and the tokens in memory (2 or 4 bytes a token, 8 a document: 100M
 * GPT-2 tokens take 200 MB) because the table precedes the tokens in the file;
 * it creates PATH.tmp at open, so an unwritable destination fails before the
 * tokenizing, and writes and renames it at close. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/engine_private.h"
#include "ttt/fileio.h"
#include "ttt/shards.h"

enum { HEADER_BYTES = 64, VERSION = 1 };
static const char MAGIC[8] = {'T', 'T', 'T', 'S', 'H', 'A', 'R', 'D'};
/* Anything larger is refused, so offsets and sizes stay far from overflow. */
static const uint64_t MAX_TOKENS = (uint64_t)1 << 40, MAX_VOCAB = (uint64_t)1 << 31;

struct ttt_shard {
    char *path;
    const unsigned char *map;
    size_t map_len;
    uint32_t width;
    uint64_t vocab, n_tokens, n_docs, hash;
    const unsigned char *starts; /* (n_docs + 1) little-endian u64 */
    const unsigned char *tokens;
};

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint32_t get_u32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* FNV-1a (ttt__fnv1a): a cheap check that the table and tokens are what was written. */
#define fnv1a ttt__fnv1a
static const uint64_t FNV_SEED = TTT_FNV_SEED;

static uint32_t token_at(const ttt_shard *s, uint64_t i) {
    const unsigned char *p = s->tokens + i * s->width;
    return s->width == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : get_u32(p);
}

/* ---- reader ------------------------------------------------------------------------------- */

int ttt_shard_open(const char *path, ttt_shard **out, char *err, size_t err_len) {
    if (!out) return ttt__errbuf(err, err_len, "shard_open: no output pointer");
    *out = NULL;
    if (!path || !*path) return ttt__errbuf(err, err_len, "shard_open: no path");
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ttt__errbuf(err, err_len, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ttt__errbuf(err, err_len, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ttt__errbuf(err, err_len, "%s: not a regular file", path);
    }
    const uint64_t len = (uint64_t)st.st_size;
    if (len < HEADER_BYTES) {
        close(fd);
        return ttt__errbuf(err, err_len, "%s: %llu bytes is shorter than the %d-byte shard header (truncated?)", path,
                           (unsigned long long)len, HEADER_BYTES);
    }
    void *map = mmap(NULL, (size_t)len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return ttt__errbuf(err, err_len, "%s: cannot map: %s", path, strerror(errno));
    ttt_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        munmap(map, (size_t)len);
        free(s);
        return ttt__errbuf(err, err_len, "%s: out of memory", path);
    }
    s->map = map, s->map_len = (size_t)len;
    const unsigned char *h = s->map;
    const char *why = NULL;
    char buf[160];
    if (memcmp(h, MAGIC, 8)) why = "bad magic (not a ttt token shard)";
    else if (get_u32(h + 8) != VERSION) snprintf(buf, sizeof buf, "version %u is not supported (this build reads %d)", get_u32(h + 8), VERSION), why = buf;
    else if ((s->width = get_u32(h + 12)) != 2 && s->width != 4) snprintf(buf, sizeof buf, "token width %u must be 2 or 4", s->width), why = buf;
    else {
        s->vocab = get_u64(h + 16), s->n_tokens = get_u64(h + 24), s->n_docs = get_u64(h + 32), s->hash = get_u64(h + 40);
        if (s->vocab < 1 || s->vocab > MAX_VOCAB || (s->width == 2 && s->vocab > 65536))
            snprintf(buf, sizeof buf, "vocabulary size %llu does not fit %u-byte tokens", (unsigned long long)s->vocab, s->width), why = buf;
        else if (s->n_tokens > MAX_TOKENS || s->n_docs > MAX_TOKENS) /* documents may be empty */
            snprintf(buf, sizeof buf, "%llu documents / %llu tokens are out of range", (unsigned long long)s->n_docs,
                     (unsigned long long)s->n_tokens), why = buf;
        else {
            const uint64_t want = HEADER_BYTES + 8 * (s->n_docs + 1) + s->width * s->n_tokens;
            if (want != len)
                snprintf(buf, sizeof buf, "file is %llu bytes but the header describes %llu (truncated or corrupt)",
                         (unsigned long long)len, (unsigned long long)want), why = buf;
        }
    }
    if (!why) {
        s->starts = h + HEADER_BYTES;
        s->tokens = s->starts + 8 * (s->n_docs + 1);
        uint64_t prev = get_u64(s->starts);
        if (prev != 0) why = "document table does not start at token 0";
        for (uint64_t i = 1; !why && i <= s->n_docs; i++) {
            uint64_t cur = get_u64(s->starts + 8 * i);
            if (cur < prev || cur > s->n_tokens)
                snprintf(buf, sizeof buf, "document table entry %llu (%llu) is out of order", (unsigned long long)i,
                         (unsigned long long)cur), why = buf;
            prev = cur;
        }
        if (!why && prev != s->n_tokens) why = "document table does not end at the token count";
    }
    if (why) {
        ttt__errbuf(err, err_len, "%s: %s", path, why);
        ttt_shard_close(s);
        return TTT_ERR;
    }
    *out = s;
    return TTT_OK;
}

int ttt_shard_verify(const ttt_shard *s, char *err, size_t err_len) {
    if (!s) return ttt__errbuf(err, err_len, "shard_verify: no shard");
    for (uint64_t i = 0; i < s->n_tokens; i++)
        if (token_at(s, i) >= s->vocab)
            return ttt__errbuf(err, err_len, "%s: token %llu is %u, not below the vocabulary size %llu", s->path,
                               (unsigned long long)i, token_at(s, i), (unsigned long long)s->vocab);
    uint64_t h = fnv1a(FNV_SEED, s->starts, 8 * (size_t)(s->n_docs + 1));
    h = fnv1a(h, s->tokens, (size_t)(s->width * s->n_tokens));
    if (h != s->hash)
        return ttt__errbuf(err, err_len, "%s: content hash %016llx differs from the header's %016llx (corrupt)", s->path,
                           (unsigned long long)h, (unsigned long long)s->hash);
    return TTT_OK;
}

void ttt_shard_close(ttt_shard *s) {
    if (!s) return;
    if (s->map) munmap((void *)s->map, s->map_len);
    free(s->path);
    free(s);
}

int64_t ttt_shard_n_tokens(const ttt_shard *s) { return s ? (int64_t)s->n_tokens : 0; }
int64_t ttt_shard_n_docs(const ttt_shard *s) { return s ? (int64_t)s->n_docs : 0; }
int64_t ttt_shard_vocab(const ttt_shard *s) { return s ? (int64_t)s->vocab : 0; }
int ttt_shard_width(const ttt_shard *s) { return s ? (int)s->width : 0; }

int ttt_shard_doc(const ttt_shard *s, int64_t i, int64_t *start, int64_t *len, char *err, size_t err_len) {
    if (!s || !start || !len) return ttt__errbuf(err, err_len, "shard_doc: NULL argument");
    if (i < 0 || (uint64_t)i >= s->n_docs)
        return ttt__errbuf(err, err_len, "%s: document %lld out of range (%llu documents)", s->path, (long long)i,
                           (unsigned long long)s->n_docs);
    *start = (int64_t)get_u64(s->starts + 8 * i);
    *len = (int64_t)get_u64(s->starts + 8 * (i + 1)) - *start;
    return TTT_OK;
}

int ttt_shard_read(const ttt_shard *s, int64_t start, int64_t n, int32_t *out, char *err, size_t err_len) {
    if (!s || (!out && n > 0)) return ttt__errbuf(err, err_len, "shard_read: NULL argument");
    if (start < 0 || n < 0 || (uint64_t)start > s->n_tokens || (uint64_t)n > s->n_tokens - (uint64_t)start)
        return ttt__errbuf(err, err_len, "%s: tokens [%lld, %lld) out of range (%llu tokens)", s->path,
                           (long long)start, (long long)(start + n), (unsigned long long)s->n_tokens);
    for (int64_t i = 0; i < n; i++) out[i] = (int32_t)token_at(s, (uint64_t)(start + i));
    return TTT_OK;
}

static uint64_t splitmix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int ttt_shard_batch(const ttt_shard *s, uint64_t seed, int64_t step, int64_t batch, int64_t T, int32_t *ids,
                    int32_t *targets, char *err, size_t err_len) {
    if (!s || !ids || !targets) return ttt__errbuf(err, err_len, "shard_batch: NULL argument");
    if (batch < 1 || T < 1 || step < 0)
        return ttt__errbuf(err, err_len, "shard_batch: batch %lld, T %lld and step %lld must be positive",
                           (long long)batch, (long long)T, (long long)step);
    if (batch > INT64_MAX / T || (uint64_t)(batch * T) > SIZE_MAX / sizeof(int32_t))
        return ttt__errbuf(err, err_len, "shard_batch: batch %lld x T %lld is too large", (long long)batch, (long long)T);
    if ((uint64_t)T + 1 > s->n_tokens)
        return ttt__errbuf(err, err_len, "%s: %llu tokens are too few for windows of %lld + 1", s->path,
                           (unsigned long long)s->n_tokens, (long long)T);
    const uint64_t starts = s->n_tokens - (uint64_t)T; /* window starts 0 .. N - T - 1 */
    for (int64_t b = 0; b < batch; b++) {
        /* a pure function of (seed, step, b): resuming at a step gives the same batch */
        uint64_t r = splitmix64(seed ^ splitmix64((uint64_t)step * 0x100000001b3ull + (uint64_t)b));
        uint64_t at = r % starts;
        for (int64_t t = 0; t < T; t++) {
            ids[b * T + t] = (int32_t)token_at(s, at + (uint64_t)t);
            targets[b * T + t] = (int32_t)token_at(s, at + (uint64_t)t + 1);
        }
    }
    return TTT_OK;
}

/* ---- writer -------------------------------------------------------------------------------- */

struct ttt_shard_writer {
    ttt_atomic_file af; /* PATH.tmp, open from the start (include/ttt/fileio.h) */
    uint64_t vocab;
    uint32_t width;
    unsigned char *tokens;
    size_t tok_len, tok_cap; /* bytes */
    uint64_t *starts;
    size_t n_starts, starts_cap;
};

int ttt_shard_writer_open(const char *path, int64_t vocab, ttt_shard_writer **out, char *err, size_t err_len) {
    if (!out) return ttt__errbuf(err, err_len, "shard_writer_open: no output pointer");
    *out = NULL;
    if (!path || !*path) return ttt__errbuf(err, err_len, "shard_writer_open: no path");
    if (vocab < 1 || (uint64_t)vocab > MAX_VOCAB)
        return ttt__errbuf(err, err_len, "%s: vocabulary size %lld out of range", path, (long long)vocab);
    ttt_shard_writer *w = calloc(1, sizeof *w);
    if (!w) return ttt__errbuf(err, err_len, "%s: out of memory", path);
    if (ttt_atomic_open(&w->af, path, err, err_len) != TTT_OK) {
        ttt_shard_writer_abort(w);
        return TTT_ERR;
    }
    w->vocab = (uint64_t)vocab;
    w->width = vocab <= 65536 ? 2 : 4;
    if (ttt__grow((void **)&w->starts, &w->starts_cap, 1, sizeof *w->starts) != TTT_OK) {
        ttt_shard_writer_abort(w);
        return ttt__errbuf(err, err_len, "%s: out of memory", path);
    }
    w->starts[w->n_starts++] = 0;
    *out = w;
    return TTT_OK;
}

int ttt_shard_writer_add(ttt_shard_writer *w, const int32_t *ids, int64_t n, char *err, size_t err_len) {
    if (!w || (!ids && n > 0) || n < 0) return ttt__errbuf(err, err_len, "shard_writer_add: bad arguments");
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint64_t)ids[i] >= w->vocab)
            return ttt__errbuf(err, err_len, "%s: token %d (position %lld of the document) is outside the vocabulary [0, %llu)",
                               w->af.path, ids[i], (long long)i, (unsigned long long)w->vocab);
    const uint64_t have = w->tok_len / w->width;
    if (have + (uint64_t)n > MAX_TOKENS) return ttt__errbuf(err, err_len, "%s: more than 2^40 tokens", w->af.path);
    if (ttt__grow((void **)&w->tokens, &w->tok_cap, w->tok_len + (size_t)n * w->width, 1) != TTT_OK ||
        ttt__grow((void **)&w->starts, &w->starts_cap, w->n_starts + 1, sizeof *w->starts) != TTT_OK)
        return ttt__errbuf(err, err_len, "%s: out of memory at %llu tokens", w->af.path, (unsigned long long)have);
    unsigned char *p = w->tokens + w->tok_len;
    for (int64_t i = 0; i < n; i++, p += w->width) {
        if (w->width == 2) p[0] = (unsigned char)ids[i], p[1] = (unsigned char)(ids[i] >> 8);
        else put_u32(p, (uint32_t)ids[i]);
    }
    w->tok_len += (size_t)n * w->width;
    w->starts[w->n_starts++] = have + (uint64_t)n;
    return TTT_OK;
}

void ttt_shard_writer_abort(ttt_shard_writer *w) {
    if (!w) return;
    ttt_atomic_abort(&w->af);
    free(w->tokens), free(w->starts);
    free(w);
}

int ttt_shard_writer_close(ttt_shard_writer *w, char *err, size_t err_len) {
    if (!w) return ttt__errbuf(err, err_len, "shard_writer_close: no writer");
    const uint64_t n_docs = w->n_starts - 1, n_tokens = w->tok_len / w->width;
    unsigned char *table = malloc(8 * w->n_starts), header[HEADER_BYTES] = {0};
    if (!table) {
        ttt_shard_writer_abort(w);
        return ttt__errbuf(err, err_len, "shard_writer_close: out of memory");
    }
    for (size_t i = 0; i < w->n_starts; i++) put_u64(table + 8 * i, w->starts[i]);
    memcpy(header, MAGIC, 8);
    put_u32(header + 8, VERSION);
    put_u32(header + 12, w->width);
    put_u64(header + 16, w->vocab);
    put_u64(header + 24, n_tokens);
    put_u64(header + 32, n_docs);
    put_u64(header + 40, fnv1a(fnv1a(FNV_SEED, table, 8 * w->n_starts), w->tokens, w->tok_len));
    FILE *f = w->af.f;
    int rc = TTT_ERR;
    if (fwrite(header, 1, HEADER_BYTES, f) == HEADER_BYTES && fwrite(table, 1, 8 * w->n_starts, f) == 8 * w->n_starts &&
        (w->tok_len == 0 || fwrite(w->tokens, 1, w->tok_len, f) == w->tok_len))
        rc = ttt_atomic_commit(&w->af, err, err_len); /* frees af either way */
    else
        ttt__errbuf(err, err_len, "%s: cannot write: %s", w->af.path, strerror(errno ? errno : EIO));
    free(table);
    ttt_shard_writer_abort(w);
    return rc;
}
