/* The GGUF reader and dequantization (include/ttt/gguf.h):
 *   - every type's dequantization equals the gguf package's, bit for bit
 *     (tests/fixtures/gguf/quants.gguf from scripts/make_gguf_fixtures.py);
 *   - a table of bad files (built here, one field broken each) is refused with
 *     a message naming the problem, and every truncation of a real file too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttt/fileio.h"
#include "ttt/gguf.h"

static int failures;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            failures++;                                   \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);   \
            printf(__VA_ARGS__);                          \
            printf("\n");                                 \
        }                                                 \
    } while (0)

static void fixture(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s", __FILE__);
    char *cut = strstr(out, "/tests/test_gguf.c");
    if (cut) snprintf(cut, n - (size_t)(cut - out), "/tests/fixtures/gguf/%s", name);
    else snprintf(out, n, "tests/fixtures/gguf/%s", name);
}

static void test_dequantize(void) {
    char path[4096], err[512];
    fixture(path, sizeof path, "quants.gguf");
    ttt_gguf *g = NULL;
    if (ttt_gguf_open(path, &g, err, sizeof err)) {
        CHECK(0, "open %s: %s", path, err);
        return;
    }
    const char *types[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char refname[32];
        snprintf(refname, sizeof refname, "%s.ref", types[i]);
        const ttt_gguf_tensor *t = ttt_gguf_tensor_find(g, types[i]), *r = ttt_gguf_tensor_find(g, refname);
        CHECK(t && r, "%s: tensor or reference missing", types[i]);
        if (!t || !r) continue;
        CHECK(!strcmp(ttt_ggml_type_name(t->type), types[i]), "%s stored as %s", types[i], ttt_ggml_type_name(t->type));
        const int64_t n = ttt_gguf_tensor_numel(t);
        CHECK(n == ttt_gguf_tensor_numel(r) && r->type == TTT_GGML_F32, "%s: reference shape/type", types[i]);
        float *got = malloc(sizeof(float) * (size_t)n);
        CHECK(ttt_gguf_tensor_f32(t, got, err, sizeof err) == 0, "%s: %s", types[i], err);
        int64_t bad = 0;
        for (int64_t k = 0; k < n; k++) bad += memcmp(&got[k], r->data + 4 * k, 4) != 0;
        CHECK(bad == 0, "%s: %lld of %lld values differ from the gguf package's", types[i], (long long)bad, (long long)n);
        printf("dequantize %-4s: %lld values, bit-equal to gguf.quants.dequantize: %s\n", types[i], (long long)n,
               bad ? "NO" : "yes");
        /* a source that is too short, a count that is not whole blocks */
        if (t->type != TTT_GGML_F32) {
            CHECK(ttt_gguf_dequantize(t->type, t->data, (size_t)t->nbytes - 1, n, got, err, sizeof err) != 0 &&
                      strstr(err, "bytes"), "%s: a short source was accepted (%s)", types[i], err);
        }
        free(got);
    }
    float y[256];
    CHECK(ttt_gguf_dequantize(TTT_GGML_Q4_K, y, sizeof y, 100, y, err, sizeof err) != 0 && strstr(err, "multiple"),
          "a partial Q4_K block was accepted");
    CHECK(ttt_gguf_dequantize(10 /* Q2_K */, y, sizeof y, 256, y, err, sizeof err) != 0 && strstr(err, "Q2_K"),
          "Q2_K should be refused by name: %s", err);
    CHECK(ttt_gguf_dequantize(77, y, sizeof y, 1, y, err, sizeof err) != 0 && strstr(err, "unknown"),
          "type 77 should be unknown: %s", err);
    /* half floats: exact on special values */
    CHECK(ttt_f16_to_f32(0x3c00) == 1.0f && ttt_f16_to_f32(0x0001) == 5.9604644775390625e-8f &&
              ttt_f16_to_f32(0xfbff) == -65504.0f && ttt_f16_to_f32(0x7c00) > 3e38f,
          "f16 conversion");
    ttt_gguf_close(g);
}

/* ---- bad files --------------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u32(buf *b, uint32_t v) { put(b, &v, 4); } /* little-endian hosts (x86-64, arm64) */
static void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void str(buf *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}

/* A small valid file; each field can be broken by a case. */
typedef struct {
    const char *name, *expect;
    const char *magic;
    uint32_t version, vtype, arr_type, align, tensor_type, ndim, bool_val;
    uint64_t n_tensors, n_kv, key_len, arr_n, offset_b, dim0;
    int dup_key, dup_tensor, truncate_data;
} bad_case;

static void build(buf *b, const bad_case *c) {
    b->n = 0;
    put(b, c->magic ? c->magic : "GGUF", 4);
    u32(b, c->version ? c->version : 3);
    u64(b, c->n_tensors ? c->n_tensors : 2);
    u64(b, c->n_kv ? c->n_kv : 4);
    /* 1: a string */
    if (c->key_len) {
        u64(b, c->key_len);
        put(b, "general.architecture", 20);
    } else str(b, "general.architecture");
    u32(b, c->vtype ? c->vtype : 8);
    str(b, "llama");
    /* 2: the alignment */
    str(b, c->dup_key ? "general.architecture" : "general.alignment");
    u32(b, 4);
    u32(b, c->align ? c->align : 32);
    /* 3: an array of i32 */
    str(b, "test.arr");
    u32(b, 9);
    u32(b, c->arr_type ? c->arr_type : 5);
    u64(b, c->arr_n ? c->arr_n : 3);
    for (int i = 0; i < 3; i++) u32(b, (uint32_t)i);
    /* 4: a bool */
    str(b, "test.flag");
    u32(b, 7);
    const uint8_t bv = (uint8_t)c->bool_val;
    put(b, &bv, 1);
    /* tensor a: Q8_0 [2, 32] at 0 (68 bytes); tensor b: F32 [4] at 96 */
    str(b, "a");
    u32(b, c->ndim ? c->ndim : 2);
    u64(b, c->dim0 ? c->dim0 : 32);
    u64(b, 2);
    for (uint32_t i = 2; i < (c->ndim ? c->ndim : 2) && i < 8; i++) u64(b, 1);
    u32(b, c->tensor_type ? c->tensor_type : 8);
    u64(b, 0);
    str(b, c->dup_tensor ? "a" : "b");
    u32(b, 1);
    u64(b, 4);
    u32(b, 0);
    u64(b, c->offset_b ? c->offset_b : 96);
    while (b->n % 32) put(b, "", 1);
    uint8_t data[112] = {0};
    put(b, data, c->truncate_data ? 100 : sizeof data);
}

static void test_bad_files(void) {
    const bad_case cases[] = {
        {"valid", NULL, .magic = NULL},
        {"wrong magic", "bad magic", .magic = "GGML"},
        {"version 2", "version 2", .version = 2},
        {"huge tensor count", "tensor count", .n_tensors = (uint64_t)1 << 60},
        {"huge key/value count", "key/value count", .n_kv = UINT64_MAX},
        {"more key/values than written", "", .n_kv = 5},
        {"key length past the end", "length", .key_len = (uint64_t)1 << 40},
        {"unknown value type", "unknown value type 13", .vtype = 13},
        {"unknown array type", "array of unknown type", .arr_type = 42},
        {"nested array", "nested arrays", .arr_type = 9},
        {"huge array", "cannot fit", .arr_n = (uint64_t)1 << 62},
        {"bad bool", "neither 0 nor 1", .bool_val = 2},
        {"alignment not a power of two", "power of two", .align = 24},
        {"alignment zero", "power of two", .align = 0x80000000u},
        {"duplicate key", "appears twice", .dup_key = 1},
        {"duplicate tensor", "appears twice", .dup_tensor = 1},
        {"unknown tensor type", "unknown ggml type 99", .tensor_type = 99},
        {"5 dimensions", "dimensions", .ndim = 5},
        {"row not whole blocks", "not a multiple", .dim0 = 33},
        {"huge dimension", "dimension 0", .dim0 = (uint64_t)1 << 63},
        {"offset out of bounds", "out of bounds", .offset_b = 4096},
        {"offset past 2^64", "out of bounds", .offset_b = UINT64_MAX - 31},
        {"misaligned offset", "alignment", .offset_b = 80 + 4},
        {"data section truncated", "out of bounds", .truncate_data = 1},
    };
    buf b = {0};
    char err[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        build(&b, c);
        ttt_gguf *g = NULL;
        err[0] = 0;
        const int rc = ttt_gguf_open_memory(b.p, b.n, "case.gguf", &g, err, sizeof err);
        if (!c->expect) {
            CHECK(rc == 0 && g && g->n_tensors == 2 && g->n_kv == 4, "%s: refused: %s", c->name, err);
            if (g) {
                const ttt_gguf_kv *arr = ttt_gguf_find(g, "test.arr");
                CHECK(arr && arr->n == 3 && ttt_gguf_arr_int(arr, 2) == 2, "%s: array value", c->name);
                const char *s;
                size_t sl;
                CHECK(ttt_gguf_get_str(g, "general.architecture", &s, &sl, err, sizeof err) == 0 && sl == 5 &&
                          !memcmp(s, "llama", 5), "%s: string value", c->name);
                int64_t v;
                CHECK(ttt_gguf_get_int(g, "general.architecture", &v, err, sizeof err) != 0 && strstr(err, "not an integer"),
                      "%s: a string read as an integer", c->name);
            }
        } else {
            CHECK(rc != 0 && !g && strstr(err, c->expect), "%s: expected a message with '%s', got rc %d: %s", c->name,
                  c->expect, rc, err);
            printf("refused %-30s %s\n", c->name, err);
        }
        ttt_gguf_close(g);
    }
    /* every truncation of a valid file is refused (none crashes; ASan/UBSan builds check reads) */
    build(&b, &cases[0]);
    int refused = 0;
    for (size_t n = 0; n < b.n; n++) {
        ttt_gguf *g = NULL;
        if (ttt_gguf_open_memory(b.p, n, "cut.gguf", &g, err, sizeof err) != 0 && err[0]) refused++;
        ttt_gguf_close(g);
    }
    CHECK(refused == (int)b.n, "%d of %zu truncations refused", refused, b.n);
    printf("all %zu truncations of a %zu-byte file refused with a message\n", b.n, b.n);
    free(b.p);
    /* the same on a real fixture's header region and a missing file */
    char path[4096];
    fixture(path, sizeof path, "tiny_tied.gguf");
    char *data = NULL;
    size_t len = 0;
    CHECK(ttt_read_file(path, &data, &len, err, sizeof err) == 0, "%s", err);
    ttt_gguf *g = NULL;
    CHECK(data && ttt_gguf_open_memory(data, len, path, &g, err, sizeof err) == 0, "%s", err);
    const uint64_t header = g ? g->data_offset : 0;
    ttt_gguf_close(g);
    refused = 0;
    for (uint64_t n = 0; n < header; n += 7) {
        g = NULL;
        refused += ttt_gguf_open_memory(data, (size_t)n, "cut.gguf", &g, err, sizeof err) != 0;
        ttt_gguf_close(g);
    }
    CHECK(refused == (int)((header + 6) / 7), "truncated tiny_tied.gguf headers accepted");
    free(data);
    CHECK(ttt_gguf_open("/nonexistent/x.gguf", &g, err, sizeof err) != 0 && strstr(err, "cannot open"), "missing file");
}

int main(void) {
    test_dequantize();
    test_bad_files();
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
