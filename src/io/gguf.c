/* GGUF reader: maps the file and validates every count, length, type, size and
 * offset before anything is used (see include/ttt/gguf.h, docs/gguf.md). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/engine_private.h"
#include "ttt/gguf.h"

/* Limits far beyond any real file, so a corrupt count cannot make us allocate much. */
enum { MAX_KEY = 65535, MAX_DIMS = 4 };
static const uint64_t MAX_ALIGN = 1u << 20;

static const struct {
    uint32_t id;
    const char *name;
    int64_t block, bytes;
} GGML_TYPES[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},   {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},  {20, "IQ4_NL", 32, 18},  {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},  {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},        {25, "I16", 1, 2},
    {26, "I32", 1, 4},       {27, "I64", 1, 8},        {28, "F64", 1, 8},       {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},      {34, "TQ1_0", 256, 54},   {35, "TQ2_0", 256, 66},
};

const char *ttt_ggml_type_name(uint32_t type) {
    for (size_t i = 0; i < sizeof GGML_TYPES / sizeof GGML_TYPES[0]; i++)
        if (GGML_TYPES[i].id == type) return GGML_TYPES[i].name;
    return NULL;
}

int ttt_ggml_type_size(uint32_t type, int64_t *block, int64_t *bytes) {
    for (size_t i = 0; i < sizeof GGML_TYPES / sizeof GGML_TYPES[0]; i++)
        if (GGML_TYPES[i].id == type) {
            if (block) *block = GGML_TYPES[i].block;
            if (bytes) *bytes = GGML_TYPES[i].bytes;
            return TTT_OK;
        }
    return TTT_ERR;
}

static const char *const VTYPE_NAMES[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
static const int VTYPE_SIZE[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}; /* 0: variable */

const char *ttt_gguf_vtype_name(ttt_gguf_vtype t) {
    return (unsigned)t < sizeof VTYPE_NAMES / sizeof VTYPE_NAMES[0] ? VTYPE_NAMES[t] : "unknown";
}

/* ---- a bounds-checked cursor over the file ---- */

typedef struct {
    const uint8_t *p;
    uint64_t size, pos;
    const char *name;
    char *err;
    size_t err_len;
} cursor;

static int fail(cursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(cursor *c, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ttt__errbuf(c->err, c->err_len, "%s: %s (at byte %llu of %llu)", c->name, msg, (unsigned long long)c->pos,
                       (unsigned long long)c->size);
}

static uint64_t left(const cursor *c) { return c->size - c->pos; }

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > left(c))
        return fail(c, "truncated: %s needs %llu bytes, %llu remain", what, (unsigned long long)n,
                    (unsigned long long)left(c));
    return TTT_OK;
}

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return TTT_ERR;
    *v = (uint32_t)le(c->p + c->pos, 4);
    c->pos += 4;
    return TTT_OK;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return TTT_ERR;
    *v = le(c->p + c->pos, 8);
    c->pos += 8;
    return TTT_OK;
}

/* A GGUF string (u64 length, bytes); *s points at the bytes. */
static int rd_str(cursor *c, const uint8_t **s, uint64_t *len, uint64_t max, const char *what) {
    if (rd_u64(c, len, what)) return TTT_ERR;
    if (*len > max) {
        c->pos -= 8;
        return fail(c, "%s has length %llu (at most %llu)", what, (unsigned long long)*len, (unsigned long long)max);
    }
    if (need(c, *len, what)) return TTT_ERR;
    *s = c->p + c->pos;
    c->pos += *len;
    return TTT_OK;
}

static char *dup_str(const uint8_t *s, uint64_t n) {
    char *d = malloc((size_t)n + 1);
    if (d) {
        memcpy(d, s, (size_t)n);
        d[n] = 0;
    }
    return d;
}

static int valid_vtype(uint32_t t) { return t <= TTT_GGUF_F64; }

/* One value of scalar type t (not an array) at the cursor: checked and skipped. */
static int skip_scalar(cursor *c, uint32_t t, const char *key) {
    if (t == TTT_GGUF_STRING) {
        const uint8_t *s;
        uint64_t n;
        return rd_str(c, &s, &n, UINT64_MAX, "a string value");
    }
    if (need(c, (uint64_t)VTYPE_SIZE[t], "a value")) return TTT_ERR;
    if (t == TTT_GGUF_BOOL && c->p[c->pos] > 1)
        return fail(c, "key '%s': bool value %u is neither 0 nor 1", key, c->p[c->pos]);
    c->pos += (uint64_t)VTYPE_SIZE[t];
    return TTT_OK;
}

static int parse_kv(cursor *c, ttt_gguf_kv *kv, uint64_t index) {
    const uint8_t *ks;
    uint64_t kl;
    char what[64];
    snprintf(what, sizeof what, "key %llu", (unsigned long long)index);
    if (rd_str(c, &ks, &kl, MAX_KEY, what)) return TTT_ERR;
    if (kl == 0) return fail(c, "key %llu is empty", (unsigned long long)index);
    if (memchr(ks, 0, (size_t)kl)) return fail(c, "key %llu contains a NUL byte", (unsigned long long)index);
    if (!(kv->key = dup_str(ks, kl))) return fail(c, "out of memory");
    uint32_t t;
    if (rd_u32(c, &t, "a value type")) return TTT_ERR;
    if (!valid_vtype(t)) return fail(c, "key '%s': unknown value type %u", kv->key, t);
    kv->type = (ttt_gguf_vtype)t;
    kv->n = 1;
    if (t != TTT_GGUF_ARRAY) {
        kv->data = c->p + c->pos;
        return skip_scalar(c, t, kv->key);
    }
    uint32_t et;
    uint64_t n;
    if (rd_u32(c, &et, "an array's element type") || rd_u64(c, &n, "an array's length")) return TTT_ERR;
    if (!valid_vtype(et)) return fail(c, "key '%s': array of unknown type %u", kv->key, et);
    if (et == TTT_GGUF_ARRAY) return fail(c, "key '%s': nested arrays are not supported", kv->key);
    kv->elem_type = (ttt_gguf_vtype)et;
    kv->n = n;
    kv->data = c->p + c->pos;
    /* each element takes at least its fixed size (8 for a string's length): refuse a count the bytes cannot hold */
    const uint64_t min_elem = et == TTT_GGUF_STRING ? 8 : (uint64_t)VTYPE_SIZE[et];
    if (n > left(c) / min_elem)
        return fail(c, "key '%s': array of %llu %s elements cannot fit in the %llu bytes left", kv->key,
                    (unsigned long long)n, VTYPE_NAMES[et], (unsigned long long)left(c));
    if (et != TTT_GGUF_STRING) {
        if (et == TTT_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (c->p[c->pos + i] > 1) return fail(c, "key '%s': bool element %llu is neither 0 nor 1", kv->key,
                                                      (unsigned long long)i);
        c->pos += n * min_elem;
        return TTT_OK;
    }
    if (!(kv->strs = malloc((size_t)(n ? n : 1) * sizeof *kv->strs))) return fail(c, "out of memory");
    for (uint64_t i = 0; i < n; i++) {
        kv->strs[i] = c->p + c->pos;
        const uint8_t *s;
        uint64_t l;
        if (rd_str(c, &s, &l, UINT64_MAX, "an array string")) return TTT_ERR;
    }
    return TTT_OK;
}

static int parse_tensor(cursor *c, ttt_gguf_tensor *t, uint64_t index) {
    const uint8_t *ns;
    uint64_t nl;
    char what[64];
    snprintf(what, sizeof what, "tensor %llu's name", (unsigned long long)index);
    if (rd_str(c, &ns, &nl, MAX_KEY, what)) return TTT_ERR;
    if (nl == 0 || memchr(ns, 0, (size_t)nl)) return fail(c, "tensor %llu has an empty name or a NUL in it",
                                                        (unsigned long long)index);
    if (!(t->name = dup_str(ns, nl))) return fail(c, "out of memory");
    uint32_t nd;
    if (rd_u32(c, &nd, "a tensor's dimension count")) return TTT_ERR;
    if (nd < 1 || nd > MAX_DIMS) return fail(c, "tensor '%s' has %u dimensions (1..4)", t->name, nd);
    t->ndim = (int)nd;
    for (int i = 0; i < MAX_DIMS; i++) t->ne[i] = 1;
    uint64_t numel = 1;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t d;
        if (rd_u64(c, &d, "a tensor dimension")) return TTT_ERR;
        if (d < 1 || d > (uint64_t)INT64_MAX / 2) return fail(c, "tensor '%s': dimension %u is %llu", t->name, i,
                                                             (unsigned long long)d);
        if (numel > (uint64_t)INT64_MAX / d) return fail(c, "tensor '%s': element count overflows", t->name);
        numel *= d;
        t->ne[i] = (int64_t)d;
    }
    if (rd_u32(c, &t->type, "a tensor type")) return TTT_ERR;
    int64_t blk, bytes;
    if (ttt_ggml_type_size(t->type, &blk, &bytes)) return fail(c, "tensor '%s' has unknown ggml type %u", t->name, t->type);
    if (t->ne[0] % blk)
        return fail(c, "tensor '%s': row length %lld is not a multiple of %s's block of %lld", t->name,
                    (long long)t->ne[0], ttt_ggml_type_name(t->type), (long long)blk);
    const uint64_t blocks = numel / (uint64_t)blk;
    if (blocks > UINT64_MAX / (uint64_t)bytes) return fail(c, "tensor '%s': byte size overflows", t->name);
    t->nbytes = blocks * (uint64_t)bytes;
    return rd_u64(c, &t->offset, "a tensor offset");
}

static int parse(ttt_gguf *g, char *err, size_t err_len) {
    cursor c = {g->base, g->size, 0, g->path, err, err_len};
    if (need(&c, 4, "the magic")) return TTT_ERR;
    if (memcmp(g->base, "GGUF", 4)) return fail(&c, "not a GGUF file (bad magic %02x %02x %02x %02x)", g->base[0],
                                                g->base[1], g->base[2], g->base[3]);
    c.pos = 4;
    if (rd_u32(&c, &g->version, "the version")) return TTT_ERR;
    if (g->version != 3) {
        c.pos -= 4;
        return fail(&c, "GGUF version %u is not supported (only 3)", g->version);
    }
    if (rd_u64(&c, &g->n_tensors, "the tensor count") || rd_u64(&c, &g->n_kv, "the key/value count")) return TTT_ERR;
    /* a key/value takes at least 8 + 1 + 4 + 1 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8 */
    if (g->n_kv > left(&c) / 14) return fail(&c, "key/value count %llu cannot fit in the file", (unsigned long long)g->n_kv);
    if (g->n_tensors > left(&c) / 33)
        return fail(&c, "tensor count %llu cannot fit in the file", (unsigned long long)g->n_tensors);
    if (!(g->kv = calloc((size_t)g->n_kv + 1, sizeof *g->kv)) ||
        !(g->tensors = calloc((size_t)g->n_tensors + 1, sizeof *g->tensors)))
        return fail(&c, "out of memory");
    g->alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (parse_kv(&c, &g->kv[i], i)) return TTT_ERR;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->kv[j].key, g->kv[i].key)) return fail(&c, "key '%s' appears twice", g->kv[i].key);
        if (!strcmp(g->kv[i].key, "general.alignment")) {
            if (g->kv[i].type != TTT_GGUF_U32) return fail(&c, "general.alignment must be a u32");
            const uint64_t a = le(g->kv[i].data, 4);
            if (a == 0 || (a & (a - 1)) || a > MAX_ALIGN)
                return fail(&c, "general.alignment %llu is not a power of two up to 2^20", (unsigned long long)a);
            g->alignment = a;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (parse_tensor(&c, &g->tensors[i], i)) return TTT_ERR;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->tensors[j].name, g->tensors[i].name))
                return fail(&c, "tensor '%s' appears twice", g->tensors[i].name);
    }
    /* the data section starts at the next multiple of the alignment (c.pos <= size < 2^63: no overflow) */
    const uint64_t data = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    if (data > g->size && g->n_tensors > 0) return fail(&c, "the data section would start past the end of the file");
    g->data_offset = data;
    const uint64_t data_size = data <= g->size ? g->size - data : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        ttt_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment)
            return fail(&c, "tensor '%s': offset %llu is not a multiple of the alignment %llu", t->name,
                        (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return fail(&c, "tensor '%s': bytes [%llu, %llu) of the data section are out of bounds (it has %llu)",
                        t->name, (unsigned long long)t->offset, (unsigned long long)t->offset + t->nbytes,
                        (unsigned long long)data_size);
        t->data = g->base + data + t->offset;
    }
    return TTT_OK;
}

static int open_common(ttt_gguf *g, ttt_gguf **out, char *err, size_t err_len) {
    if (parse(g, err, err_len) == TTT_OK) {
        *out = g;
        return TTT_OK;
    }
    ttt_gguf_close(g);
    return TTT_ERR;
}

int ttt_gguf_open_memory(const void *data, size_t size, const char *name, ttt_gguf **out, char *err, size_t err_len) {
    if (!out) return ttt__errbuf(err, err_len, "gguf_open: out must not be NULL");
    *out = NULL;
    if (!data && size) return ttt__errbuf(err, err_len, "gguf_open: NULL data");
    ttt_gguf *g = calloc(1, sizeof *g);
    if (!g) return ttt__errbuf(err, err_len, "gguf_open: out of memory");
    g->base = data;
    g->size = size;
    snprintf(g->path, sizeof g->path, "%s", name ? name : "<memory>");
    return open_common(g, out, err, err_len);
}

int ttt_gguf_open(const char *path, ttt_gguf **out, char *err, size_t err_len) {
    if (!out || !path) return ttt__errbuf(err, err_len, "gguf_open: path and out must not be NULL");
    *out = NULL;
    const int fd = open(path, O_RDONLY);
    if (fd < 0) return ttt__errbuf(err, err_len, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return ttt__errbuf(err, err_len, "%s: not a regular file", path);
    }
    ttt_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        close(fd);
        return ttt__errbuf(err, err_len, "gguf_open: out of memory");
    }
    snprintf(g->path, sizeof g->path, "%s", path);
    g->size = (size_t)st.st_size;
    if (g->size > 0) {
        void *p = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            free(g);
            return ttt__errbuf(err, err_len, "cannot map %s: %s", path, strerror(errno));
        }
        g->base = p;
        g->mapped = 1;
    } else g->base = (const uint8_t *)"";
    close(fd);
    return open_common(g, out, err, err_len);
}

void ttt_gguf_close(ttt_gguf *g) {
    if (!g) return;
    for (uint64_t i = 0; g->kv && i < g->n_kv; i++) {
        free((void *)g->kv[i].key);
        free(g->kv[i].strs);
    }
    for (uint64_t i = 0; g->tensors && i < g->n_tensors; i++) free((void *)g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g);
}

/* ---- metadata ---- */

const ttt_gguf_kv *ttt_gguf_find(const ttt_gguf *g, const char *key) {
    for (uint64_t i = 0; g && key && i < g->n_kv; i++)
        if (g->kv[i].key && !strcmp(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

/* A numeric value of type t at p: as int64 (*is_int) or double. */
static double num_at(ttt_gguf_vtype t, const uint8_t *p, int64_t *iv, int *is_int) {
    *is_int = 1;
    switch (t) {
    case TTT_GGUF_U8: case TTT_GGUF_BOOL: *iv = p[0]; break;
    case TTT_GGUF_I8: *iv = (int8_t)p[0]; break;
    case TTT_GGUF_U16: *iv = (int64_t)le(p, 2); break;
    case TTT_GGUF_I16: *iv = (int16_t)le(p, 2); break;
    case TTT_GGUF_U32: *iv = (int64_t)le(p, 4); break;
    case TTT_GGUF_I32: *iv = (int32_t)le(p, 4); break;
    case TTT_GGUF_U64: {
        const uint64_t u = le(p, 8);
        *iv = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
        break;
    }
    case TTT_GGUF_I64: *iv = (int64_t)le(p, 8); break;
    case TTT_GGUF_F32: {
        const uint32_t u = (uint32_t)le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        *is_int = 0;
        return f;
    }
    case TTT_GGUF_F64: {
        const uint64_t u = le(p, 8);
        double d;
        memcpy(&d, &u, 8);
        *is_int = 0;
        return d;
    }
    default: *is_int = -1; return 0;
    }
    return (double)*iv;
}

int ttt_gguf_get_int(const ttt_gguf *g, const char *key, int64_t *out, char *err, size_t err_len) {
    const ttt_gguf_kv *kv = ttt_gguf_find(g, key);
    if (!kv) return ttt__errbuf(err, err_len, "%s: no metadata key '%s'", g ? g->path : "gguf", key);
    int64_t iv = 0;
    int is_int;
    num_at(kv->type, kv->data, &iv, &is_int);
    if (is_int != 1)
        return ttt__errbuf(err, err_len, "%s: metadata '%s' is a %s, not an integer", g->path, key,
                           ttt_gguf_vtype_name(kv->type));
    *out = iv;
    return TTT_OK;
}

int ttt_gguf_get_float(const ttt_gguf *g, const char *key, double *out, char *err, size_t err_len) {
    const ttt_gguf_kv *kv = ttt_gguf_find(g, key);
    if (!kv) return ttt__errbuf(err, err_len, "%s: no metadata key '%s'", g ? g->path : "gguf", key);
    int64_t iv;
    int is_int;
    const double v = num_at(kv->type, kv->data, &iv, &is_int);
    if (is_int < 0 || kv->type == TTT_GGUF_BOOL)
        return ttt__errbuf(err, err_len, "%s: metadata '%s' is a %s, not a number", g->path, key,
                           ttt_gguf_vtype_name(kv->type));
    *out = v;
    return TTT_OK;
}

int ttt_gguf_get_str(const ttt_gguf *g, const char *key, const char **s, size_t *len, char *err, size_t err_len) {
    const ttt_gguf_kv *kv = ttt_gguf_find(g, key);
    if (!kv) return ttt__errbuf(err, err_len, "%s: no metadata key '%s'", g ? g->path : "gguf", key);
    if (kv->type != TTT_GGUF_STRING)
        return ttt__errbuf(err, err_len, "%s: metadata '%s' is a %s, not a string", g->path, key,
                           ttt_gguf_vtype_name(kv->type));
    *len = (size_t)le(kv->data, 8);
    *s = (const char *)kv->data + 8;
    return TTT_OK;
}

const char *ttt_gguf_arr_str(const ttt_gguf_kv *kv, uint64_t i, size_t *len) {
    if (!kv || kv->type != TTT_GGUF_ARRAY || kv->elem_type != TTT_GGUF_STRING || i >= kv->n) return NULL;
    *len = (size_t)le(kv->strs[i], 8);
    return (const char *)kv->strs[i] + 8;
}

int64_t ttt_gguf_arr_int(const ttt_gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != TTT_GGUF_ARRAY || kv->elem_type == TTT_GGUF_STRING || i >= kv->n) return 0;
    int64_t iv = 0;
    int is_int;
    const double v = num_at(kv->elem_type, kv->data + i * (uint64_t)VTYPE_SIZE[kv->elem_type], &iv, &is_int);
    return is_int == 1 ? iv : (int64_t)v;
}

double ttt_gguf_arr_float(const ttt_gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != TTT_GGUF_ARRAY || kv->elem_type == TTT_GGUF_STRING || i >= kv->n) return 0;
    int64_t iv;
    int is_int;
    return num_at(kv->elem_type, kv->data + i * (uint64_t)VTYPE_SIZE[kv->elem_type], &iv, &is_int);
}

/* ---- tensors ---- */

const ttt_gguf_tensor *ttt_gguf_tensor_find(const ttt_gguf *g, const char *name) {
    for (uint64_t i = 0; g && name && i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

int64_t ttt_gguf_tensor_numel(const ttt_gguf_tensor *t) {
    return t ? t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3] : 0;
}

int ttt_gguf_tensor_f32(const ttt_gguf_tensor *t, float *dst, char *err, size_t err_len) {
    if (!t || !dst) return ttt__errbuf(err, err_len, "gguf_tensor_f32: NULL argument");
    char e[300];
    if (ttt_gguf_dequantize(t->type, t->data, (size_t)t->nbytes, ttt_gguf_tensor_numel(t), dst, e, sizeof e))
        return ttt__errbuf(err, err_len, "tensor '%s': %s", t->name, e);
    return TTT_OK;
}
