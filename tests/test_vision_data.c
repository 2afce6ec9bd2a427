/* IDX reader (gzipped and plain, every malformed-file error) and vision tokens
 * (patches, pixels, upsampling, normalisation); the real Fashion-MNIST files
 * when they are installed. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "ttt/data.h"
#include "ttt/io.h"
#include "ttt/ttt.h"

static char dir[64];

static const char *path_in(const char *name) {
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Writes header bytes then data, gzipped or plain. */
static void write_file(const char *name, int gz, const uint8_t *head, size_t hn, const uint8_t *data, size_t dn) {
    const char *p = path_in(name);
    if (gz) {
        gzFile f = gzopen(p, "wb");
        CHECK(f != NULL);
        if (!f) return;
        if (hn) CHECK(gzwrite(f, head, (unsigned)hn) == (int)hn);
        if (dn) CHECK(gzwrite(f, data, (unsigned)dn) == (int)dn);
        CHECK(gzclose(f) == Z_OK);
    } else {
        FILE *f = fopen(p, "wb");
        CHECK(f != NULL);
        if (!f) return;
        if (hn) CHECK(fwrite(head, 1, hn, f) == hn);
        if (dn) CHECK(fwrite(data, 1, dn, f) == dn);
        CHECK(fclose(f) == 0);
    }
}

/* An unsigned-byte IDX header for ndim dims. */
static size_t idx_head(uint8_t *h, int ndim, const uint32_t *dims) {
    h[0] = h[1] = 0;
    h[2] = 0x08;
    h[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++)
        for (int k = 0; k < 4; k++) h[4 + 4 * i + k] = (uint8_t)(dims[i] >> (24 - 8 * k));
    return 4 + 4 * (size_t)ndim;
}

/* Loading NAME fails and the message contains every one of the words. */
static void expect_error(const char *name, const char *w1, const char *w2) {
    ttt_idx x;
    char err[512] = "";
    int rc = ttt_idx_load(path_in(name), &x, err, sizeof err);
    CHECK_MSG(rc == TTT_ERR && x.data == NULL && x.ndim == 0, "%s loaded", name);
    CHECK_MSG(strstr(err, name) && strstr(err, w1) && (!w2 || strstr(err, w2)), "%s: message \"%s\"", name, err);
}

static double norm(int p) { return (p / 255.0 - TTT_FASHION_MNIST_MEAN) / TTT_FASHION_MNIST_STD; }

static void test_idx(void) {
    /* round trip: [2,3,4] gzipped, with trailing garbage that must be ignored */
    uint8_t head[20], data[24 + 5];
    for (int i = 0; i < 29; i++) data[i] = (uint8_t)(i * 7 + 1);
    size_t hn = idx_head(head, 3, (const uint32_t[]){2, 3, 4});
    write_file("a.gz", 1, head, hn, data, sizeof data);
    ttt_idx x;
    char err[512] = "";
    CHECK_MSG(ttt_idx_load(path_in("a.gz"), &x, err, sizeof err) == TTT_OK, "%s", err);
    CHECK(x.ndim == 3 && x.dims[0] == 2 && x.dims[1] == 3 && x.dims[2] == 4 && ttt_idx_count(&x) == 24);
    CHECK(x.data && !memcmp(x.data, data, 24));
    ttt_idx_free(&x);
    CHECK(x.data == NULL && x.ndim == 0);

    /* a plain file passes through gzread; 1-d and 4-d */
    hn = idx_head(head, 1, (const uint32_t[]){5});
    write_file("plain", 0, head, hn, data, 5);
    CHECK_MSG(ttt_idx_load(path_in("plain"), &x, err, sizeof err) == TTT_OK, "%s", err);
    CHECK(x.ndim == 1 && x.dims[0] == 5 && !memcmp(x.data, data, 5));
    ttt_idx_free(&x);
    hn = idx_head(head, 4, (const uint32_t[]){1, 2, 3, 4});
    write_file("four", 0, head, hn, data, 24);
    CHECK_MSG(ttt_idx_load(path_in("four"), &x, err, sizeof err) == TTT_OK, "%s", err);
    CHECK(x.ndim == 4 && x.dims[3] == 4 && !memcmp(x.data, data, 24));
    ttt_idx_free(&x);

    /* malformed files */
    hn = idx_head(head, 1, (const uint32_t[]){5});
    head[0] = 1;
    write_file("magic.gz", 1, head, hn, data, 5);
    expect_error("magic.gz", "bad magic", "not an IDX file");
    hn = idx_head(head, 1, (const uint32_t[]){5});
    head[2] = 0x0D;  /* float data */
    write_file("type.gz", 1, head, hn, data, 5);
    expect_error("type.gz", "unsupported IDX type 0x0d", "0x08");
    hn = idx_head(head, 0, NULL);
    write_file("ndim0.gz", 1, head, hn, data, 5);
    expect_error("ndim0.gz", "ndim 0", "1..4");
    hn = idx_head(head, 1, (const uint32_t[]){5});
    head[3] = 5;
    write_file("ndim5", 0, head, hn, data, 5);
    expect_error("ndim5", "ndim 5", NULL);
    hn = idx_head(head, 2, (const uint32_t[]){3, 0});
    write_file("zero.gz", 1, head, hn, data, 5);
    expect_error("zero.gz", "dimension 1", "is 0");
    hn = idx_head(head, 4, (const uint32_t[]){0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 2});
    write_file("overflow.gz", 1, head, hn, data, 5);
    expect_error("overflow.gz", "overflow", NULL);
    hn = idx_head(head, 2, (const uint32_t[]){2, 3});
    write_file("short.gz", 1, head, hn, data, 4);
    expect_error("short.gz", "truncated: expected 6 bytes of data, got 4", NULL);
    write_file("short", 0, head, hn, data, 4);
    expect_error("short", "truncated: expected 6 bytes of data, got 4", NULL);
    /* a huge header on a tiny file must fail as truncated, not allocate it all */
    hn = idx_head(head, 3, (const uint32_t[]){60000, 60000, 28});
    write_file("liar.gz", 1, head, hn, data, 4);
    expect_error("liar.gz", "truncated", "got 4");
    write_file("headonly.gz", 1, head, 6, NULL, 0);
    expect_error("headonly.gz", "truncated", "dimensions");
    write_file("empty", 0, NULL, 0, NULL, 0);
    expect_error("empty", "truncated", "header");
    expect_error("missing.gz", "cannot open", "No such file");

    /* a gzip stream cut in the middle */
    uint8_t big[4096];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 2654435761u >> 13);
    hn = idx_head(head, 1, (const uint32_t[]){sizeof big});
    write_file("cut.gz", 1, head, hn, big, sizeof big);
    FILE *f = fopen(path_in("cut.gz"), "rb");
    uint8_t gzbytes[8192];
    size_t gn = f ? fread(gzbytes, 1, sizeof gzbytes, f) : 0;
    if (f) fclose(f);
    write_file("cut.gz", 0, gzbytes, gn / 2, NULL, 0);
    expect_error("cut.gz", "truncated", NULL);
}

static void test_fashion_fake(void) {
    /* a tiny fake Fashion-MNIST: 3 test images */
    uint8_t head[20], img[3 * 28 * 28] = {0}, lab[3] = {0, 9, 4};
    size_t hn = idx_head(head, 3, (const uint32_t[]){3, 28, 28});
    write_file("t10k-images-idx3-ubyte.gz", 1, head, hn, img, sizeof img);
    hn = idx_head(head, 1, (const uint32_t[]){3});
    write_file("t10k-labels-idx1-ubyte.gz", 1, head, hn, lab, 3);
    ttt_idx im, lb;
    char err[512] = "";
    CHECK_MSG(ttt_fashion_mnist_load(dir, 0, &im, &lb, err, sizeof err) == TTT_OK, "%s", err);
    CHECK(im.dims[0] == 3 && lb.dims[0] == 3 && lb.data[1] == 9);
    ttt_idx_free(&im);
    ttt_idx_free(&lb);
    CHECK(ttt_fashion_mnist_load(dir, 1, &im, &lb, err, sizeof err) == TTT_ERR);
    CHECK_MSG(strstr(err, "train-images-idx3-ubyte.gz") && strstr(err, "cannot open"), "%s", err);
    lab[2] = 10;
    write_file("t10k-labels-idx1-ubyte.gz", 1, head, hn, lab, 3);
    CHECK(ttt_fashion_mnist_load(dir, 0, &im, &lb, err, sizeof err) == TTT_ERR && !im.data && !lb.data);
    CHECK_MSG(strstr(err, "label 2 is 10"), "%s", err);
    hn = idx_head(head, 1, (const uint32_t[]){2});
    write_file("t10k-labels-idx1-ubyte.gz", 1, head, hn, lab, 2);
    CHECK(ttt_fashion_mnist_load(dir, 0, &im, &lb, err, sizeof err) == TTT_ERR);
    CHECK_MSG(strstr(err, "2 labels") && strstr(err, "3 images"), "%s", err);
}

static void test_tokens(ttt_ctx *ctx) {
    /* two 4x4 images: image 0 is p = 17 * (4y + x), image 1 its reverse */
    uint8_t pix[32];
    for (int i = 0; i < 16; i++) pix[i] = (uint8_t)(17 * i), pix[16 + i] = (uint8_t)(17 * (15 - i));
    ttt_idx im = {3, {2, 4, 4, 0}, pix};
    const int64_t order[2] = {1, 0};

    /* P = 2: 4 patches of 4 values; batch taken in the order {1, 0} */
    ttt_tensor *t = ttt_vision_tokens(ctx, &im, order, 2, 2, 1, TTT_F32);
    CHECK_MSG(t && t->dtype == TTT_F32 && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 4 && t->shape[2] == 4,
              "%s", ttt_error(ctx));
    float got[2 * 64];
    const int patch_src[4][4] = {{0, 1, 4, 5}, {2, 3, 6, 7}, {8, 9, 12, 13}, {10, 11, 14, 15}};
    if (t) {
        ttt_copy_to_host(ctx, t, got, TTT_F32);
        int exact = 1;
        for (int b = 0; b < 2; b++)
            for (int k = 0; k < 4; k++)
                for (int f = 0; f < 4; f++)
                    exact &= got[(b * 4 + k) * 4 + f] == (float)norm(pix[16 * order[b] + patch_src[k][f]]);
        CHECK(exact);
        CHECK_NEAR(got[4 * 4 + 0], (0 - 0.2860) / 0.3530, 1e-6);  /* image 0, first pixel: 0 */
        CHECK_NEAR(got[4 * 4 + 15], (1 - 0.2860) / 0.3530, 1e-6); /* image 0, last pixel: 255 */
    }

    /* pixels: [1, 16, 1] in row-major order */
    t = ttt_vision_tokens(ctx, &im, NULL, 1, 0, 0, TTT_F32);
    CHECK_MSG(t && t->shape[0] == 1 && t->shape[1] == 16 && t->shape[2] == 1, "%s", ttt_error(ctx));
    if (t) {
        ttt_copy_to_host(ctx, t, got, TTT_F32);
        int exact = 1;
        for (int i = 0; i < 16; i++) exact &= got[i] == (float)norm(pix[i]);
        CHECK(exact);
    }
    /* upsampling by 2: [1, 64, 1], pixel (y, x) copies (y/2, x/2) */
    t = ttt_vision_tokens(ctx, &im, (const int64_t[]){1}, 1, 0, 2, TTT_F32);
    CHECK_MSG(t && t->shape[1] == 64 && t->shape[2] == 1, "%s", ttt_error(ctx));
    if (t) {
        ttt_copy_to_host(ctx, t, got, TTT_F32);
        int exact = 1;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) exact &= got[y * 8 + x] == (float)norm(pix[16 + (y / 2) * 4 + x / 2]);
        CHECK(exact);
    }
    /* upsampling then 4x4 patches: each patch is one 2x2 block of the source, enlarged */
    t = ttt_vision_tokens(ctx, &im, NULL, 1, 4, 2, TTT_F64);
    CHECK_MSG(t && t->dtype == TTT_F64 && t->shape[1] == 4 && t->shape[2] == 16, "%s", ttt_error(ctx));
    if (t) {
        double d[64];
        ttt_copy_to_host(ctx, t, d, TTT_F64);
        CHECK(d[1 * 16 + 0] == norm(pix[2]) && d[1 * 16 + 15] == norm(pix[7]) && d[3 * 16 + 5] == norm(pix[10]));
    }
    /* bf16 */
    t = ttt_vision_tokens(ctx, &im, NULL, 2, 2, 1, TTT_BF16);
    CHECK_MSG(t && t->dtype == TTT_BF16, "%s", ttt_error(ctx));
    if (t) {
        ttt_copy_to_host(ctx, t, got, TTT_F32);
        CHECK(got[5] == ttt_bf16_to_f32(ttt_f32_to_bf16((float)norm(pix[patch_src[1][1]]))));
    }

    /* argument errors */
    ttt_clear_error(ctx);
    CHECK(!ttt_vision_tokens(ctx, &im, NULL, 2, 3, 1, TTT_F32));
    CHECK_MSG(strstr(ttt_error(ctx), "patch size 3 does not divide"), "%s", ttt_error(ctx));
    t = ttt_vision_tokens(ctx, &im, NULL, 1, 3, 3, TTT_F32); /* upsampled to 12x12, which 3 divides */
    CHECK_MSG(t && t->shape[1] == 16 && t->shape[2] == 9, "%s", ttt_error(ctx));
    CHECK(!ttt_vision_tokens(ctx, &im, NULL, 2, -1, 1, TTT_F32));
    CHECK(!ttt_vision_tokens(ctx, &im, NULL, 2, 2, 1, TTT_I32));
    CHECK_MSG(strstr(ttt_error(ctx), "not a float type"), "%s", ttt_error(ctx));
    CHECK(!ttt_vision_tokens(ctx, &im, (const int64_t[]){0, 2}, 2, 2, 1, TTT_F32));
    CHECK_MSG(strstr(ttt_error(ctx), "indices[1] = 2 is out of range"), "%s", ttt_error(ctx));
    CHECK(!ttt_vision_tokens(ctx, &im, NULL, 3, 2, 1, TTT_F32));
    CHECK(!ttt_vision_tokens(ctx, &im, NULL, 0, 2, 1, TTT_F32));
    CHECK(!ttt_vision_tokens(ctx, &im, NULL, 1, 0, 1 << 30, TTT_F32));
    CHECK_MSG(strstr(ttt_error(ctx), "too large"), "%s", ttt_error(ctx));
    ttt_idx flat = {1, {32, 0, 0, 0}, pix};
    CHECK(!ttt_vision_tokens(ctx, &flat, NULL, 1, 0, 1, TTT_F32));

    /* labels */
    uint8_t lab[3] = {7, 0, 9};
    ttt_idx lb = {1, {3, 0, 0, 0}, lab};
    t = ttt_vision_labels(ctx, &lb, (const int64_t[]){2, 0, 2, 1}, 4);
    CHECK_MSG(t && t->dtype == TTT_I32 && t->ndim == 1 && t->shape[0] == 4, "%s", ttt_error(ctx));
    if (t) {
        int32_t l[4];
        ttt_copy_to_host(ctx, t, l, TTT_I32);
        CHECK(l[0] == 9 && l[1] == 7 && l[2] == 9 && l[3] == 0);
    }
    CHECK(!ttt_vision_labels(ctx, &lb, (const int64_t[]){-1}, 1));
    CHECK(!ttt_vision_labels(ctx, &im, NULL, 1));

    /* staging goes through a released mark: steady-state batches allocate no arena blocks */
    ttt_step_reset(ctx);
    (void)ttt_vision_tokens(ctx, &im, NULL, 2, 2, 2, TTT_F32);
    ttt_step_reset(ctx);
    uint64_t blocks = ttt_arena_block_allocs(ctx);
    for (int i = 0; i < 10; i++) {
        CHECK(ttt_vision_tokens(ctx, &im, NULL, 2, 2, 2, TTT_F32) && ttt_vision_labels(ctx, &lb, NULL, 3));
        ttt_step_reset(ctx);
    }
    CHECK(ttt_arena_block_allocs(ctx) == blocks);
}

static void test_real(ttt_ctx *ctx) {
    if (access(TTT_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("note: %s not installed (Debian package dataset-fashion-mnist); skipping the real-data checks\n",
               TTT_FASHION_MNIST_DIR);
        return;
    }
    for (int train = 1; train >= 0; train--) {
        ttt_idx im, lb;
        char err[512] = "";
        int rc = ttt_fashion_mnist_load(NULL, train, &im, &lb, err, sizeof err);
        CHECK_MSG(rc == TTT_OK, "%s", err);
        if (rc != TTT_OK) continue;
        const int64_t n = train ? 60000 : 10000;
        CHECK(im.ndim == 3 && im.dims[0] == n && im.dims[1] == 28 && im.dims[2] == 28);
        CHECK(lb.ndim == 1 && lb.dims[0] == n);
        int64_t count[10] = {0};
        for (int64_t i = 0; i < n; i++) count[lb.data[i]]++;
        for (int c = 0; c < 10; c++) CHECK_MSG(count[c] == n / 10, "class %d: %lld", c, (long long)count[c]);
        if (train) {
            /* the normalisation constants are this split's pixel mean and std */
            double s = 0, s2 = 0;
            for (int64_t i = 0; i < n * 784; i++) {
                double v = im.data[i] / 255.0;
                s += v;
                s2 += v * v;
            }
            double mean = s / (n * 784), sd = sqrt(s2 / (n * 784) - mean * mean);
            CHECK_NEAR(mean, TTT_FASHION_MNIST_MEAN, 5e-4);
            CHECK_NEAR(sd, TTT_FASHION_MNIST_STD, 5e-4);
        }
        int64_t idx[4] = {0, n - 1, 17, 4242};
        ttt_tensor *p = ttt_vision_tokens(ctx, &im, idx, 4, 4, 1, TTT_F32);
        ttt_tensor *q = ttt_vision_tokens(ctx, &im, idx, 4, 0, 2, TTT_F32);
        ttt_tensor *l = ttt_vision_labels(ctx, &lb, idx, 4);
        CHECK_MSG(p && p->shape[1] == 49 && p->shape[2] == 16, "%s", ttt_error(ctx));
        CHECK_MSG(q && q->shape[1] == 3136 && q->shape[2] == 1, "%s", ttt_error(ctx));
        CHECK_MSG(l && l->shape[0] == 4, "%s", ttt_error(ctx));
        ttt_step_reset(ctx);
        ttt_idx_free(&im);
        ttt_idx_free(&lb);
    }
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ttt_vision_XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    ttt_ctx *ctx = ttt_ctx_new(NULL);
    test_idx();
    test_fashion_fake();
    test_tokens(ctx);
    test_real(ctx);
    ttt_ctx_free(ctx);

    const char *files[] = {"a.gz", "plain", "four", "magic.gz", "type.gz", "ndim0.gz", "ndim5", "zero.gz",
                           "overflow.gz", "short.gz", "short", "liar.gz", "headonly.gz", "empty", "cut.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) remove(path_in(files[i]));
    CHECK(rmdir(dir) == 0);
    TEST_MAIN_END();
}
