/* Byte-level BPE training (see ttt_tokenizer_train in include/ttt/tokenizer.h).
 *
 * 1. Count: the corpus is cut at special tokens and pre-tokenized with GPT-2's
 *    regex (ttt_gpt2_pretoken_end); each distinct pre-token ("word") is kept
 *    once with its count.
 * 2. Learn: every word is a sequence of symbols (first its bytes). Pair counts
 *    (weighted by word counts) and, per pair, the words it occurs in are built
 *    once. Each step pops the best pair from a max-heap (count, then the
 *    lexicographically greatest (left bytes, right bytes)); heap entries whose
 *    count is stale are re-pushed with the current count. Merging rewrites only
 *    the words listed for that pair and applies the pair-count changes it causes
 *    (neighbours lose (x,a) / (b,y) and gain (x,ab) / (ab,y)), so a step costs
 *    time proportional to the words it touches, not to the corpus. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/engine_private.h"
#include "strmap.h"
#include "ttt/fileio.h"
#include "ttt/tokenizer.h"



static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- counting ------------------------------------------------------------------------ */

typedef struct {
    const ttt_bpe_train_config *cfg;
    strmap words;
    uint64_t bytes, pretokens;
    double t0, last_report;
} counter;

static int count_plain(counter *c, const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t e = ttt_gpt2_pretoken_end(s, n, i);
        int64_t w = sm_intern(&c->words, s + i, e - i);
        if (w < 0) return TTT_ERR;
        c->words.e[w].val++;
        c->pretokens++;
        i = e;
    }
    return TTT_OK;
}

/* Cuts special tokens out (leftmost-longest) and counts the rest. */
static int count_text(counter *c, const char *s, size_t n) {
    const ttt_bpe_train_config *cfg = c->cfg;
    size_t gap = 0;
    for (size_t i = 0; i < n && cfg->n_special > 0;) {
        size_t best = 0;
        for (int k = 0; k < cfg->n_special; k++) {
            size_t l = strlen(cfg->special_tokens[k]);
            if (l > best && l <= n - i && !memcmp(s + i, cfg->special_tokens[k], l)) best = l;
        }
        if (!best) {
            i++;
            continue;
        }
        if (count_plain(c, s + gap, i - gap)) return TTT_ERR;
        i += best;
        gap = i;
    }
    if (count_plain(c, s + gap, n - gap)) return TTT_ERR;
    c->bytes += n;
    double t = now_s();
    if (cfg->progress && t - c->last_report >= 1.0) {
        fprintf(stderr, "tokenizer train: counted %.1f MB, %llu pre-tokens, %zu distinct (%.1f s)\n",
                (double)c->bytes / 1e6, (unsigned long long)c->pretokens, c->words.n, t - c->t0);
        c->last_report = t;
    }
    return TTT_OK;
}

/* ---- learning ------------------------------------------------------------------------ */

typedef struct {
    int32_t a, b;
    int64_t count;
    int32_t *where; /* words it occurs (or occurred) in; may repeat */
    size_t where_n, where_cap;
    uint32_t stamp; /* last merge step that raised its count */
} pair_rec;

typedef struct {
    int64_t count;
    size_t pair;
} heap_ent;

typedef struct {
    /* words */
    size_t n_words;
    int64_t *wcount;
    size_t *wstart, *wlen;
    int32_t *sym;
    uint32_t *wstamp;
    /* tokens: internal ids 0..255 are the bytes themselves */
    strmap tokens;    /* token bytes -> internal id (entry index == id) */
    /* pairs */
    size_t *pslot;     /* pair index + 1 */
    size_t pmask;
    pair_rec *pairs;
    size_t n_pairs, pairs_cap;
    heap_ent *heap;
    size_t heap_n, heap_cap;
    size_t *changed;
    size_t changed_n, changed_cap;
    uint32_t step;
} learner;

static const uint8_t *tok_bytes(const learner *L, int32_t id, size_t *len) {
    const sm_entry *e = &L->tokens.e[id];
    *len = e->len;
    return (const uint8_t *)L->tokens.pool + e->off;
}

static int cmp_bytes(const uint8_t *x, size_t xl, const uint8_t *y, size_t yl) {
    int c = memcmp(x, y, xl < yl ? xl : yl);
    if (c) return c;
    return xl < yl ? -1 : xl > yl;
}

/* Does heap entry x rank above y? Count, then the greater (left, right) bytes. */
static int ent_above(const learner *L, heap_ent x, heap_ent y) {
    if (x.count != y.count) return x.count > y.count;
    const pair_rec *p = &L->pairs[x.pair], *q = &L->pairs[y.pair];
    size_t pl, ql;
    const uint8_t *ps = tok_bytes(L, p->a, &pl), *qs = tok_bytes(L, q->a, &ql);
    int c = cmp_bytes(ps, pl, qs, ql);
    if (c) return c > 0;
    ps = tok_bytes(L, p->b, &pl);
    qs = tok_bytes(L, q->b, &ql);
    return cmp_bytes(ps, pl, qs, ql) > 0;
}

static int heap_push(learner *L, heap_ent x) {
    if (ttt__grow((void **)&L->heap, &L->heap_cap, L->heap_n + 1, sizeof *L->heap)) return TTT_ERR;
    size_t i = L->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ent_above(L, x, L->heap[p])) break;
        L->heap[i] = L->heap[p];
        i = p;
    }
    L->heap[i] = x;
    return TTT_OK;
}

static heap_ent heap_pop(learner *L) {
    heap_ent top = L->heap[0], x = L->heap[--L->heap_n];
    size_t i = 0, m = L->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && ent_above(L, L->heap[c + 1], L->heap[c])) c++;
        if (!ent_above(L, L->heap[c], x)) break;
        L->heap[i] = L->heap[c];
        i = c;
    }
    if (m) L->heap[i] = x;
    return top;
}

static size_t pkey_hash(int32_t a, int32_t b) {
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 17);
}

/* Index of pair (a, b), created with count 0 when absent; -1 out of memory. */
static int64_t pair_get(learner *L, int32_t a, int32_t b) {
    if (L->pslot)
        for (size_t i = pkey_hash(a, b) & L->pmask;; i = (i + 1) & L->pmask) {
            size_t s = L->pslot[i];
            if (!s) break;
            if (L->pairs[s - 1].a == a && L->pairs[s - 1].b == b) return (int64_t)(s - 1);
        }
    if (!L->pslot || (L->n_pairs + 1) * 2 > L->pmask + 1) {
        size_t cap = L->pslot ? (L->pmask + 1) * 2 : 1 << 16;
        size_t *slot = calloc(cap, sizeof *slot);
        if (!slot) return -1;
        free(L->pslot);
        L->pslot = slot;
        L->pmask = cap - 1;
        for (size_t j = 0; j < L->n_pairs; j++) {
            size_t i = pkey_hash(L->pairs[j].a, L->pairs[j].b) & L->pmask;
            while (slot[i]) i = (i + 1) & L->pmask;
            slot[i] = j + 1;
        }
    }
    if (ttt__grow((void **)&L->pairs, &L->pairs_cap, L->n_pairs + 1, sizeof *L->pairs)) return -1;
    L->pairs[L->n_pairs] = (pair_rec){a, b, 0, NULL, 0, 0, 0};
    size_t i = pkey_hash(a, b) & L->pmask;
    while (L->pslot[i]) i = (i + 1) & L->pmask;
    L->pslot[i] = L->n_pairs + 1;
    return (int64_t)L->n_pairs++;
}

/* count(a, b) += delta; a raise also lists word w and marks the pair changed. */
static int pair_add(learner *L, int32_t a, int32_t b, int64_t delta, size_t w) {
    int64_t pi = pair_get(L, a, b);
    if (pi < 0) return TTT_ERR;
    pair_rec *p = &L->pairs[pi];
    p->count += delta;
    if (delta <= 0) return TTT_OK;
    if (!p->where_n || p->where[p->where_n - 1] != (int32_t)w) {
        if (ttt__grow((void **)&p->where, &p->where_cap, p->where_n + 1, sizeof *p->where)) return TTT_ERR;
        p->where[p->where_n++] = (int32_t)w;
    }
    if (L->step && p->stamp != L->step) { /* step 0 is the initial count: no list */
        p->stamp = L->step;
        if (ttt__grow((void **)&L->changed, &L->changed_cap, L->changed_n + 1, sizeof *L->changed)) return TTT_ERR;
        L->changed[L->changed_n++] = (size_t)pi;
    }
    return TTT_OK;
}

/* Replaces each (a, b) in word w, left to right, by n, updating pair counts. */
static int merge_word(learner *L, size_t w, int32_t a, int32_t b, int32_t n) {
    int32_t *s = L->sym + L->wstart[w];
    size_t m = L->wlen[w], out = 0;
    int64_t c = L->wcount[w];
    for (size_t r = 0; r < m;) {
        if (r + 1 < m && s[r] == a && s[r + 1] == b) {
            if (out > 0) {
                if (pair_add(L, s[out - 1], a, -c, w) || pair_add(L, s[out - 1], n, c, w)) return TTT_ERR;
            }
            if (r + 2 < m) {
                if (pair_add(L, b, s[r + 2], -c, w) || pair_add(L, n, s[r + 2], c, w)) return TTT_ERR;
            }
            s[out++] = n;
            r += 2;
        } else {
            s[out++] = s[r++];
        }
    }
    L->wlen[w] = out;
    return TTT_OK;
}

static void learner_free(learner *L) {
    free(L->wcount);
    free(L->wstart);
    free(L->wlen);
    free(L->sym);
    free(L->wstamp);
    sm_free(&L->tokens);
    for (size_t i = 0; i < L->n_pairs; i++) free(L->pairs[i].where);
    free(L->pairs);
    free(L->pslot);
    free(L->heap);
    free(L->changed);
}

static int learn(counter *c, ttt_tokenizer **out, char *err, size_t err_len) {
    const char *where = "tokenizer train";
    const ttt_bpe_train_config *cfg = c->cfg;
    learner L;
    memset(&L, 0, sizeof L);
    ttt_bpe_merge *merges = NULL;
    int32_t *merge_a = NULL, *merge_b = NULL;
    size_t n_merges = 0, merges_cap = 0;
    ttt_tokenizer *tok = NULL;
    int rc = TTT_ERR;
    double t0 = now_s(), last = t0;

    /* words: symbols are the bytes */
    size_t W = c->words.n, total = 0;
    for (size_t w = 0; w < W; w++) total += c->words.e[w].len;
    L.n_words = W;
    L.wcount = malloc((W + 1) * sizeof *L.wcount);
    L.wstart = malloc((W + 1) * sizeof *L.wstart);
    L.wlen = malloc((W + 1) * sizeof *L.wlen);
    L.wstamp = calloc(W + 1, sizeof *L.wstamp);
    L.sym = malloc((total + 1) * sizeof *L.sym);
    if (!L.wcount || !L.wstart || !L.wlen || !L.wstamp || !L.sym) goto oom;
    size_t off = 0;
    for (size_t w = 0; w < W; w++) {
        const sm_entry *e = &c->words.e[w];
        L.wcount[w] = e->val;
        L.wstart[w] = off;
        L.wlen[w] = e->len;
        for (size_t k = 0; k < e->len; k++) L.sym[off + k] = (uint8_t)c->words.pool[e->off + k];
        off += e->len;
    }
    sm_free(&c->words);
    for (int b = 0; b < 256; b++) {
        uint8_t byte = (uint8_t)b;
        if (sm_intern(&L.tokens, &byte, 1) != b) goto oom;
    }
    for (size_t w = 0; w < W; w++) {
        const int32_t *s = L.sym + L.wstart[w];
        for (size_t k = 0; k + 1 < L.wlen[w]; k++)
            if (pair_add(&L, s[k], s[k + 1], L.wcount[w], w)) goto oom;
    }
    for (size_t p = 0; p < L.n_pairs; p++)
        if (L.pairs[p].count > 0 && heap_push(&L, (heap_ent){L.pairs[p].count, p})) goto oom;

    int32_t target = cfg->vocab_size - cfg->n_special;
    size_t n_tokens = 256;
    if (cfg->progress)
        fprintf(stderr, "tokenizer train: %zu distinct pre-tokens, %zu pairs; learning %d merges\n", W, L.n_pairs,
                target - 256);
    while ((int64_t)n_tokens < target && L.heap_n) {
        heap_ent top = heap_pop(&L);
        pair_rec *p = &L.pairs[top.pair];
        if (p->count != top.count) {
            if (p->count > 0 && heap_push(&L, (heap_ent){p->count, top.pair})) goto oom;
            continue;
        }
        if (p->count <= 0) continue;
        int32_t a = p->a, b = p->b;
        /* the new token's bytes */
        size_t al, bl;
        tok_bytes(&L, a, &al);
        tok_bytes(&L, b, &bl);
        uint8_t *cat = malloc(al + bl);
        if (!cat) goto oom;
        memcpy(cat, tok_bytes(&L, a, &al), al);
        memcpy(cat + al, tok_bytes(&L, b, &bl), bl);
        size_t before = L.tokens.n;
        int64_t nid = sm_intern(&L.tokens, cat, al + bl);
        free(cat);
        if (nid < 0 || nid > INT32_MAX - 1) goto oom;
        if (L.tokens.n > before) n_tokens++;
        size_t cap = merges_cap;
        if (ttt__grow((void **)&merge_a, &cap, n_merges + 1, sizeof *merge_a)) goto oom;
        cap = merges_cap;
        if (ttt__grow((void **)&merge_b, &cap, n_merges + 1, sizeof *merge_b)) goto oom;
        merges_cap = cap;
        merge_a[n_merges] = a;
        merge_b[n_merges++] = b;

        L.step++;
        L.changed_n = 0;
        size_t pi = top.pair;
        for (size_t k = 0; k < L.pairs[pi].where_n; k++) {
            size_t w = (size_t)L.pairs[pi].where[k];
            if (L.wstamp[w] == L.step) continue;
            L.wstamp[w] = L.step;
            if (merge_word(&L, w, a, b, (int32_t)nid)) goto oom;
        }
        p = &L.pairs[pi];
        p->count = 0;
        free(p->where);
        p->where = NULL;
        p->where_n = p->where_cap = 0;
        for (size_t k = 0; k < L.changed_n; k++) {
            size_t q = L.changed[k];
            if (L.pairs[q].count > 0 && heap_push(&L, (heap_ent){L.pairs[q].count, q})) goto oom;
        }
        double t = now_s();
        if (cfg->progress && t - last >= 1.0) {
            fprintf(stderr, "tokenizer train: merge %zu, vocab %zu/%d, pair count %lld (%.1f s)\n", n_merges,
                    n_tokens + (size_t)cfg->n_special, cfg->vocab_size, (long long)top.count, t - t0);
            last = t;
        }
    }
    if (cfg->progress)
        fprintf(stderr, "tokenizer train: %zu merges, vocab %zu%s (%.1f s)\n", n_merges,
                n_tokens + (size_t)cfg->n_special,
                (int64_t)n_tokens < target ? " (the corpus has no more pairs)" : "", now_s() - t0);

    merges = malloc((n_merges + 1) * sizeof *merges);
    if (!merges) goto oom;
    for (size_t i = 0; i < n_merges; i++) {
        merges[i].left = tok_bytes(&L, merge_a[i], &merges[i].left_len);
        merges[i].right = tok_bytes(&L, merge_b[i], &merges[i].right_len);
    }
    if (ttt_tokenizer_from_merges(merges, n_merges, &tok, err, err_len)) goto done;
    for (int k = 0; k < cfg->n_special; k++)
        if (ttt_tokenizer_add_special(tok, cfg->special_tokens[k], NULL, err, err_len)) goto done;
    *out = tok;
    tok = NULL;
    rc = TTT_OK;
    goto done;
oom:
    ttt__errbuf(err, err_len, "%s: out of memory", where);
done:
    ttt_tokenizer_free(tok);
    free(merges);
    free(merge_a);
    free(merge_b);
    learner_free(&L);
    return rc;
}

/* ---- entry points ---------------------------------------------------------------------- */

static int check_cfg(const ttt_bpe_train_config *cfg, char *err, size_t err_len) {
    if (!cfg) return ttt__errbuf(err, err_len, "tokenizer train: no config");
    if (cfg->n_special < 0 || (cfg->n_special && !cfg->special_tokens))
        return ttt__errbuf(err, err_len, "tokenizer train: bad special token list");
    for (int k = 0; k < cfg->n_special; k++)
        if (!cfg->special_tokens[k] || !cfg->special_tokens[k][0])
            return ttt__errbuf(err, err_len, "tokenizer train: special token %d is empty", k);
    if (cfg->vocab_size < 256 + cfg->n_special)
        return ttt__errbuf(err, err_len, "tokenizer train: vocab_size %d is below 256 bytes + %d special tokens",
                    cfg->vocab_size, cfg->n_special);
    return TTT_OK;
}

int ttt_tokenizer_train(const char *const *texts, const size_t *lens, int n, const ttt_bpe_train_config *cfg,
                        ttt_tokenizer **out, char *err, size_t err_len) {
    *out = NULL;
    if (check_cfg(cfg, err, err_len)) return TTT_ERR;
    if (n < 0 || (n && (!texts || !lens))) return ttt__errbuf(err, err_len, "tokenizer train: bad text list");
    counter c;
    memset(&c, 0, sizeof c);
    c.cfg = cfg;
    c.t0 = c.last_report = now_s();
    for (int i = 0; i < n; i++)
        if (count_text(&c, texts[i], lens[i])) {
            sm_free(&c.words);
            return ttt__errbuf(err, err_len, "tokenizer train: out of memory");
        }
    int rc = learn(&c, out, err, err_len);
    sm_free(&c.words);
    return rc;
}

static int read_all(const char *path, char **data, size_t *len, char *err, size_t err_len) {
    return ttt_read_file(path, data, len, err, err_len);
}

int ttt_tokenizer_train_files(const char *const *paths, int n, const ttt_bpe_train_config *cfg,
                              ttt_tokenizer **out, char *err, size_t err_len) {
    *out = NULL;
    if (check_cfg(cfg, err, err_len)) return TTT_ERR;
    if (n < 1 || !paths) return ttt__errbuf(err, err_len, "tokenizer train: no input files");
    counter c;
    memset(&c, 0, sizeof c);
    c.cfg = cfg;
    c.t0 = c.last_report = now_s();
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        char *data;
        size_t len = 0;
        if (read_all(paths[i], &data, &len, err, err_len)) {
            sm_free(&c.words);
            return TTT_ERR;
        }
        if (cfg->progress) fprintf(stderr, "tokenizer train: reading %s (%.1f MB)\n", paths[i], (double)len / 1e6);
        int rc = count_text(&c, data, len);
        free(data);
        if (rc) {
            sm_free(&c.words);
            return ttt__errbuf(err, err_len, "tokenizer train: out of memory");
        }
        total += len;
    }
    if (total == 0) { /* a tokenizer learned from nothing is a mistake (a wrong path, an empty export), not a result */
        sm_free(&c.words);
        return ttt__errbuf(err, err_len, "tokenizer train: the input file%s %s empty: nothing to learn from",
                           n > 1 ? "s" : "", n > 1 ? "are all" : "is");
    }
    int rc = learn(&c, out, err, err_len);
    sm_free(&c.words);
    return rc;
}
