/* safetensors reader and writer; see include/ttt/checkpoint.h.
 *
 * File layout: u64 little-endian header size N, N bytes of JSON, the data
 * buffer. The writer needs no JSON library; the reader parses the header with
 * json-c (TTT_HAVE_JSONC) and fails cleanly when ttt was built without it. */
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef TTT_HAVE_JSONC
#include <json-c/json.h>
#endif

#include "../core/engine_private.h"
#include "ttt/checkpoint.h"
#include "ttt/fileio.h"

/* The reference implementation's limit on the header size. */
enum { MAX_HEADER = 100000000, ALIGN = 8 };

/* Each tensor's checksum is stored in the metadata as CHECKSUM_KEY<name> = 16 hex
 * digits (docs/checkpoint.md), so a damaged file is refused naming the tensor;
 * files from elsewhere have none and load unchecked. */
static const char CHECKSUM_KEY[] = "ttt.checksum.";

/* The checksum of a tensor's bytes as stored (little-endian): 64-bit words,
 * each step a bijection of the state (rotate, xor the word, multiply by an odd
 * constant), so any change confined to one word always changes the result; a
 * final mix spreads it. About a byte per cycle, so checking costs little
 * beside reading the file. */
static uint64_t checksum(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--) w = w << 8 | p[i + (size_t)b];
        h = ((h << 23 | h >> 41) ^ w) * 0xbf58476d1ce4e5b9ull;
    }
    if (i < n) {
        uint64_t w = 0;
        for (size_t b = n; b > i; b--) w = w << 8 | p[b - 1];
        h = ((h << 23 | h >> 41) ^ w) * 0xbf58476d1ce4e5b9ull;
    }
    h ^= h >> 31;
    h *= 0x94d049bb133111ebull;
    return h ^ h >> 29;
}

static const char *st_dtype_name(ttt_dtype dt) {
    switch (dt) {
    case TTT_F32: return "F32";
    case TTT_F64: return "F64";
    case TTT_BF16: return "BF16";
    case TTT_I32: return "I32";
    }
    return "?";
}

/* The file stores little-endian data; swap in place on a big-endian host. */
static void to_from_le(void *buf, size_t n_elem, size_t elem) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    unsigned char *p = buf;
    for (size_t i = 0; i < n_elem; i++, p += elem)
        for (size_t a = 0, b = elem - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
#else
    (void)buf, (void)n_elem, (void)elem;
#endif
}

/* Grows *buf to at least n bytes (at least 1, so the pointer is never NULL). */
static int reserve(void **buf, size_t *cap, size_t n) {
    if (n == 0) n = 1;
    if (n <= *cap) return TTT_OK;
    void *p = realloc(*buf, n);
    if (!p) return TTT_ERR;
    *buf = p;
    *cap = n;
    return TTT_OK;
}

/* ==== writer ======================================================================= */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_put(strbuf *s, const char *d, size_t n) {
    if (s->oom) return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (s->len + n + 1 > cap) cap *= 2;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->oom = 1;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, d, n);
    s->len += n;
    s->p[s->len] = 0;
}

static void sb_puts(strbuf *s, const char *d) { sb_put(s, d, strlen(d)); }

static void sb_int(strbuf *s, long long v) {
    char b[32];
    int n = snprintf(b, sizeof b, "%lld", v);
    sb_put(s, b, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control characters escaped;
 * other bytes (valid UTF-8, checked by the caller) copied. */
static void sb_json_string(strbuf *s, const char *str) {
    sb_put(s, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)str; *c; c++) {
        char e[8];
        switch (*c) {
        case '"': sb_put(s, "\\\"", 2); break;
        case '\\': sb_put(s, "\\\\", 2); break;
        case '\b': sb_put(s, "\\b", 2); break;
        case '\f': sb_put(s, "\\f", 2); break;
        case '\n': sb_put(s, "\\n", 2); break;
        case '\r': sb_put(s, "\\r", 2); break;
        case '\t': sb_put(s, "\\t", 2); break;
        default:
            if (*c < 0x20) {
                snprintf(e, sizeof e, "\\u%04x", *c);
                sb_put(s, e, 6);
            } else {
                sb_put(s, (const char *)c, 1);
            }
        }
    }
    sb_put(s, "\"", 1);
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int valid_utf8(const char *str) {
    const unsigned char *p = (const unsigned char *)str;
    while (*p) {
        unsigned c = *p++;
        if (c < 0x80) continue;
        int more;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) more = 1, cp = c & 0x1f, min = 0x80;
        else if ((c & 0xf0) == 0xe0) more = 2, cp = c & 0x0f, min = 0x800;
        else if ((c & 0xf8) == 0xf0) more = 3, cp = c & 0x07, min = 0x10000;
        else return 0;
        for (int k = 0; k < more; k++, p++) {
            if ((*p & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (*p & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    }
    return 1;
}

typedef struct {
    const char *name;
    int index;
} name_ref;

static int cmp_name_ref(const void *a, const void *b) {
    const name_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Names: present, non-empty, valid UTF-8, not "__metadata__", no duplicates.
 * Metadata: key/value pairs of valid UTF-8, no duplicate keys. */
static int check_inputs(ttt_ctx *ctx, const char *path, int n, const ttt_named_tensor *tensors,
                        const char *const *metadata) {
    static const char *const fn = "ttt_save_safetensors";
    for (int i = 0; i < n; i++) {
        const char *name = tensors[i].name;
        if (!name || !*name)
            return ttt__set_error(ctx, "%s: %s: tensor %d has %s name", fn, path, i, name ? "an empty" : "no");
        if (!valid_utf8(name))
            return ttt__set_error(ctx, "%s: %s: the name of tensor %d is not valid UTF-8", fn, path, i);
        if (!strcmp(name, "__metadata__"))
            return ttt__set_error(ctx, "%s: %s: tensor %d: the name '__metadata__' is reserved", fn, path, i);
        if (!tensors[i].tensor) return ttt__set_error(ctx, "%s: %s: tensor '%s' is NULL", fn, path, name);
    }
    /* duplicates: sort the names' indices */
    if (n > 1) {
        name_ref *refs = malloc((size_t)n * sizeof *refs);
        if (!refs) return ttt__set_error(ctx, "%s: %s: out of memory", fn, path);
        for (int i = 0; i < n; i++) refs[i] = (name_ref){tensors[i].name, i};
        qsort(refs, (size_t)n, sizeof *refs, cmp_name_ref);
        int dup = -1;
        for (int i = 1; i < n && dup < 0; i++)
            if (!strcmp(refs[i - 1].name, refs[i].name)) dup = refs[i].index;
        free(refs);
        if (dup >= 0) return ttt__set_error(ctx, "%s: %s: duplicate tensor name '%s'", fn, path, tensors[dup].name);
    }
    if (metadata)
        for (int k = 0; metadata[k]; k += 2) {
            const char *key = metadata[k], *val = metadata[k + 1];
            if (!val) return ttt__set_error(ctx, "%s: %s: metadata key '%s' has no value", fn, path, key);
            if (!valid_utf8(key) || !valid_utf8(val))
                return ttt__set_error(ctx, "%s: %s: metadata entry '%s' is not valid UTF-8", fn, path, key);
            if (!strncmp(key, CHECKSUM_KEY, sizeof CHECKSUM_KEY - 1))
                return ttt__set_error(ctx, "%s: %s: metadata key '%s': the prefix '%s' is reserved for checksums", fn,
                                      path, key, CHECKSUM_KEY);
            for (int j = 0; j < k; j += 2)
                if (!strcmp(metadata[j], key))
                    return ttt__set_error(ctx, "%s: %s: duplicate metadata key '%s'", fn, path, key);
        }
    return TTT_OK;
}

/* The padded JSON header, including the 8-byte size prefix. Data offsets place
 * the tensors by element size, largest first, so each one is aligned to its
 * element size in the file (the JSON keeps the caller's order). */
static int build_header(int n, const ttt_named_tensor *tensors, const char *const *metadata, const uint64_t *begin,
                        const uint64_t *sums, strbuf *s) {
    sb_put(s, "\0\0\0\0\0\0\0\0{", 9);
    int first = 1;
    if ((metadata && metadata[0]) || n > 0) {
        sb_puts(s, "\"__metadata__\":{");
        int k = 0;
        for (; metadata && metadata[k]; k += 2) {
            if (k) sb_puts(s, ",");
            sb_json_string(s, metadata[k]);
            sb_puts(s, ":");
            sb_json_string(s, metadata[k + 1]);
        }
        /* the checksums: always 16 digits, so the header keeps its length when they are filled in */
        for (int i = 0; i < n; i++) {
            if (k || i) sb_puts(s, ",");
            sb_puts(s, "\"");
            sb_puts(s, CHECKSUM_KEY);
            size_t at = s->len;
            sb_json_string(s, tensors[i].name); /* "name" -> drop its opening quote */
            if (!s->oom) memmove(s->p + at, s->p + at + 1, s->len - at - 1), s->len--;
            char hex[24];
            snprintf(hex, sizeof hex, ":\"%016llx\"", (unsigned long long)sums[i]);
            sb_puts(s, hex);
        }
        sb_puts(s, "}");
        first = 0;
    }
    for (int i = 0; i < n; i++) {
        const ttt_tensor *t = tensors[i].tensor;
        if (!first) sb_puts(s, ",");
        first = 0;
        sb_json_string(s, tensors[i].name);
        sb_puts(s, ":{\"dtype\":\"");
        sb_puts(s, st_dtype_name(t->dtype));
        sb_puts(s, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d) sb_puts(s, ",");
            sb_int(s, (long long)t->shape[d]);
        }
        sb_puts(s, "],\"data_offsets\":[");
        sb_int(s, (long long)begin[i]);
        sb_puts(s, ",");
        sb_int(s, (long long)(begin[i] + (uint64_t)ttt_numel(t) * ttt_dtype_size(t->dtype)));
        sb_puts(s, "]}");
    }
    sb_puts(s, "}");
    while (s->len % ALIGN) sb_puts(s, " ");
    if (s->oom) return TTT_ERR;
    uint64_t hlen = s->len - 8;
    for (int b = 0; b < 8; b++) s->p[b] = (char)(unsigned char)(hlen >> (8 * b));
    return TTT_OK;
}

int ttt_save_safetensors(ttt_ctx *ctx, const char *path, int n, const ttt_named_tensor *tensors,
                         const char *const *metadata) {
    static const char *const fn = "ttt_save_safetensors";
    if (!ctx) return TTT_ERR;
    if (!path || !*path) return ttt__set_error(ctx, "%s: no path", fn);
    if (n < 0 || (n > 0 && !tensors)) return ttt__set_error(ctx, "%s: %s: bad tensor list (n = %d)", fn, path, n);
    if (check_inputs(ctx, path, n, tensors, metadata) != TTT_OK) return TTT_ERR;

    uint64_t *begin = malloc(((size_t)n + 1) * sizeof *begin), *sums = calloc((size_t)n + 1, sizeof *sums);
    strbuf hdr = {0};
    void *buf = NULL;
    size_t cap = 0;
    ttt_atomic_file af = {0};
    FILE *f = NULL;
    int rc = TTT_ERR;
    if (!begin || !sums) {
        ttt__set_error(ctx, "%s: %s: out of memory", fn, path);
        goto done;
    }
    static const size_t sizes[] = {8, 4, 2, 1};
    for (int i = 0; i < n; i++) sums[i] = checksum(NULL, 0); /* empty tensors are not visited below */
    uint64_t off = 0;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < n; i++) {
            const ttt_tensor *t = tensors[i].tensor;
            if (ttt_dtype_size(t->dtype) != sizes[k]) continue;
            begin[i] = off;
            off += (uint64_t)ttt_numel(t) * sizes[k];
        }
    if (build_header(n, tensors, metadata, begin, sums, &hdr) != TTT_OK) {
        ttt__set_error(ctx, "%s: %s: out of memory", fn, path);
        goto done;
    }

    char why[512];
    if (ttt_atomic_open(&af, path, why, sizeof why) != TTT_OK) {
        ttt__set_error(ctx, "%s: %s: %s", fn, path, strerror(errno));
        goto done;
    }
    f = af.f;
    if (fwrite(hdr.p, 1, hdr.len, f) != hdr.len) goto io_error;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < n; i++) {
            const ttt_tensor *t = tensors[i].tensor;
            size_t es = ttt_dtype_size(t->dtype), ne = (size_t)ttt_numel(t), bytes = ne * es;
            if (es != sizes[k] || bytes == 0) continue;
            if (reserve(&buf, &cap, bytes) != TTT_OK) {
                ttt__set_error(ctx, "%s: %s: out of memory (%zu bytes for tensor '%s')", fn, path, bytes,
                               tensors[i].name);
                goto done;
            }
            if (ttt_copy_to_host(ctx, t, buf, t->dtype) != TTT_OK) {
                char why[512];
                snprintf(why, sizeof why, "%s", ttt_error(ctx));
                ttt__set_error(ctx, "%s: %s: tensor '%s': %s", fn, path, tensors[i].name,
                               why[0] ? why : "cannot copy to the host");
                goto done;
            }
            to_from_le(buf, ne, es);
            sums[i] = checksum(buf, bytes);
            if (fwrite(buf, 1, bytes, f) != bytes) goto io_error;
        }
    /* the header again, now with the checksums (same length) */
    if (n > 0) {
        const size_t first_len = hdr.len;
        hdr.len = 0;
        if (build_header(n, tensors, metadata, begin, sums, &hdr) != TTT_OK || hdr.len != first_len) {
            ttt__set_error(ctx, "%s: %s: out of memory", fn, path);
            goto done;
        }
        if (fseeko(f, 0, SEEK_SET) != 0 || fwrite(hdr.p, 1, hdr.len, f) != hdr.len) goto io_error;
    }
    f = NULL;
    if (ttt_atomic_commit(&af, why, sizeof why) != TTT_OK) { /* PATH is the old file, or the new one not yet durable */
        ttt__set_error(ctx, "%s: %s", fn, why);
        goto done;
    }
    rc = TTT_OK;
    goto done;

io_error:
    ttt__set_error(ctx, "%s: %s: %s", fn, path, strerror(errno));
done:
    ttt_atomic_abort(&af); /* after a failure: the old file stays */
    free(buf);
    free(hdr.p);
    free(begin);
    free(sums);
    return rc;
}

/* ==== reader ======================================================================= */

#ifndef TTT_HAVE_JSONC

int ttt_load_safetensors(ttt_ctx *ctx, const char *path, int n, const ttt_named_tensor *tensors,
                         char **metadata_json) {
    (void)path, (void)n, (void)tensors;
    if (metadata_json) *metadata_json = NULL;
    if (!ctx) return TTT_ERR;
    return ttt__set_error(ctx, "ttt_load_safetensors: ttt was built without json-c (install libjson-c-dev)");
}

int ttt_metadata_get(const char *metadata_json, const char *key, char *buf, size_t len) {
    (void)metadata_json, (void)key;
    if (buf && len) buf[0] = 0;
    return TTT_ERR;
}

#else

enum { MAX_FILE_DIMS = 64 };

/* Every safetensors dtype, with its size in bits (for validating offsets of
 * entries ttt cannot load); tt is the ttt dtype, or -1. */
static const struct {
    const char *name;
    int bits;
    int tt;
} st_dtypes[] = {
    {"F32", 32, TTT_F32}, {"F64", 64, TTT_F64}, {"BF16", 16, TTT_BF16}, {"I32", 32, TTT_I32},
    {"F16", 16, -1},      {"I64", 64, -1},      {"U64", 64, -1},        {"U32", 32, -1},
    {"I16", 16, -1},      {"U16", 16, -1},      {"I8", 8, -1},          {"U8", 8, -1},
    {"BOOL", 8, -1},      {"F8_E4M3", 8, -1},   {"F8_E5M2", 8, -1},     {"F8_E8M0", 8, -1},
    {"F6_E2M3", 6, -1},   {"F6_E3M2", 6, -1},   {"F4", 4, -1},          {"C64", 64, -1},
};

typedef struct {
    int st;                           /* index into st_dtypes */
    int ndim;
    int64_t shape[MAX_FILE_DIMS];
    uint64_t begin, end;              /* relative to the data buffer */
} st_entry;

static char *shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
    size_t at = 0;
    at += (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < ndim && at < n; d++)
        at += (size_t)snprintf(buf + at, n - at, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (at < n) snprintf(buf + at, n - at, "]");
    return buf;
}

/* A non-negative JSON integer. */
static int get_count(json_object *v, int64_t *out) {
    if (!v || !json_object_is_type(v, json_type_int)) return TTT_ERR;
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (x < 0) return TTT_ERR;
    *out = x;
    return TTT_OK;
}

/* Validates one header entry against a data buffer of data_len bytes; writes
 * the reason into why on failure. */
static int parse_entry(json_object *obj, uint64_t data_len, st_entry *e, char *why, size_t wn) {
    json_object *dt, *sh, *of;
    if (!json_object_is_type(obj, json_type_object)) return snprintf(why, wn, "not a JSON object"), TTT_ERR;
    if (!json_object_object_get_ex(obj, "dtype", &dt)) return snprintf(why, wn, "no dtype"), TTT_ERR;
    if (!json_object_object_get_ex(obj, "shape", &sh)) return snprintf(why, wn, "no shape"), TTT_ERR;
    if (!json_object_object_get_ex(obj, "data_offsets", &of)) return snprintf(why, wn, "no data_offsets"), TTT_ERR;
    if (!json_object_is_type(dt, json_type_string)) return snprintf(why, wn, "dtype is not a string"), TTT_ERR;
    const char *dname = json_object_get_string(dt);
    e->st = -1;
    for (size_t k = 0; k < sizeof st_dtypes / sizeof st_dtypes[0]; k++)
        if (!strcmp(dname, st_dtypes[k].name)) e->st = (int)k;
    if (e->st < 0) return snprintf(why, wn, "unknown dtype \"%.40s\"", dname), TTT_ERR;

    if (!json_object_is_type(sh, json_type_array)) return snprintf(why, wn, "shape is not an array"), TTT_ERR;
    size_t nd = json_object_array_length(sh);
    if (nd > MAX_FILE_DIMS)
        return snprintf(why, wn, "shape has %zu dimensions (at most %d)", nd, MAX_FILE_DIMS), TTT_ERR;
    e->ndim = (int)nd;
    int empty = 0;
    for (size_t d = 0; d < nd; d++) {
        if (get_count(json_object_array_get_idx(sh, d), &e->shape[d]) != TTT_OK)
            return snprintf(why, wn, "shape[%zu] is not a non-negative integer", d), TTT_ERR;
        empty |= e->shape[d] == 0;
    }
    /* numel * bits must not overflow */
    const uint64_t limit = UINT64_MAX / 64;
    uint64_t numel = empty ? 0 : 1;
    for (size_t d = 0; d < nd && !empty; d++) {
        if (numel > limit / (uint64_t)e->shape[d]) return snprintf(why, wn, "shape is too large"), TTT_ERR;
        numel *= (uint64_t)e->shape[d];
    }

    if (!json_object_is_type(of, json_type_array) || json_object_array_length(of) != 2)
        return snprintf(why, wn, "data_offsets is not an array [begin, end]"), TTT_ERR;
    int64_t b, en;
    if (get_count(json_object_array_get_idx(of, 0), &b) != TTT_OK ||
        get_count(json_object_array_get_idx(of, 1), &en) != TTT_OK)
        return snprintf(why, wn, "data_offsets are not non-negative integers"), TTT_ERR;
    if (b > en)
        return snprintf(why, wn, "data_offsets [%lld,%lld] are reversed", (long long)b, (long long)en), TTT_ERR;
    if ((uint64_t)en > data_len)
        return snprintf(why, wn, "data_offsets [%lld,%lld] run past the data (%llu bytes): truncated file?",
                        (long long)b, (long long)en, (unsigned long long)data_len),
               TTT_ERR;
    uint64_t bits = numel * (uint64_t)st_dtypes[e->st].bits;
    if (bits % 8 || bits / 8 != (uint64_t)(en - b)) {
        char s[256];
        snprintf(why, wn, "data_offsets [%lld,%lld] hold %lld bytes, but %s %s needs %llu%s", (long long)b,
                 (long long)en, (long long)(en - b), st_dtypes[e->st].name, shape_str(e->ndim, e->shape, s, sizeof s),
                 (unsigned long long)(bits / 8), bits % 8 ? " and a fraction" : "");
        return TTT_ERR;
    }
    e->begin = (uint64_t)b;
    e->end = (uint64_t)en;
    return TTT_OK;
}

static int read_at(FILE *f, uint64_t pos, void *buf, size_t n) {
    if (fseeko(f, (off_t)pos, SEEK_SET) != 0) return TTT_ERR;
    return fread(buf, 1, n, f) == n ? TTT_OK : TTT_ERR;
}

/* The index of the first NaN / infinity among n values of dtype dt, or -1 (integers: -1). */
static int64_t first_non_finite(const void *buf, ttt_dtype dt, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double v = dt == TTT_F32    ? (double)((const float *)buf)[i]
                   : dt == TTT_F64  ? ((const double *)buf)[i]
                   : dt == TTT_BF16 ? (double)ttt_bf16_to_f32(((const uint16_t *)buf)[i])
                                    : 0.0;
        if (!isfinite(v)) return (int64_t)i;
    }
    return -1;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int ttt_load_safetensors(ttt_ctx *ctx, const char *path, int n, const ttt_named_tensor *tensors,
                         char **metadata_json) {
    static const char *const fn = "ttt_load_safetensors";
    if (metadata_json) *metadata_json = NULL;
    if (!ctx) return TTT_ERR;
    if (!path || !*path) return ttt__set_error(ctx, "%s: no path", fn);
    if (n < 0 || (n > 0 && !tensors)) return ttt__set_error(ctx, "%s: %s: bad tensor list (n = %d)", fn, path, n);
    for (int i = 0; i < n; i++)
        if (!tensors[i].name || !tensors[i].tensor)
            return ttt__set_error(ctx, "%s: %s: entry %d has no %s", fn, path, i,
                                  tensors[i].name ? "tensor" : "name");

    int rc = TTT_ERR;
    char *text = NULL, *meta = NULL;
    json_tokener *tok = NULL;
    json_object *root = NULL;
    void *buf = NULL;
    size_t cap = 0;
    st_entry *ents = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ttt__set_error(ctx, "%s: %s: %s", fn, path, strerror(errno));

    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        ttt__set_error(ctx, "%s: %s: %s", fn, path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        ttt__set_error(ctx, "%s: %s: not a regular file", fn, path);
        goto done;
    }
    uint64_t fsize = (uint64_t)st.st_size;
    unsigned char h8[8];
    if (fsize < 8) {
        ttt__set_error(ctx, "%s: %s: file of %llu bytes is too short for a safetensors header", fn, path,
                       (unsigned long long)fsize);
        goto done;
    }
    if (read_at(f, 0, h8, 8) != TTT_OK) goto read_error;
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = hlen << 8 | h8[b];
    if (hlen > MAX_HEADER) {
        ttt__set_error(ctx, "%s: %s: header size %llu is over the %d-byte limit: not a safetensors file", fn, path,
                       (unsigned long long)hlen, MAX_HEADER);
        goto done;
    }
    if (hlen > fsize - 8) {
        ttt__set_error(ctx,
                       "%s: %s: header size %llu is larger than the rest of the file (%llu bytes): truncated file?", fn,
                       path, (unsigned long long)hlen, (unsigned long long)(fsize - 8));
        goto done;
    }
    const uint64_t data_start = 8 + hlen, data_len = fsize - data_start;
    text = malloc((size_t)hlen + 1);
    if (!text) {
        ttt__set_error(ctx, "%s: %s: out of memory (%llu-byte header)", fn, path, (unsigned long long)hlen);
        goto done;
    }
    if (hlen && read_at(f, 8, text, (size_t)hlen) != TTT_OK) goto read_error;
    text[hlen] = 0;

    /* The header: one JSON object, then only whitespace (the padding). */
    tok = json_tokener_new();
    if (!tok) {
        ttt__set_error(ctx, "%s: %s: out of memory", fn, path);
        goto done;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS | JSON_TOKENER_VALIDATE_UTF8);
    root = json_tokener_parse_ex(tok, text, (int)hlen);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    if (!root || jerr != json_tokener_success) {
        ttt__set_error(ctx, "%s: %s: header is not valid JSON (%s at byte %zu)", fn, path,
                       jerr == json_tokener_continue ? "unexpected end" : json_tokener_error_desc(jerr),
                       json_tokener_get_parse_end(tok));
        goto done;
    }
    for (size_t at = json_tokener_get_parse_end(tok); at < hlen; at++)
        if (!is_ws(text[at])) {
            ttt__set_error(ctx, "%s: %s: header has data after the JSON object (at byte %zu)", fn, path, at);
            goto done;
        }
    if (!json_object_is_type(root, json_type_object)) {
        ttt__set_error(ctx, "%s: %s: header is not a JSON object", fn, path);
        goto done;
    }

    /* Validate every entry (a damaged file fails whichever tensors are asked for). */
    {
        st_entry e;
        char why[512];
        json_object_object_foreach(root, key, val) {
            if (!strcmp(key, "__metadata__")) {
                if (!json_object_is_type(val, json_type_object)) {
                    ttt__set_error(ctx, "%s: %s: __metadata__ is not a JSON object", fn, path);
                    goto done;
                }
                json_object_object_foreach(val, mk, mv) {
                    if (!json_object_is_type(mv, json_type_string)) {
                        ttt__set_error(ctx, "%s: %s: __metadata__ value '%.200s' is not a string", fn, path, mk);
                        goto done;
                    }
                    if (strncmp(mk, CHECKSUM_KEY, sizeof CHECKSUM_KEY - 1)) continue;
                    const char *tname = mk + sizeof CHECKSUM_KEY - 1, *hex = json_object_get_string(mv);
                    json_object *tv;
                    if (strlen(hex) != 16 || strspn(hex, "0123456789abcdef") != 16) {
                        ttt__set_error(ctx, "%s: %s: tensor '%.200s': its checksum '%.40s' is not 16 hex digits", fn,
                                       path, tname, hex);
                        goto done;
                    }
                    if (!strcmp(tname, "__metadata__") || !json_object_object_get_ex(root, tname, &tv)) {
                        ttt__set_error(ctx, "%s: %s: a checksum for tensor '%.200s', which the file does not hold", fn,
                                       path, tname);
                        goto done;
                    }
                }
                continue;
            }
            if (parse_entry(val, data_len, &e, why, sizeof why) != TTT_OK) {
                ttt__set_error(ctx, "%s: %s: tensor '%.200s': %s", fn, path, key, why);
                goto done;
            }
        }
    }

    /* The requested tensors: present, loadable, same shape -- all before loading any. */
    ents = malloc(((size_t)n + 1) * sizeof *ents);
    if (!ents) {
        ttt__set_error(ctx, "%s: %s: out of memory", fn, path);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const char *name = tensors[i].name;
        const ttt_tensor *t = tensors[i].tensor;
        json_object *val;
        char why[512], a[256], b[256];
        if (!strcmp(name, "__metadata__") || !json_object_object_get_ex(root, name, &val)) {
            ttt__set_error(ctx, "%s: %s: no tensor named '%s'", fn, path, name);
            goto done;
        }
        st_entry *e = &ents[i];
        if (parse_entry(val, data_len, e, why, sizeof why) != TTT_OK) {  /* validated above; cannot fail */
            ttt__set_error(ctx, "%s: %s: tensor '%s': %s", fn, path, name, why);
            goto done;
        }
        if (st_dtypes[e->st].tt < 0) {
            ttt__set_error(ctx, "%s: %s: tensor '%s' has dtype %s, which ttt cannot load (F32, F64, BF16, I32)", fn,
                           path, name, st_dtypes[e->st].name);
            goto done;
        }
        int same = e->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = e->shape[d] == t->shape[d];
        if (!same) {
            ttt__set_error(ctx, "%s: %s: tensor '%s' has shape %s in the file but the target has shape %s", fn, path,
                           name, shape_str(e->ndim, e->shape, a, sizeof a), ttt_shape_str(t, b, sizeof b));
            goto done;
        }
    }
    json_object *meta_obj = NULL;
    json_object_object_get_ex(root, "__metadata__", &meta_obj);
    if (metadata_json && meta_obj) {
        /* the caller's metadata, without the checksums (the file's own business) */
        json_object *copy = json_object_new_object();
        int ok = copy != NULL;
        json_object_object_foreach(meta_obj, mk, mv) {
            if (ok && strncmp(mk, CHECKSUM_KEY, sizeof CHECKSUM_KEY - 1))
                ok = json_object_object_add(copy, mk, json_object_get(mv)) == 0;
        }
        const int empty = ok && json_object_object_length(copy) == 0; /* only checksums: as if none */
        meta = ok && !empty ? strdup(json_object_to_json_string_ext(copy, JSON_C_TO_STRING_PLAIN)) : NULL;
        json_object_put(copy);
        if (!meta && !empty) {
            ttt__set_error(ctx, "%s: %s: out of memory", fn, path);
            goto done;
        }
    }

    /* Load: file data -> host buffer -> a temporary of the file's dtype -> assign (converts). */
    for (int i = 0; i < n; i++) {
        const st_entry *e = &ents[i];
        ttt_dtype dt = (ttt_dtype)st_dtypes[e->st].tt;
        size_t bytes = (size_t)(e->end - e->begin), es = ttt_dtype_size(dt);
        if (reserve(&buf, &cap, bytes) != TTT_OK) {
            ttt__set_error(ctx, "%s: %s: out of memory (%zu bytes for tensor '%s')", fn, path, bytes, tensors[i].name);
            goto done;
        }
        if (bytes && read_at(f, data_start + e->begin, buf, bytes) != TTT_OK) goto read_error;
        json_object *sum;
        const size_t kl = sizeof CHECKSUM_KEY - 1 + strlen(tensors[i].name) + 1;
        char *key = malloc(kl);
        if (!key) {
            ttt__set_error(ctx, "%s: %s: out of memory", fn, path);
            goto done;
        }
        snprintf(key, kl, "%s%s", CHECKSUM_KEY, tensors[i].name);
        const int has_sum = meta_obj && json_object_object_get_ex(meta_obj, key, &sum);
        free(key);
        if (has_sum && strtoull(json_object_get_string(sum), NULL, 16) != checksum(buf, bytes)) {
            ttt__set_error(ctx, "%s: %s: tensor '%s': its data do not match the checksum stored with it: the file is "
                                "corrupt", fn, path, tensors[i].name);
            goto done;
        }
        to_from_le(buf, bytes / es, es);
        /* a diverged run's NaN weights would load silently and give junk; say which tensor */
        const int64_t bad = first_non_finite(buf, dt, bytes / es);
        if (bad >= 0) {
            ttt__set_error(ctx, "%s: %s: tensor '%s' holds a value that is not finite (element %lld): the file was "
                                "saved from a diverged run or is corrupt", fn, path, tensors[i].name, (long long)bad);
            goto done;
        }
        ttt_mark_t m = ttt_mark(ctx);
        ttt_tensor *src = ttt_from_host(ctx, dt, e->ndim, e->shape, buf);
        int ok = src && ttt_assign(ctx, tensors[i].tensor, src) == TTT_OK;
        ttt_release(ctx, m);
        if (!ok) {
            char why[512];
            snprintf(why, sizeof why, "%s", ttt_error(ctx));
            ttt__set_error(ctx, "%s: %s: tensor '%s': %s", fn, path, tensors[i].name, why[0] ? why : "cannot load");
            goto done;
        }
    }
    if (metadata_json) *metadata_json = meta, meta = NULL;
    rc = TTT_OK;
    goto done;

read_error:
    ttt__set_error(ctx, "%s: %s: %s", fn, path,
                   ferror(f) ? strerror(errno) : "unexpected end of file (the file changed while reading?)");
done:
    fclose(f);
    free(ents);
    free(buf);
    free(meta);
    if (root) json_object_put(root);
    if (tok) json_tokener_free(tok);
    free(text);
    return rc;
}

int ttt_metadata_get(const char *metadata_json, const char *key, char *buf, size_t len) {
    if (buf && len) buf[0] = 0;
    if (!metadata_json || !key || !buf || !len) return TTT_ERR;
    json_object *root = json_tokener_parse(metadata_json), *v;
    int rc = TTT_ERR;
    if (root && json_object_is_type(root, json_type_object) && json_object_object_get_ex(root, key, &v) &&
        json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        size_t n = (size_t)json_object_get_string_len(v);
        if (n < len && !memchr(s, 0, n)) {  /* fits, and no embedded NUL */
            memcpy(buf, s, n + 1);
            rc = TTT_OK;
        }
    }
    if (root) json_object_put(root);
    return rc;
}

#endif
