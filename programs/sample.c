#include "sample.h"

#include <math.h>
#include <stdlib.h>

uint64_t sample_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cmp_cand(const void *a, const void *b) { /* probability descending, then id: a total order */
    const sample_cand *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

int32_t sample_token(const double *logits, int64_t V, const sample_params *o, uint64_t *rng, sample_cand *c) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (o->temperature == 0) return (int32_t)best;
    for (int64_t i = 0; i < V; i++) c[i] = (sample_cand){exp((logits[i] - logits[best]) / o->temperature), (int32_t)i};
    int64_t keep = V;
    if ((o->top_k > 0 && o->top_k < V) || o->top_p < 1) {
        qsort(c, (size_t)V, sizeof *c, cmp_cand);
        if (o->top_k > 0 && o->top_k < V) keep = o->top_k;
        if (o->top_p < 1) {
            double z = 0, mass = 0;
            for (int64_t i = 0; i < keep; i++) z += c[i].p;
            for (int64_t i = 0; i < keep; i++)
                if ((mass += c[i].p) >= o->top_p * z) {
                    keep = i + 1;
                    break;
                }
        }
    }
    double z = 0;
    for (int64_t i = 0; i < keep; i++) z += c[i].p;
    double u = (double)(sample_rng_next(rng) >> 11) * 0x1.0p-53 * z;
    for (int64_t i = 0; i < keep; i++)
        if ((u -= c[i].p) < 0) return c[i].id;
    return c[keep - 1].id;
}
