/* Image batches -> token tensors for ViT-style models; see include/ttt/data.h. */
#include "../core/engine_private.h"
#include "ttt/data.h"

/* *out = a * b, or 0 when it would overflow int64 (a, b > 0). */
static int mul_ok(int64_t a, int64_t b, int64_t *out) {
    if (a > INT64_MAX / b) return 0;
    *out = a * b;
    return 1;
}

static void put(void *buf, ttt_dtype dt, int64_t i, double v) {
    switch (dt) {
    case TTT_F32: ((float *)buf)[i] = (float)v; break;
    case TTT_F64: ((double *)buf)[i] = v; break;
    case TTT_BF16: ((uint16_t *)buf)[i] = ttt_f32_to_bf16((float)v); break;
    default: break;  /* rejected by the caller */
    }
}

static int check_indices(ttt_ctx *ctx, const char *op, const int64_t *indices, int64_t batch, int64_t n) {
    if (batch < 1) return ttt__set_error(ctx, "%s: batch %lld must be >= 1", op, (long long)batch);
    if (!indices && batch > n)
        return ttt__set_error(ctx, "%s: batch %lld without indices needs that many examples, have %lld", op,
                              (long long)batch, (long long)n);
    for (int64_t b = 0; indices && b < batch; b++)
        if (indices[b] < 0 || indices[b] >= n)
            return ttt__set_error(ctx, "%s: indices[%lld] = %lld is out of range [0, %lld)", op, (long long)b,
                                  (long long)indices[b], (long long)n);
    return TTT_OK;
}

/* Allocates out first and stages host data after a mark, so releasing the
 * mark frees the staging buffer but keeps out, and steady-state steps do
 * not malloc. fill(stage) writes the dense contents in out's dtype. */
typedef void (*fill_fn)(void *stage, const void *arg);

static ttt_tensor *make(ttt_ctx *ctx, const char *op, ttt_dtype dt, int ndim, const int64_t *shape, fill_fn fill,
                        const void *arg) {
    ttt_tensor *out = ttt_new(ctx, dt, ndim, shape);
    if (!out) return NULL;
    size_t bytes = (size_t)ttt_numel(out) * ttt_dtype_size(dt);
    ttt_mark_t m = ttt_mark(ctx);
    void *stage = ttt__meta_alloc(ctx, bytes);
    int ok = stage != NULL;
    if (ok) {
        fill(stage, arg);
        ok = ttt__upload(ctx, op, out, stage, bytes) == TTT_OK;
    }
    ttt_release(ctx, m);
    return ok ? out : NULL;
}

/* ---- tokens --------------------------------------------------------------------- */

typedef struct {
    const ttt_idx *images;
    const int64_t *indices;
    int64_t batch, patch, up, ntok;
    ttt_dtype dt;
} tokens_job;

static void fill_tokens(void *stage, const void *arg) {
    const tokens_job *j = arg;
    const int64_t H = j->images->dims[1], W = j->images->dims[2], P = j->patch, U = j->up;
    const int64_t grid_w = W * U / P, feat = P * P;
    double lut[256];  /* normalised value of each byte */
    for (int p = 0; p < 256; p++) lut[p] = (p / 255.0 - TTT_FASHION_MNIST_MEAN) / TTT_FASHION_MNIST_STD;
    int64_t o = 0;
    for (int64_t b = 0; b < j->batch; b++) {
        const uint8_t *img = j->images->data + (j->indices ? j->indices[b] : b) * H * W;
        for (int64_t t = 0; t < j->ntok; t++) {
            int64_t y0 = t / grid_w * P, x0 = t % grid_w * P;  /* top-left of the patch, enlarged image */
            for (int64_t i = 0; i < feat; i++) {
                int64_t y = (y0 + i / P) / U, x = (x0 + i % P) / U;  /* nearest source pixel */
                put(stage, j->dt, o++, lut[img[y * W + x]]);
            }
        }
    }
}

ttt_tensor *ttt_vision_tokens(ttt_ctx *ctx, const ttt_idx *images, const int64_t *indices, int64_t batch,
                              int patch, int upsample, ttt_dtype dt) {
    static const char op[] = "vision_tokens";
    if (!ctx) return NULL;
    if (!images || !images->data || images->ndim != 3)
        return ttt__set_error(ctx, "%s: images must be a loaded [N,H,W] IDX array (got %d dimensions)", op,
                              images ? images->ndim : 0),
               NULL;
    if (dt != TTT_F32 && dt != TTT_F64 && dt != TTT_BF16)
        return ttt__set_error(ctx, "%s: dtype %s is not a float type", op, ttt_dtype_name(dt)), NULL;
    if (patch < 0 || upsample < 0)
        return ttt__set_error(ctx, "%s: patch %d and upsample %d must be >= 0", op, patch, upsample), NULL;
    const int64_t N = images->dims[0], H = images->dims[1], W = images->dims[2];
    const int64_t P = patch ? patch : 1, U = upsample ? upsample : 1;
    if (check_indices(ctx, op, indices, batch, N) != TTT_OK) return NULL;
    int64_t hu, wu, pixels, elems;
    if (!mul_ok(H, U, &hu) || !mul_ok(W, U, &wu) || !mul_ok(hu, wu, &pixels) || !mul_ok(pixels, batch, &elems) ||
        (uint64_t)elems > SIZE_MAX / sizeof(double))
        return ttt__set_error(ctx, "%s: %lld images of %lldx%lld upsampled by %lld are too large", op,
                              (long long)batch, (long long)H, (long long)W, (long long)U),
               NULL;
    if (hu % P || wu % P)
        return ttt__set_error(ctx, "%s: patch size %lld does not divide the %lldx%lld image%s", op, (long long)P,
                              (long long)hu, (long long)wu, U > 1 ? " (after upsampling)" : ""),
               NULL;
    tokens_job j = {images, indices, batch, P, U, (hu / P) * (wu / P), dt};
    return make(ctx, op, dt, TTT_DIMS(batch, j.ntok, P * P), fill_tokens, &j);
}

/* ---- labels --------------------------------------------------------------------- */

typedef struct {
    const ttt_idx *labels;
    const int64_t *indices;
    int64_t batch;
} labels_job;

static void fill_labels(void *stage, const void *arg) {
    const labels_job *j = arg;
    for (int64_t b = 0; b < j->batch; b++) ((int32_t *)stage)[b] = j->labels->data[j->indices ? j->indices[b] : b];
}

ttt_tensor *ttt_vision_labels(ttt_ctx *ctx, const ttt_idx *labels, const int64_t *indices, int64_t batch) {
    static const char op[] = "vision_labels";
    if (!ctx) return NULL;
    if (!labels || !labels->data || labels->ndim != 1)
        return ttt__set_error(ctx, "%s: labels must be a loaded 1-d IDX array (got %d dimensions)", op,
                              labels ? labels->ndim : 0),
               NULL;
    if (check_indices(ctx, op, indices, batch, labels->dims[0]) != TTT_OK) return NULL;
    labels_job j = {labels, indices, batch};
    return make(ctx, op, TTT_I32, TTT_DIMS(batch), fill_labels, &j);
}
