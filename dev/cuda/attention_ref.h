/* A float64 reference for attention, forward, backward and double backward, and
 * the helpers the bf16 kernel checks share (attention_bf16_emu_test.cpp and
 * attention_bwd2_bf16_emu_test.cpp on the emulator, attention_bf16.cu on the
 * GPU). Host code only. */
#ifndef TTT_DEV_CUDA_ATTENTION_REF_H
#define TTT_DEV_CUDA_ATTENTION_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <vector>

namespace ref {

inline uint16_t to_bf16(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    if (x != x) return 0x7fc0;
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}
inline float from_bf16(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

struct Shape {
    int bh, tq, tk, d, dv, causal;
    int64_t window;
};

/* out, lse (natural log of the scaled, masked scores) and dq, dk, dv for the
 * loss sum(out * dout), all in float64 from the given (already rounded) inputs. */
inline void attention(const Shape &c, const std::vector<double> &q, const std::vector<double> &k,
                      const std::vector<double> &v, const std::vector<double> &dout, double scale,
                      std::vector<double> &o, std::vector<double> &lse, std::vector<double> &dq,
                      std::vector<double> &dk, std::vector<double> &dv) {
    o.assign((size_t)c.bh * c.tq * c.dv, 0);
    lse.assign((size_t)c.bh * c.tq, 0);
    dq.assign((size_t)c.bh * c.tq * c.d, 0);
    dk.assign((size_t)c.bh * c.tk * c.d, 0);
    dv.assign((size_t)c.bh * c.tk * c.dv, 0);
    const int64_t off = c.causal ? c.tk - c.tq : 0;
    std::vector<double> p(c.tk);
    for (int b = 0; b < c.bh; b++)
        for (int i = 0; i < c.tq; i++) {
            const int64_t pos = off + i;
            const double *qi = &q[((size_t)b * c.tq + i) * c.d], *gi = &dout[((size_t)b * c.tq + i) * c.dv];
            double mx = -INFINITY;
            for (int j = 0; j < c.tk; j++) {
                const bool seen = !c.causal || (j <= pos && (c.window <= 0 || pos - j < c.window));
                const double *kj = &k[((size_t)b * c.tk + j) * c.d];
                double s = 0;
                for (int e = 0; e < c.d; e++) s += qi[e] * kj[e];
                p[j] = seen ? s * scale : -INFINITY;
                mx = std::max(mx, p[j]);
            }
            double z = 0;
            for (int j = 0; j < c.tk; j++) z += (p[j] = exp(p[j] - mx));
            lse[(size_t)b * c.tq + i] = mx + log(z);
            for (int j = 0; j < c.tk; j++) p[j] /= z;
            double delta = 0;
            for (int e = 0; e < c.dv; e++) {
                double acc = 0;
                for (int j = 0; j < c.tk; j++) acc += p[j] * v[((size_t)b * c.tk + j) * c.dv + e];
                o[((size_t)b * c.tq + i) * c.dv + e] = acc;
                delta += acc * gi[e];
            }
            for (int j = 0; j < c.tk; j++) {
                if (p[j] == 0) continue;
                const double *vj = &v[((size_t)b * c.tk + j) * c.dv], *kj = &k[((size_t)b * c.tk + j) * c.d];
                double g = 0;
                for (int e = 0; e < c.dv; e++) g += gi[e] * vj[e];
                const double ds = p[j] * (g - delta) * scale;
                for (int e = 0; e < c.d; e++) {
                    dq[((size_t)b * c.tq + i) * c.d + e] += ds * kj[e];
                    dk[((size_t)b * c.tk + j) * c.d + e] += ds * qi[e];
                }
                for (int e = 0; e < c.dv; e++) dv[((size_t)b * c.tk + j) * c.dv + e] += p[j] * gi[e];
            }
        }
}

/* The double backward in float64, from its formulas (src/backends/cuda/attention_bwd2.cuh): the
 * gradients gq, gk, gv, gg of Phi = <uq, dq> + <uk, dk> + <uv, dv> with respect to q, k, v and
 * dout = g, where (dq, dk, dv) is attention's first-order backward; also the kernels' inputs lse
 * (natural log) and delta and the row statistics a, c. v's head size is c.dv (uv's too). */
inline void attention_bwd2(const Shape &c, const std::vector<double> &q, const std::vector<double> &k,
                           const std::vector<double> &v, const std::vector<double> &g, const std::vector<double> &uq,
                           const std::vector<double> &uk, const std::vector<double> &uv, double scale,
                           std::vector<double> &lse, std::vector<double> &delta, std::vector<double> &ra,
                           std::vector<double> &rc, std::vector<double> &gq, std::vector<double> &gk,
                           std::vector<double> &gv, std::vector<double> &gg) {
    const size_t nr = (size_t)c.bh * c.tq;
    lse.assign(nr, 0), delta.assign(nr, 0), ra.assign(nr, 0), rc.assign(nr, 0);
    gq.assign((size_t)c.bh * c.tq * c.d, 0), gk.assign((size_t)c.bh * c.tk * c.d, 0);
    gv.assign((size_t)c.bh * c.tk * c.dv, 0), gg.assign((size_t)c.bh * c.tq * c.dv, 0);
    const int64_t off = c.causal ? c.tk - c.tq : 0;
    std::vector<double> p(c.tk), dp(c.tk), A(c.tk), B(c.tk);
    for (int b = 0; b < c.bh; b++)
        for (int i = 0; i < c.tq; i++) {
            const int64_t pos = off + i, r = (int64_t)b * c.tq + i;
            const double *qi = &q[r * c.d], *gi = &g[r * c.dv], *uqi = &uq[r * c.d];
            double mx = -INFINITY;
            for (int j = 0; j < c.tk; j++) {
                const bool seen = !c.causal || (j <= pos && (c.window <= 0 || pos - j < c.window));
                const int64_t kr = (int64_t)b * c.tk + j;
                double s = 0, a = 0, dd = 0, bb = 0;
                for (int e = 0; e < c.d; e++)
                    s += qi[e] * k[kr * c.d + e], a += uqi[e] * k[kr * c.d + e] + qi[e] * uk[kr * c.d + e];
                for (int e = 0; e < c.dv; e++) dd += gi[e] * v[kr * c.dv + e], bb += gi[e] * uv[kr * c.dv + e];
                p[j] = seen ? s * scale : -INFINITY;
                A[j] = scale * a, dp[j] = dd, B[j] = bb;
                mx = std::max(mx, p[j]);
            }
            double z = 0;
            for (int j = 0; j < c.tk; j++) z += (p[j] = exp(p[j] - mx));
            lse[r] = mx + log(z);
            double dl = 0, a = 0, pdpa = 0, pb = 0;
            for (int j = 0; j < c.tk; j++) {
                p[j] /= z;
                dl += p[j] * dp[j], a += p[j] * A[j], pdpa += p[j] * dp[j] * A[j], pb += p[j] * B[j];
            }
            const double cc = pdpa - 2 * a * dl + pb;
            delta[r] = dl, ra[r] = a, rc[r] = cc;
            for (int j = 0; j < c.tk; j++) {
                if (p[j] == 0) continue;
                const int64_t kr = (int64_t)b * c.tk + j;
                const double ds = p[j] * (dp[j] - dl), E = p[j] * (A[j] - a);
                const double F = p[j] * ((dp[j] - dl) * A[j] - dp[j] * a + B[j] - cc);
                for (int e = 0; e < c.d; e++) {
                    gq[r * c.d + e] += scale * (ds * uk[kr * c.d + e] + F * k[kr * c.d + e]);
                    gk[kr * c.d + e] += scale * (ds * uqi[e] + F * qi[e]);
                }
                for (int e = 0; e < c.dv; e++) {
                    gv[kr * c.dv + e] += E * gi[e];
                    gg[r * c.dv + e] += E * v[kr * c.dv + e] + p[j] * uv[kr * c.dv + e];
                }
            }
        }
}

/* max |got - ref| / max(1, max |ref|); NaN anywhere gives NaN */
template <typename G>
inline double max_rel(const std::vector<G> &got, const std::vector<double> &r, double (*val)(G)) {
    double worst = 0, scale = 1.0;
    for (double x : r) scale = std::max(scale, fabs(x));
    for (size_t i = 0; i < r.size(); i++) {
        const double e = fabs(val(got[i]) - r[i]) / scale;
        if (e != e) return e; /* NaN: unwritten or broken */
        worst = std::max(worst, e);
    }
    return worst;
}
inline double val_bf16(uint16_t h) { return from_bf16(h); }
inline double val_f32(float f) { return f; }

}  // namespace ref

#endif
