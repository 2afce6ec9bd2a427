/* How a fused attention backward whose workspace grows with Tq x Tk (cuDNN's: attention_cudnn.cu bwd_cut) is cut
 * to fit a cap, as plain arithmetic, so the CPU tests check it where no GPU is (tests/test_attention_cut.c).
 *
 * The (batch, head) pairs are independent, and g consecutive pairs of dense [b, h, T, d] tensors are a
 * [1, g, T, d] tensor at an offset: a call over the cap runs in groups of pairs (the largest divisor of b h whose
 * share fits). Where one pair's share is over the cap, each head runs in blocks of queries: block i holds queries
 * [s0, e) and sees keys [0, keys), keys = Tk - Tq + e when causal (so the block's diagonal ends bottom-right:
 * query r of the block sits at s0 + r + Tk - Tq, as in the whole call), Tk when not; its dQ rows are whole and its
 * dK, dV partial sums over the keys it sees, to be added up. */
#ifndef TTT_BACKENDS_ATTENTION_CUT_H
#define TTT_BACKENDS_ATTENTION_CUT_H

#include <stdint.h>

typedef struct {
    int64_t grp; /* (batch, head) pairs an execution covers */
    int64_t tb;  /* queries a block (Tq: no blocks) */
    int64_t nb;  /* blocks a head */
} ttt_attn_cut;

enum { TTT_CUT_NONE = -1, TTT_CUT_WHOLE = 0, TTT_CUT_GROUPS = 1, TTT_CUT_BLOCKS = 2 };

/* The cut of a backward over bh pairs of sq queries whose whole workspace is ws bytes (in proportion to the pairs
 * and, within a pair, to queries x keys, so a block of tb queries takes at most tb / sq of a pair's), under cap
 * bytes: TTT_CUT_WHOLE (fits), TTT_CUT_GROUPS (c->grp pairs at a time), TTT_CUT_BLOCKS (one pair at a time, c->nb
 * blocks of c->tb queries, tb a multiple of 128 (the engines' tile), the blocks of even size and the last no
 * larger), or TTT_CUT_NONE (even 128 queries are over the cap, or more than max_blocks blocks). */
static inline int ttt_attn_cut_plan(int64_t bh, int64_t sq, double ws, double cap, int64_t max_blocks, ttt_attn_cut *c) {
    c->grp = bh, c->tb = sq, c->nb = 1;
    if (ws <= cap) return TTT_CUT_WHOLE;
    const double per_pair = ws / (double)bh;
    int64_t grp = bh - 1;
    while (grp >= 1 && (bh % grp || per_pair * (double)grp > cap)) grp--;
    if (grp >= 1) {
        c->grp = grp;
        return TTT_CUT_GROUPS;
    }
    const double per_query = per_pair / (double)sq; /* a block's workspace: per_query x its queries, at most */
    const int64_t tb_max = (int64_t)(cap / per_query) / 128 * 128;
    if (tb_max < 128) return TTT_CUT_NONE;
    int64_t nb = (sq + tb_max - 1) / tb_max;
    int64_t tb = ((sq + nb - 1) / nb + 127) / 128 * 128;
    if (tb > tb_max) tb = tb_max;
    nb = (sq + tb - 1) / tb;
    if (nb > max_blocks) return TTT_CUT_NONE;
    c->grp = 1, c->tb = tb, c->nb = nb;
    return TTT_CUT_BLOCKS;
}

/* Block i of a head cut in blocks of tb queries: queries [*s0, *e), keys [0, *keys). */
static inline void ttt_attn_cut_block(int64_t sq, int64_t skv, int causal, int64_t tb, int64_t i, int64_t *s0,
                                      int64_t *e, int64_t *keys) {
    *s0 = i * tb;
    *e = *s0 + tb < sq ? *s0 + tb : sq;
    *keys = causal ? skv - sq + *e : skv;
}

#endif
