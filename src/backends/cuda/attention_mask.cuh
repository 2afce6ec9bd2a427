/* Attention's masking convention, shared by every fused kernel (f32, bf16,
 * double backward) and templated on their parameter structs, which all carry
 * tq, tk, causal, window and off: query i sits at absolute position off + i
 * (off = Tk - Tq when causal, else 0) and sees key j iff j < Tk and, when
 * causal, j <= off + i and (window <= 0 or off + i - j < window). Device code
 * (emulator-testable); the tile ranges also on the host (attention.cu sizes the
 * stored-dS workspace with them). */
#ifndef TTT_ATTENTION_MASK_CUH
#define TTT_ATTENTION_MASK_CUH

#include <stdint.h>

namespace attn_mask {

template <typename P>
__device__ __forceinline__ bool visible(const P &p, int64_t qi, int64_t kj) {
    if (kj >= p.tk) return false;
    if (!p.causal) return true;
    const int64_t pos = p.off + qi;
    return kj <= pos && (p.window <= 0 || pos - kj < p.window);
}

/* The keys query qi (< tq) sees, as offsets [*lo, *hi] from key j0 (empty if *hi < *lo): visible(p, qi, j0 + c)
 * iff *lo <= c <= *hi. In 32 bits (lengths are ints), computed once per row of a tile that needs the element test,
 * so the test is two compares instead of visible()'s 64-bit arithmetic per element (registers the bf16 forward
 * needs for its accumulators). */
template <typename P>
__device__ __forceinline__ void row_window(const P &p, int qi, int j0, int *lo, int *hi) {
    int l = -j0, h = p.tk - 1 - j0;
    if (p.causal) {
        const int pos = (int)p.off + qi;
        if (pos - j0 < h) h = pos - j0;
        if (p.window > 0 && p.window <= pos) { /* a window reaching before key 0 hides nothing */
            const int first = pos - (int)p.window + 1 - j0;
            if (first > l) l = first;
        }
    }
    *lo = l, *hi = h;
}

/* The key range [lo, hi) that query rows [q0, q1) can see. */
template <typename P>
__host__ __device__ __forceinline__ void key_range(const P &p, int64_t q0, int64_t q1, int64_t *lo, int64_t *hi) {
    *lo = 0;
    *hi = p.tk;
    if (p.causal) {
        const int64_t last = p.off + q1 - 1;
        if (last + 1 < *hi) *hi = last + 1;
        if (p.window > 0 && p.off + q0 - p.window + 1 > 0) *lo = p.off + q0 - p.window + 1;
    }
}

/* The query range [lo, hi) that can see some key of [k0, k1) (empty if hi <= lo). */
template <typename P>
__host__ __device__ __forceinline__ void query_range(const P &p, int64_t k0, int64_t k1, int64_t *lo, int64_t *hi) {
    *lo = 0;
    *hi = p.tq;
    if (p.causal) {
        if (k0 - p.off > 0) *lo = k0 - p.off;
        if (p.window > 0 && k1 - 1 + p.window - p.off < *hi) *hi = k1 - 1 + p.window - p.off;
    }
}

}  // namespace attn_mask

#endif
