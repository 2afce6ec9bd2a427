/* A float64 reference for attention, forward and backward, and the helpers the
 * bf16 kernel checks share (attention_bf16_emu_test.cpp on the emulator,
 * attention_bf16.cu on the GPU). Host code only. */
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
