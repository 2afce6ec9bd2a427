/* Checkpoints: safetensors round trip (f32/f64/bf16/i32, strided views, 0-d,
 * empty, escaped names and metadata), dtype conversion on load, damaged and
 * truncated files, atomic saves, and -- when python3 has the safetensors
 * package -- a cross-check against the reference implementation. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "ttt/checkpoint.h"
#include "ttt/ttt.h"

#ifdef TTT_HAVE_JSONC
static const int have_jsonc = 1;
#else
static const int have_jsonc = 0;
#endif

static char dir[64];

static const char *in_dir(const char *name) {
    static char bufs[8][256];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    *len = fread(p, 1, (size_t)n, f);
    fclose(f);
    return p;
}

static int write_all(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A hand-made safetensors file: header json (padded), then dlen data bytes. */
static void write_st(const char *path, const char *json, const void *data, size_t dlen) {
    size_t hl = strlen(json), pad = (8 - hl % 8) % 8, n = 8 + hl + pad + dlen;
    unsigned char *p = malloc(n);
    for (int b = 0; b < 8; b++) p[b] = (unsigned char)((uint64_t)(hl + pad) >> (8 * b));
    memcpy(p + 8, json, hl);
    memset(p + 8 + hl, ' ', pad);
    if (dlen) memcpy(p + 8 + hl + pad, data, dlen);
    CHECK(write_all(path, p, n) == 0);
    free(p);
}

/* Loading `name` as f32 [2] from a hand-made file must fail with a message containing want. */
static void expect_load_error(ttt_ctx *ctx, const char *json, const void *data, size_t dlen, const char *want) {
    const char *path = in_dir("bad.safetensors");
    write_st(path, json, data, dlen);
    ttt_tensor *t = ttt_full(ctx, TTT_F32, TTT_DIMS(2), -1.0);
    ttt_named_tensor nt = {"a", t};
    ttt_clear_error(ctx);
    int rc = ttt_load_safetensors(ctx, path, 1, &nt, NULL);
    CHECK_MSG(rc == TTT_ERR && strstr(ttt_error(ctx), want) && strstr(ttt_error(ctx), path),
              "header %s: rc %d, message \"%s\" (wanted \"%s\")", json, rc, ttt_error(ctx), want);
    float v[2];
    ttt_copy_to_host(ctx, t, v, TTT_F32);
    CHECK(v[0] == -1 && v[1] == -1);
    remove(path);
}

/* ---- the round trip set ----------------------------------------------------------------- */

static const float A[6] = {-2, -0.5, 1, 2.5, 4, 5.5};               /* f32 [2,3] */
static const float M[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};  /* f32 [3,4], saved transposed */
static const double D[5] = {1.0 / 3, 3.141592653589793, -1e300, 5e-324, 0};
static const float BV[4] = {1, -2.5, 0.15625, 256};                  /* exact in bf16 */
static const int32_t I[3] = {-7, 0, 2147483647};
static const char *const NAME_A = "layer.0/w\"q\\\n";  /* needs escaping */
static const char *const NAME_U = "\xc3\xa9" "chelle";  /* UTF-8 */
static const char *const NOTE = "quote \" backslash \\ newline \n tab \t ctrl \x01 \xc3\xa9 end";

enum { N_SET = 7 };

static void make_set(ttt_ctx *ctx, ttt_named_tensor *nt) {
    ttt_tensor *m = ttt_from_host(ctx, TTT_F32, TTT_DIMS(3, 4), M);
    nt[0] = (ttt_named_tensor){NAME_A, ttt_from_host(ctx, TTT_F32, TTT_DIMS(2, 3), A)};
    nt[1] = (ttt_named_tensor){"mt", ttt_transpose(ctx, m, 0, 1)};
    nt[2] = (ttt_named_tensor){"d", ttt_from_host(ctx, TTT_F64, TTT_DIMS(5), D)};
    nt[3] = (ttt_named_tensor){NAME_U, ttt_cast(ctx, ttt_from_host(ctx, TTT_F32, TTT_DIMS(2, 2), BV), TTT_BF16)};
    nt[4] = (ttt_named_tensor){"i", ttt_from_host(ctx, TTT_I32, TTT_DIMS(3), I)};
    nt[5] = (ttt_named_tensor){"scalar", ttt_scalar(ctx, TTT_F64, 42.5)};
    nt[6] = (ttt_named_tensor){"empty", ttt_zeros(ctx, TTT_F32, TTT_DIMS(2, 0))};
    CHECK(!ttt_is_contiguous(nt[1].tensor) && nt[5].tensor->ndim == 0);
}

/* Fresh targets of the same shapes and dtypes, filled with -1. */
static void make_targets(ttt_ctx *ctx, const ttt_named_tensor *src, ttt_named_tensor *dst) {
    for (int i = 0; i < N_SET; i++) {
        const ttt_tensor *t = src[i].tensor;
        dst[i] = (ttt_named_tensor){src[i].name, ttt_full(ctx, t->dtype, t->ndim, t->shape, -1)};
    }
}

static int same_content(ttt_ctx *ctx, const ttt_tensor *a, const ttt_tensor *b) {
    if (a->dtype != b->dtype || !ttt_same_shape(a, b)) return 0;
    size_t n = (size_t)ttt_numel(a) * ttt_dtype_size(a->dtype);
    unsigned char *x = malloc(n + 1), *y = malloc(n + 1);
    int same = ttt_copy_to_host(ctx, a, x, a->dtype) == TTT_OK && ttt_copy_to_host(ctx, b, y, b->dtype) == TTT_OK &&
               !memcmp(x, y, n);
    free(x);
    free(y);
    return same;
}

static void test_round_trip(ttt_ctx *ctx) {
    ttt_named_tensor nt[N_SET], got[N_SET];
    make_set(ctx, nt);
    const char *meta[] = {"format", "ttt/1", "note", NOTE, "empty", "", NULL};
    const char *path = in_dir("set.safetensors");
    CHECK_MSG(ttt_save_safetensors(ctx, path, N_SET, nt, meta) == TTT_OK, "%s", ttt_error(ctx));
    CHECK(!exists(in_dir("set.safetensors.tmp")));

    /* the layout: u64 header size, JSON object, space padding to 8 bytes */
    size_t len = 0;
    unsigned char *p = read_all(path, &len);
    CHECK(p && len >= 8);
    if (p && len >= 8) {
        uint64_t h = 0;
        for (int b = 7; b >= 0; b--) h = h << 8 | p[b];
        CHECK_MSG((8 + h) % 8 == 0 && 8 + h <= len, "header %llu, file %zu", (unsigned long long)h, len);
        CHECK(p[8] == '{');
        size_t last = 8 + h - 1;
        while (last > 8 && p[last] == ' ') last--;
        CHECK(p[last] == '}' && 8 + h - 1 - last < 8);
        /* data: 24+48+40+8+8+12 bytes (empty has none) */
        CHECK_MSG(len - 8 - h == 24 + 48 + 40 + 8 + 8 + 12, "data %llu bytes", (unsigned long long)(len - 8 - h));
        CHECK(memchr(p + 8, '\n', h) == NULL);  /* the newlines in the names are escaped */
    }
    free(p);

    if (!have_jsonc) {
        make_targets(ctx, nt, got);
        CHECK(ttt_load_safetensors(ctx, path, N_SET, got, NULL) == TTT_ERR &&
              strstr(ttt_error(ctx), "built without json-c"));
        printf("reading checkpoints: SKIPPED (ttt was built without json-c)\n");
        return;
    }

    make_targets(ctx, nt, got);
    char *json = NULL;
    CHECK_MSG(ttt_load_safetensors(ctx, path, N_SET, got, &json) == TTT_OK, "%s", ttt_error(ctx));
    for (int i = 0; i < N_SET; i++) CHECK_MSG(same_content(ctx, nt[i].tensor, got[i].tensor), "tensor %d", i);
    double d[5];
    ttt_copy_to_host(ctx, got[2].tensor, d, TTT_F64);
    CHECK(!memcmp(d, D, sizeof d));
    float mt[12];
    ttt_copy_to_host(ctx, got[1].tensor, mt, TTT_F32);
    CHECK(mt[0] == 0 && mt[1] == 4 && mt[2] == 8 && mt[3] == 1);
    CHECK(ttt_item(ctx, got[5].tensor) == 42.5);

    /* metadata */
    char buf[128];
    CHECK(json != NULL);
    CHECK(ttt_metadata_get(json, "format", buf, sizeof buf) == TTT_OK && !strcmp(buf, "ttt/1"));
    CHECK(ttt_metadata_get(json, "note", buf, sizeof buf) == TTT_OK && !strcmp(buf, NOTE));
    CHECK(ttt_metadata_get(json, "empty", buf, sizeof buf) == TTT_OK && !strcmp(buf, ""));
    CHECK(ttt_metadata_get(json, "missing", buf, sizeof buf) == TTT_ERR);
    CHECK(ttt_metadata_get(json, "format", buf, 5) == TTT_ERR);  /* "ttt/1" needs 6 bytes */
    CHECK(ttt_metadata_get(json, "format", buf, 6) == TTT_OK && !strcmp(buf, "ttt/1"));
    CHECK(ttt_metadata_get("not json", "format", buf, sizeof buf) == TTT_ERR);
    CHECK(ttt_metadata_get("[1]", "format", buf, sizeof buf) == TTT_ERR);
    CHECK(ttt_metadata_get(NULL, "format", buf, sizeof buf) == TTT_ERR);
    free(json);

    /* metadata only (n = 0), and a strided target (a transposed view) */
    json = NULL;
    CHECK(ttt_load_safetensors(ctx, path, 0, NULL, &json) == TTT_OK && json);
    CHECK(ttt_metadata_get(json, "format", buf, sizeof buf) == TTT_OK);
    free(json);
    ttt_tensor *base = ttt_full(ctx, TTT_F32, TTT_DIMS(3, 4), -1);
    ttt_named_tensor view = {"mt", ttt_transpose(ctx, base, 0, 1)};
    CHECK_MSG(ttt_load_safetensors(ctx, path, 1, &view, NULL) == TTT_OK, "%s", ttt_error(ctx));
    float mb[12];
    ttt_copy_to_host(ctx, base, mb, TTT_F32);
    CHECK(!memcmp(mb, M, sizeof mb));

    /* a file without metadata gives NULL */
    const char *path2 = in_dir("nometa.safetensors");
    CHECK(ttt_save_safetensors(ctx, path2, 1, nt, NULL) == TTT_OK);
    json = (char *)"x";
    CHECK(ttt_load_safetensors(ctx, path2, 1, got, &json) == TTT_OK && json == NULL);
    /* no tensors at all */
    CHECK(ttt_save_safetensors(ctx, path2, 0, NULL, NULL) == TTT_OK);
    CHECK(ttt_load_safetensors(ctx, path2, 0, NULL, &json) == TTT_OK && json == NULL);
    remove(path2);
}

/* f64 file -> f32 target, bf16 -> f32, i32 -> f64 */
static void test_conversion(ttt_ctx *ctx) {
    if (!have_jsonc) return;
    const double v[3] = {0.1, -0.2, 1e10};
    ttt_named_tensor nt[3] = {
        {"w", ttt_from_host(ctx, TTT_F64, TTT_DIMS(3), v)},
        {"b", ttt_cast(ctx, ttt_from_host(ctx, TTT_F32, TTT_DIMS(4), BV), TTT_BF16)},
        {"i", ttt_from_host(ctx, TTT_I32, TTT_DIMS(3), I)},
    };
    const char *path = in_dir("conv.safetensors");
    CHECK(ttt_save_safetensors(ctx, path, 3, nt, NULL) == TTT_OK);
    ttt_named_tensor got[3] = {
        {"w", ttt_zeros(ctx, TTT_F32, TTT_DIMS(3))},
        {"b", ttt_zeros(ctx, TTT_F32, TTT_DIMS(4))},
        {"i", ttt_zeros(ctx, TTT_F64, TTT_DIMS(3))},
    };
    CHECK_MSG(ttt_load_safetensors(ctx, path, 3, got, NULL) == TTT_OK, "%s", ttt_error(ctx));
    float w[3], b[4];
    double i[3];
    ttt_copy_to_host(ctx, got[0].tensor, w, TTT_F32);
    ttt_copy_to_host(ctx, got[1].tensor, b, TTT_F32);
    ttt_copy_to_host(ctx, got[2].tensor, i, TTT_F64);
    for (int k = 0; k < 3; k++) CHECK(w[k] == (float)v[k] && i[k] == I[k]);
    CHECK(!memcmp(b, BV, sizeof b));
    remove(path);
}

static void test_errors(ttt_ctx *ctx) {
    if (!have_jsonc) return;
    ttt_named_tensor nt[N_SET], got[N_SET];
    make_set(ctx, nt);
    const char *path = in_dir("err.safetensors");
    CHECK(ttt_save_safetensors(ctx, path, N_SET, nt, (const char *const[]){"k", "v", NULL}) == TTT_OK);

    /* missing file */
    make_targets(ctx, nt, got);
    const char *none = in_dir("does-not-exist.safetensors");
    CHECK(ttt_load_safetensors(ctx, none, N_SET, got, NULL) == TTT_ERR);
    CHECK_MSG(strstr(ttt_error(ctx), none) && strstr(ttt_error(ctx), "No such file"), "%s", ttt_error(ctx));

    /* every truncation of the file fails cleanly, with or without tensors asked for */
    size_t len = 0;
    unsigned char *full = read_all(path, &len);
    const char *cut = in_dir("cut.safetensors");
    int bad = 0;
    for (size_t n = 0; n < len; n++) {
        CHECK(write_all(cut, full, n) == 0);
        ttt_clear_error(ctx);
        char *json = NULL;
        int rc1 = ttt_load_safetensors(ctx, cut, N_SET, got, &json);
        int msg1 = ttt_error(ctx)[0] != 0;
        ttt_clear_error(ctx);
        int rc0 = ttt_load_safetensors(ctx, cut, 0, NULL, &json);
        int msg0 = ttt_error(ctx)[0] != 0;
        if (rc1 != TTT_ERR || rc0 != TTT_ERR || !msg1 || !msg0 || json) {
            if (!bad++) fprintf(stderr, "cut at %zu bytes: rc %d/%d, \"%s\"\n", n, rc1, rc0, ttt_error(ctx));
        }
        free(json);
    }
    CHECK_MSG(bad == 0, "%d of %zu truncations were accepted", bad, len);
    /* the targets were never touched */
    for (int i = 0; i < N_SET; i++) {
        ttt_tensor *fresh = ttt_full(ctx, nt[i].tensor->dtype, nt[i].tensor->ndim, nt[i].tensor->shape, -1);
        CHECK(same_content(ctx, got[i].tensor, fresh));
    }
    /* messages for a few cut points */
    write_all(cut, full, 5);
    ttt_load_safetensors(ctx, cut, 0, NULL, NULL);
    CHECK_MSG(strstr(ttt_error(ctx), "too short"), "%s", ttt_error(ctx));
    write_all(cut, full, 40);
    ttt_load_safetensors(ctx, cut, 0, NULL, NULL);
    CHECK_MSG(strstr(ttt_error(ctx), "larger than the rest of the file"), "%s", ttt_error(ctx));
    write_all(cut, full, len - 1);
    ttt_load_safetensors(ctx, cut, 0, NULL, NULL);
    CHECK_MSG(strstr(ttt_error(ctx), "run past the data"), "%s", ttt_error(ctx));
    /* corrupt JSON inside an intact frame */
    unsigned char *bent = malloc(len);
    memcpy(bent, full, len);
    unsigned char *q = memchr(bent + 8, ':', len - 8);
    if (q) *q = ';';
    write_all(cut, bent, len);
    ttt_load_safetensors(ctx, cut, 0, NULL, NULL);
    CHECK_MSG(strstr(ttt_error(ctx), "not valid JSON"), "%s", ttt_error(ctx));
    /* an absurd header size */
    memcpy(bent, full, len);
    bent[5] = 1;  /* 2^40 */
    write_all(cut, bent, len);
    ttt_load_safetensors(ctx, cut, 0, NULL, NULL);
    CHECK_MSG(strstr(ttt_error(ctx), "over the 100000000-byte limit"), "%s", ttt_error(ctx));
    free(bent);
    free(full);
    remove(cut);

    /* wrong shape (both shapes named), missing name; nothing written to the targets */
    ttt_named_tensor two[2] = {{"i", ttt_full(ctx, TTT_I32, TTT_DIMS(3), -1)},
                               {NAME_A, ttt_full(ctx, TTT_F32, TTT_DIMS(3, 2), -1)}};
    CHECK(ttt_load_safetensors(ctx, path, 2, two, NULL) == TTT_ERR);
    CHECK_MSG(strstr(ttt_error(ctx), "[2,3]") && strstr(ttt_error(ctx), "[3,2]") && strstr(ttt_error(ctx), path),
              "%s", ttt_error(ctx));
    two[1] = (ttt_named_tensor){"nope", ttt_full(ctx, TTT_F32, TTT_DIMS(3, 2), -1)};
    CHECK(ttt_load_safetensors(ctx, path, 2, two, NULL) == TTT_ERR);
    char want[512];
    snprintf(want, sizeof want, "ttt_load_safetensors: %s: no tensor named 'nope'", path);
    CHECK_MSG(!strcmp(ttt_error(ctx), want), "%s", ttt_error(ctx));
    two[1] = (ttt_named_tensor){"__metadata__", two[1].tensor};
    CHECK(ttt_load_safetensors(ctx, path, 2, two, NULL) == TTT_ERR && strstr(ttt_error(ctx), "no tensor named"));
    CHECK(ttt_item(ctx, ttt_sum(ctx, ttt_cast(ctx, two[0].tensor, TTT_F64), 0, NULL, 0)) == -3);
    /* scalar vs [1] is a shape mismatch too */
    ttt_named_tensor one = {"scalar", ttt_zeros(ctx, TTT_F64, TTT_DIMS(1))};
    CHECK(ttt_load_safetensors(ctx, path, 1, &one, NULL) == TTT_ERR && strstr(ttt_error(ctx), "[] in the file"));
    remove(path);

    /* hand-made headers */
    const float two_f[2] = {1, 2};
    expect_load_error(ctx, "{\"a\":", two_f, 8, "not valid JSON");
    expect_load_error(ctx, "", two_f, 8, "not valid JSON");
    expect_load_error(ctx, "[1,2]", two_f, 8, "not a JSON object");
    expect_load_error(ctx, "{} x", two_f, 8, "data after the JSON object");
    expect_load_error(ctx, "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", two_f, 8, "no dtype");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", two_f, 8, "no shape");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", two_f, 8, "no data_offsets");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F17\",\"shape\":[2],\"data_offsets\":[0,8]}}", two_f, 8,
                      "unknown dtype \"F17\"");
    expect_load_error(ctx, "{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", two_f, 8, "not a string");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", two_f, 8,
                      "run past the data");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", two_f, 8,
                      "needs 8");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", two_f, 8, "reversed");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", two_f, 8,
                      "not an array [begin, end]");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", two_f, 8,
                      "non-negative");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", two_f, 8,
                      "shape[0] is not a non-negative integer");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", two_f, 8,
                      "shape[0] is not a non-negative integer");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", two_f, 8,
                      "shape is not an array");
    expect_load_error(ctx,
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,8]}}",
                      two_f, 8, "too large");
    expect_load_error(ctx, "{\"a\":7}", two_f, 8, "not a JSON object");
    expect_load_error(ctx, "{\"__metadata__\":[],\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      two_f, 8, "__metadata__ is not a JSON object");
    expect_load_error(ctx,
                      "{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                      two_f, 8, "value 'k' is not a string");
    /* a damaged entry fails the load even when it is not asked for */
    expect_load_error(ctx,
                      "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
                      two_f, 8, "tensor 'b'");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", two_f, 8,
                      "dtype F16, which ttt cannot load");
    expect_load_error(ctx, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"\xff\":1}", two_f, 8,
                      "not valid JSON");  /* invalid UTF-8 */

    /* valid but unusual: overlapping entries, an unloadable dtype that is not asked for, extra keys */
    const char *ok = in_dir("ok.safetensors");
    write_st(ok,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":true},"
             "\"alias\":{\"dtype\":\"I32\",\"shape\":[1,2],\"data_offsets\":[0,8]},"
             "\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
             "\"f4\":{\"dtype\":\"F4\",\"shape\":[2,8],\"data_offsets\":[0,8]}}",
             two_f, 8);
    ttt_named_tensor a = {"a", ttt_zeros(ctx, TTT_F32, TTT_DIMS(2))};
    CHECK_MSG(ttt_load_safetensors(ctx, ok, 1, &a, NULL) == TTT_OK, "%s", ttt_error(ctx));
    float av[2];
    ttt_copy_to_host(ctx, a.tensor, av, TTT_F32);
    CHECK(av[0] == 1 && av[1] == 2);
    remove(ok);
}

static void test_save_errors_and_atomicity(ttt_ctx *ctx) {
    ttt_tensor *x = ttt_from_host(ctx, TTT_F32, TTT_DIMS(2, 3), A);
    ttt_tensor *y = ttt_from_host(ctx, TTT_I32, TTT_DIMS(3), I);
    const char *path = in_dir("atomic.safetensors"), *tmp = in_dir("atomic.safetensors.tmp");
    const char *ref = in_dir("ref.safetensors");

    ttt_named_tensor first[1] = {{"x", x}};
    ttt_named_tensor second[2] = {{"y", y}, {"x", x}};
    CHECK(ttt_save_safetensors(ctx, path, 1, first, NULL) == TTT_OK);
    size_t l_old = 0, l_new = 0, l_ref = 0;
    unsigned char *old = read_all(path, &l_old);
    CHECK(write_all(tmp, "stale", 5) == 0);  /* a leftover from a killed run */
    CHECK(ttt_save_safetensors(ctx, path, 2, second, (const char *const[]){"v", "2", NULL}) == TTT_OK);
    CHECK(!exists(tmp));
    CHECK(ttt_save_safetensors(ctx, ref, 2, second, (const char *const[]){"v", "2", NULL}) == TTT_OK);
    unsigned char *now = read_all(path, &l_new), *want = read_all(ref, &l_ref);
    CHECK(now && want && l_new == l_ref && !memcmp(now, want, l_new));
    CHECK(l_new != l_old || memcmp(now, old, l_new));
    free(old);
    free(now);
    free(want);
    remove(ref);
    if (have_jsonc) {
        ttt_named_tensor back = {"y", ttt_zeros(ctx, TTT_I32, TTT_DIMS(3))};
        char *json = NULL, v[8];
        CHECK(ttt_load_safetensors(ctx, path, 1, &back, &json) == TTT_OK);
        CHECK(ttt_metadata_get(json, "v", v, sizeof v) == TTT_OK && !strcmp(v, "2"));
        CHECK(same_content(ctx, back.tensor, y));
        free(json);
    }

    /* refused saves leave the old file and no tmp */
    size_t l_before = 0, l_after = 0;
    unsigned char *before = read_all(path, &l_before);
    ttt_named_tensor dup[2] = {{"x", x}, {"x", y}};
    CHECK(ttt_save_safetensors(ctx, path, 2, dup, NULL) == TTT_ERR &&
          strstr(ttt_error(ctx), "duplicate tensor name 'x'"));
    ttt_named_tensor empty[1] = {{"", x}};
    CHECK(ttt_save_safetensors(ctx, path, 1, empty, NULL) == TTT_ERR && strstr(ttt_error(ctx), "empty name"));
    ttt_named_tensor noname[1] = {{NULL, x}};
    CHECK(ttt_save_safetensors(ctx, path, 1, noname, NULL) == TTT_ERR);
    ttt_named_tensor reserved[1] = {{"__metadata__", x}};
    CHECK(ttt_save_safetensors(ctx, path, 1, reserved, NULL) == TTT_ERR && strstr(ttt_error(ctx), "reserved"));
    ttt_named_tensor badutf[1] = {{"\xc3(", x}};
    CHECK(ttt_save_safetensors(ctx, path, 1, badutf, NULL) == TTT_ERR && strstr(ttt_error(ctx), "UTF-8"));
    ttt_named_tensor nul[1] = {{"x", NULL}};
    CHECK(ttt_save_safetensors(ctx, path, 1, nul, NULL) == TTT_ERR);
    CHECK(ttt_save_safetensors(ctx, path, 1, first, (const char *const[]){"k", NULL}) == TTT_ERR &&
          strstr(ttt_error(ctx), "no value"));
    CHECK(ttt_save_safetensors(ctx, path, 1, first, (const char *const[]){"k", "1", "k", "2", NULL}) == TTT_ERR &&
          strstr(ttt_error(ctx), "duplicate metadata key"));
    CHECK(ttt_save_safetensors(ctx, path, -1, first, NULL) == TTT_ERR);
    unsigned char *after = read_all(path, &l_after);
    CHECK(before && after && l_before == l_after && !memcmp(before, after, l_after));
    CHECK(!exists(tmp));
    free(before);
    free(after);
    remove(path);

    /* a directory that does not exist */
    const char *nodir = in_dir("no/such/dir/x.safetensors");
    CHECK(ttt_save_safetensors(ctx, nodir, 1, first, NULL) == TTT_ERR);
    char want_msg[512];
    snprintf(want_msg, sizeof want_msg, "ttt_save_safetensors: %s: No such file or directory", nodir);
    CHECK_MSG(!strcmp(ttt_error(ctx), want_msg), "%s", ttt_error(ctx));

    /* a failure after the tmp file was written (the rename: PATH is a non-empty
     * directory) removes the tmp file */
    const char *sub = in_dir("sub"), *inner = in_dir("sub/keep");
    CHECK(mkdir(sub, 0700) == 0 && write_all(inner, "k", 1) == 0);
    CHECK(ttt_save_safetensors(ctx, sub, 1, first, NULL) == TTT_ERR);
    CHECK_MSG(strstr(ttt_error(ctx), "ttt_save_safetensors: ") && strstr(ttt_error(ctx), sub), "%s", ttt_error(ctx));
    CHECK(!exists(in_dir("sub.tmp")));
    remove(inner);
    rmdir(sub);
}

/* Device tensors are copied to the host on save and uploaded on load; a file
 * written from the GPU reads back on the CPU and vice versa. */
static void test_cuda(ttt_ctx *cpu) {
#ifdef TTT_HAVE_CUDA
    ttt_ctx *gpu = ttt_ctx_new(&(ttt_ctx_config){.device = TTT_CUDA});
    ttt_tensor *probe = gpu ? ttt_zeros(gpu, TTT_F32, TTT_DIMS(1)) : NULL;
    if (!probe) {
        printf("device tensors: SKIPPED (no usable CUDA device)\n");
        ttt_ctx_free(gpu);
        return;
    }
    ttt_named_tensor g[N_SET], c[N_SET], back[N_SET];
    make_set(gpu, g);
    make_set(cpu, c);
    const char *path = in_dir("gpu.safetensors"), *ref = in_dir("cpu.safetensors");
    CHECK_MSG(ttt_save_safetensors(gpu, path, N_SET, g, NULL) == TTT_OK, "%s", ttt_error(gpu));
    CHECK(ttt_save_safetensors(cpu, ref, N_SET, c, NULL) == TTT_OK);
    size_t lg = 0, lc = 0;
    unsigned char *pg = read_all(path, &lg), *pc = read_all(ref, &lc);
    CHECK_MSG(pg && pc && lg == lc && !memcmp(pg, pc, lg), "the GPU and CPU files differ");
    free(pg);
    free(pc);
    if (have_jsonc) {
        make_targets(gpu, g, back);
        back[2].tensor = ttt_zeros(gpu, TTT_F32, TTT_DIMS(5));  /* f64 file -> f32 device tensor */
        CHECK_MSG(ttt_load_safetensors(gpu, ref, N_SET, back, NULL) == TTT_OK, "%s", ttt_error(gpu));
        for (int i = 0; i < N_SET; i++)
            if (i != 2) CHECK_MSG(same_content(gpu, back[i].tensor, g[i].tensor), "device tensor %d", i);
        ttt_named_tensor on_cpu = {"d", ttt_zeros(cpu, TTT_F32, TTT_DIMS(5))};
        CHECK(ttt_load_safetensors(cpu, ref, 1, &on_cpu, NULL) == TTT_OK);
        float d[5], dc[5];
        ttt_copy_to_host(gpu, back[2].tensor, d, TTT_F32);
        ttt_copy_to_host(cpu, on_cpu.tensor, dc, TTT_F32);
        CHECK(!memcmp(d, dc, sizeof d) && d[1] == (float)D[1]);
        printf("device tensors: saved from and loaded into CUDA tensors\n");
    }
    remove(path);
    remove(ref);
    ttt_ctx_free(gpu);
#else
    (void)cpu;
#endif
}

/* ---- the reference implementation, when python3 has it ---------------------------------------- */

static const char *PY_CHECK =
    "import sys, struct\n"
    "import numpy as np\n"
    "from safetensors import safe_open, deserialize\n"
    "from safetensors.numpy import load_file, save_file\n"
    "path, out = sys.argv[1], sys.argv[2]\n"
    "t = dict(deserialize(open(path, 'rb').read()))\n"
    "A, U = 'layer.0/w\"q\\\\\\n', '\\u00e9chelle'\n"
    "assert set(t) == {A, 'mt', 'd', U, 'i', 'scalar', 'empty'}, sorted(t)\n"
    "def arr(name, dt):\n"
    "    e = t[name]\n"
    "    return np.frombuffer(e['data'], dtype=dt).reshape(e['shape'])\n"
    "assert (arr(A, '<f4') == np.array([[-2, -0.5, 1], [2.5, 4, 5.5]], 'f4')).all()\n"
    "assert (arr('mt', '<f4') == np.arange(12, dtype='f4').reshape(3, 4).T).all()\n"
    "assert arr('d', '<f8').tolist() == [1/3, 3.141592653589793, -1e300, 5e-324, 0.0]\n"
    "bf = (arr(U, '<u2').astype('<u4') << 16).view('<f4')\n"
    "assert t[U]['dtype'] in ('BF16', 'bfloat16'), t[U]['dtype']\n"
    "assert bf.tolist() == [[1, -2.5], [0.15625, 256]], bf\n"
    "assert arr('i', '<i4').tolist() == [-7, 0, 2147483647]\n"
    "assert t['scalar']['shape'] == [] and arr('scalar', '<f8').item() == 42.5\n"
    "assert t['empty']['shape'] == [2, 0]\n"
    "with safe_open(path, 'np') as f:\n"
    "    m = f.metadata()\n"
    "    assert m['format'] == 'ttt/1', m\n"
    "    assert m['note'] == 'quote \" backslash \\\\ newline \\n tab \\t ctrl \\x01 \\u00e9 end', m\n"
    "    assert f.get_tensor('d').dtype == np.float64\n"
    "save_file({'w': np.arange(6, dtype='<f8').reshape(2, 3) / 4, 'n': np.array([5, -6], '<i4')},\n"
    "          out, metadata={'from': 'python'})\n"
    "print('python cross-check: reference library read our file')\n";

static void test_python(ttt_ctx *ctx) {
    fflush(stdout);
    if (system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") != 0) {
        printf("python cross-check: SKIPPED (python3 with safetensors and numpy not available)\n");
        return;
    }
    ttt_named_tensor nt[N_SET];
    make_set(ctx, nt);
    const char *meta[] = {"format", "ttt/1", "note", NOTE, NULL};
    const char *path = in_dir("py.safetensors"), *script = in_dir("check.py"), *out = in_dir("from_py.safetensors");
    CHECK(ttt_save_safetensors(ctx, path, N_SET, nt, meta) == TTT_OK);
    CHECK(write_all(script, PY_CHECK, strlen(PY_CHECK)) == 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s' '%s'", script, path, out);
    CHECK_MSG(system(cmd) == 0, "the reference library rejected %s", path);
    /* and the other way: read the file python wrote */
    if (have_jsonc && exists(out)) {
        ttt_named_tensor got[2] = {{"w", ttt_zeros(ctx, TTT_F32, TTT_DIMS(2, 3))},
                                   {"n", ttt_zeros(ctx, TTT_I32, TTT_DIMS(2))}};
        char *json = NULL, v[16];
        CHECK_MSG(ttt_load_safetensors(ctx, out, 2, got, &json) == TTT_OK, "%s", ttt_error(ctx));
        CHECK(ttt_metadata_get(json, "from", v, sizeof v) == TTT_OK && !strcmp(v, "python"));
        float w[6];
        int32_t n[2];
        ttt_copy_to_host(ctx, got[0].tensor, w, TTT_F32);
        ttt_copy_to_host(ctx, got[1].tensor, n, TTT_I32);
        for (int k = 0; k < 6; k++) CHECK(w[k] == k / 4.0f);
        CHECK(n[0] == 5 && n[1] == -6);
        free(json);
        printf("python cross-check: ttt read the reference library's file\n");
    }
    remove(path);
    remove(script);
    remove(out);
}

/* ---- checksums: every tensor's, in the metadata; a damaged byte is refused naming the tensor ------ */

static void test_checksums(ttt_ctx *ctx) {
    const char *path = in_dir("sum.safetensors");
    const float w[5] = {1, 2, 3, 4, 5};
    const int32_t k[3] = {1, 2, 3};
    ttt_named_tensor nt[2] = {{"w", ttt_from_host(ctx, TTT_F32, TTT_DIMS(5), w)},
                              {"k", ttt_from_host(ctx, TTT_I32, TTT_DIMS(3), k)}};
    const char *meta[] = {"note", "x", NULL};
    CHECK(ttt_save_safetensors(ctx, path, 2, nt, meta) == TTT_OK);
    char *json = NULL, *file = NULL, err[256], buf[64];
    size_t len = 0;
    ttt_named_tensor got[2] = {{"w", ttt_zeros(ctx, TTT_F32, TTT_DIMS(5))}, {"k", ttt_zeros(ctx, TTT_I32, TTT_DIMS(3))}};
    CHECK(ttt_load_safetensors(ctx, path, 2, got, &json) == TTT_OK);
    /* the caller's metadata comes back without the checksums */
    CHECK(json && ttt_metadata_get(json, "note", buf, sizeof buf) == TTT_OK && !strstr(json, "ttt.checksum."));
    free(json);
    CHECK(ttt_read_file(path, &file, &len, err, sizeof err) == TTT_OK && strstr(file + 8, "\"ttt.checksum.w\":\""));
    /* every byte of the data: changed, the load fails naming the tensor it belongs to */
    const size_t data = len - sizeof w - sizeof k;
    int named = 0;
    for (size_t at = data; at < len; at++) {
        file[at] ^= 0x01;
        CHECK(write_all(path, file, len) == 0);
        ttt_clear_error(ctx);
        const char *want = at < data + sizeof w ? "tensor 'w'" : "tensor 'k'";
        named += ttt_load_safetensors(ctx, path, 2, got, NULL) == TTT_ERR && strstr(ttt_error(ctx), want) &&
                 strstr(ttt_error(ctx), "checksum");
        file[at] ^= 0x01;
    }
    CHECK_MSG(named == (int)(len - data), "%d of %zu damaged bytes were refused naming the tensor", named, len - data);
    /* a checksum that is not 16 hex digits, or for a tensor the file does not hold */
    char *q = strstr(file + 8, "\"ttt.checksum.w\":\"") + strlen("\"ttt.checksum.w\":\"");
    const char saved = q[3];
    q[3] = 'g';
    CHECK(write_all(path, file, len) == 0);
    CHECK(ttt_load_safetensors(ctx, path, 0, NULL, NULL) == TTT_ERR && strstr(ttt_error(ctx), "not 16 hex digits"));
    q[3] = saved;
    q = strstr(file + 8, "\"ttt.checksum.w\"");
    q[14] = 'z';
    CHECK(write_all(path, file, len) == 0);
    CHECK(ttt_load_safetensors(ctx, path, 0, NULL, NULL) == TTT_ERR && strstr(ttt_error(ctx), "'z', which the file does not hold"));
    free(file);
    /* the key prefix is reserved */
    const char *bad_meta[] = {"ttt.checksum.w", "0", NULL};
    CHECK(ttt_save_safetensors(ctx, path, 2, nt, bad_meta) == TTT_ERR && strstr(ttt_error(ctx), "reserved"));
    remove(path);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s", "/tmp/test_checkpoint_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    test_round_trip(ctx);
    ttt_step_reset(ctx);
    test_conversion(ctx);
    ttt_step_reset(ctx);
    test_errors(ctx);
    ttt_step_reset(ctx);
    test_save_errors_and_atomicity(ctx);
    ttt_step_reset(ctx);
    test_cuda(ctx);
    ttt_step_reset(ctx);
    test_python(ctx);
    ttt_step_reset(ctx);
    test_checksums(ctx);
    ttt_ctx_free(ctx);
    remove(in_dir("set.safetensors"));
    CHECK_MSG(rmdir(dir) == 0, "%s is not empty", dir);
    TEST_MAIN_END();
}
