/* Token sampling shared by `ttt lm generate` and `ttt serve`: greedy at
 * temperature 0, else softmax(logits / T) cut to the top k, then to the top-p
 * nucleus. A pure function of (logits, params, rng state), so a seed repeats. */
#ifndef TTT_PROGRAMS_SAMPLE_H
#define TTT_PROGRAMS_SAMPLE_H

#include <stdint.h>

typedef struct {
    double temperature; /* 0: greedy */
    int64_t top_k;      /* 0: all */
    double top_p;       /* 1: all */
} sample_params;

typedef struct {
    double p;
    int32_t id;
} sample_cand;

/* splitmix64: the next 64 random bits of *state. */
uint64_t sample_rng_next(uint64_t *state);
/* One id in [0, V) from a row of logits; scratch holds V candidates. */
int32_t sample_token(const double *logits, int64_t V, const sample_params *sp, uint64_t *rng, sample_cand *scratch);

#endif
