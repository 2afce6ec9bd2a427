/* Dequantization of ggml's tensor types to f32 (block layouts in docs/gguf.md).
 *
 * Each value is formed with the same f32 operations, in the same order, as the
 * `gguf` Python package's numpy reference (d * q, then + m or - m, never fused:
 * this file is compiled with -ffp-contract=off), so the results are equal bit
 * for bit (tests/test_gguf.c checks this against committed fixtures). */
#include <string.h>

#include "../core/engine_private.h"
#include "ttt/gguf.h"

float ttt_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | man << 13; /* inf, NaN (payload kept) */
    else if (exp) bits = sign | (exp + 112) << 23 | man << 13;
    else if (!man) bits = sign;
    else { /* subnormal: normalise */
        int e = -1;
        uint32_t m = man;
        do {
            e++;
            m <<= 1;
        } while (!(m & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (m & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float f16_at(const uint8_t *p) { return ttt_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void deq_q4_0(const uint8_t *b, float *y) { /* d f16, 16 bytes: low nibbles = first 16, high = last 16 */
    const float d = f16_at(b);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((int)(b[2 + j] & 0xf) - 8);
        y[j + 16] = d * (float)((int)(b[2 + j] >> 4) - 8);
    }
}

static void deq_q4_1(const uint8_t *b, float *y) { /* d, m f16, 16 bytes: x = d q + m */
    const float d = f16_at(b), m = f16_at(b + 2);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(b[4 + j] & 0xf) + m;
        y[j + 16] = d * (float)(b[4 + j] >> 4) + m;
    }
}

static void deq_q8_0(const uint8_t *b, float *y) { /* d f16, 32 int8 */
    const float d = f16_at(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, each with a 6-bit scale and min packed in 12 bytes. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

static void deq_q4_k(const uint8_t *b, float *y) { /* d, dmin f16, scales[12], qs[128] */
    const float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4, *q = b + 16;
    for (int c = 0; c < 4; c++) { /* 64 values: sub-block 2c from the low nibbles, 2c + 1 from the high */
        int sc, m;
        scale_min_k4(2 * c, scales, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        scale_min_k4(2 * c + 1, scales, &sc, &m);
        const float d2 = d * (float)sc, m2 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            y[64 * c + l] = d1 * (float)(q[32 * c + l] & 0xf) - m1;
            y[64 * c + 32 + l] = d2 * (float)(q[32 * c + l] >> 4) - m2;
        }
    }
}

static void deq_q5_k(const uint8_t *b, float *y) { /* d, dmin f16, scales[12], qh[32], qs[128] */
    const float d = f16_at(b), dmin = f16_at(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *q = b + 48;
    for (int c = 0; c < 4; c++) { /* sub-block j takes bit j of qh as its fifth bit */
        int sc, m;
        scale_min_k4(2 * c, scales, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        scale_min_k4(2 * c + 1, scales, &sc, &m);
        const float d2 = d * (float)sc, m2 = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            const int lo = (q[32 * c + l] & 0xf) | ((qh[l] >> (2 * c)) & 1) << 4;
            const int hi = (q[32 * c + l] >> 4) | ((qh[l] >> (2 * c + 1)) & 1) << 4;
            y[64 * c + l] = d1 * (float)lo - m1;
            y[64 * c + 32 + l] = d2 * (float)hi - m2;
        }
    }
}

static void deq_q6_k(const uint8_t *b, float *y) { /* ql[128], qh[64], scales[16] int8, d f16 */
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = f16_at(b + 208);
    for (int h = 0; h < 2; h++) { /* 128 values per half */
        const uint8_t *L = ql + 64 * h, *H = qh + 32 * h;
        float *o = y + 128 * h;
        for (int l = 0; l < 32; l++) {
            const int q1 = ((L[l] & 0xf) | ((H[l] >> 0) & 3) << 4) - 32;
            const int q2 = ((L[l + 32] & 0xf) | ((H[l] >> 2) & 3) << 4) - 32;
            const int q3 = ((L[l] >> 4) | ((H[l] >> 4) & 3) << 4) - 32;
            const int q4 = ((L[l + 32] >> 4) | ((H[l] >> 6) & 3) << 4) - 32;
            const int s = 8 * h + l / 16; /* one scale per 16 values */
            o[l] = (d * (float)sc[s]) * (float)q1;
            o[l + 32] = (d * (float)sc[s + 2]) * (float)q2;
            o[l + 64] = (d * (float)sc[s + 4]) * (float)q3;
            o[l + 96] = (d * (float)sc[s + 6]) * (float)q4;
        }
    }
}

int ttt_gguf_dequantize(uint32_t type, const void *src, size_t src_bytes, int64_t n, float *dst, char *err,
                        size_t err_len) {
    int64_t blk, bytes;
    const char *name = ttt_ggml_type_name(type);
    if (!name || ttt_ggml_type_size(type, &blk, &bytes)) return ttt__errbuf(err, err_len, "unknown ggml type %u", type);
    if (n < 0 || n % blk) return ttt__errbuf(err, err_len, "%lld %s elements: not a multiple of its block of %lld",
                                             (long long)n, name, (long long)blk);
    const int64_t nb = n / blk;
    if ((uint64_t)nb > (uint64_t)src_bytes / (uint64_t)bytes)
        return ttt__errbuf(err, err_len, "%lld %s elements need %lld bytes, the source has %zu", (long long)n, name,
                           (long long)(nb * bytes), src_bytes);
    if (!src || !dst) return n ? ttt__errbuf(err, err_len, "dequantize: NULL buffer") : TTT_OK;
    const uint8_t *s = src;
    void (*block_fn)(const uint8_t *, float *) = NULL;
    switch (type) {
    case TTT_GGML_F32: memcpy(dst, s, (size_t)n * 4); return TTT_OK;
    case TTT_GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = f16_at(s + 2 * i);
        return TTT_OK;
    case TTT_GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            const uint32_t u = (uint32_t)(s[2 * i] | s[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &u, 4);
        }
        return TTT_OK;
    case TTT_GGML_Q4_0: block_fn = deq_q4_0; break;
    case TTT_GGML_Q4_1: block_fn = deq_q4_1; break;
    case TTT_GGML_Q8_0: block_fn = deq_q8_0; break;
    case TTT_GGML_Q4_K: block_fn = deq_q4_k; break;
    case TTT_GGML_Q5_K: block_fn = deq_q5_k; break;
    case TTT_GGML_Q6_K: block_fn = deq_q6_k; break;
    default:
        return ttt__errbuf(err, err_len, "ggml type %s is not supported (ttt dequantizes F32, F16, BF16, Q8_0, Q4_0, "
                           "Q4_1, Q4_K, Q5_K, Q6_K)", name);
    }
    for (int64_t i = 0; i < nb; i++) block_fn(s + i * bytes, dst + i * blk);
    return TTT_OK;
}
