/* ttt needle: passkey retrieval ("needle in a haystack") for language models.
 *
 * A five-digit pass key is hidden at a relative depth of held-out text (a
 * document of a token shard), the model reads the haystack and a question,
 * and is scored two ways:
 *   - rank: the key's log-likelihood against --candidates - 1 other random keys
 *     (the answer's tokens read from a copy of the model's state; chance is
 *     1 / candidates);
 *   - greedy: the first tokens generated greedily spell the key.
 * Every model reads the same haystacks, needles and candidates. TTT-E2E models
 * keep learning while they read (their inner steps run on the haystack), so
 * this shows whether what they compress survives past the attention window. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ttt/lm.h"
#include "ttt/runtime.h"
#include "ttt/shards.h"
#include "ttt/tokenizer.h"
#include "ttt/ttt.h"

enum { MAX_MODELS = 8, MAX_GRID = 16, KEY_DIGITS = 5 };

typedef struct {
    const char *ckpt[MAX_MODELS], *label[MAX_MODELS];
    int n_models, n_labels;
    const char *tokenizer, *data, *device, *out;
    int64_t lengths[MAX_GRID];
    double depths[MAX_GRID];
    int n_lengths, n_depths;
    int64_t trials, candidates, threads, seed;
} needle_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: ttt needle --ckpt DIR|FILE [--ckpt ...] --tokenizer DIR --data SHARD [flags]\n"
            "Passkey retrieval: a 5-digit key hidden at several depths of held-out text (documents of SHARD), then\n"
            "\"What is the pass key? The pass key is\". Each model reads the same haystacks; accuracy is the share\n"
            "of trials where the key is the most likely of --candidates keys (rank), and where greedy decoding\n"
            "spells it (greedy). TTT-E2E models learn while they read the haystack.\n"
            "  --ckpt PATH           a `ttt lm train` run or checkpoint; repeat for several models (at most %d)\n"
            "  --label NAME          a name per --ckpt, in order (default: the path)\n"
            "  --tokenizer DIR       the tokenizer the models were trained with (vocab.json + merges.txt)\n"
            "  --data SHARD          held-out documents for the haystack (e.g. longdocs.bin of scripts/get-corpus.sh)\n"
            "  --lengths N,N,...     total tokens read per trial (default 2048,4096,8192)\n"
            "  --depths D,D,...      where the needle sits, 0 (start) .. 1 (end) (default 0,0.25,0.5,0.75,1)\n"
            "  --trials N            trials per (length, depth), each another document and key (default 4)\n"
            "  --candidates K        keys ranked per trial, the true one included (default 10)\n"
            "  --seed S              keys and documents (default 1)\n"
            "  --device cpu|cuda|auto  (default auto)   --threads N (CPU)\n"
            "  --out FILE            JSONL: one line per (model, length, depth)\n",
            MAX_MODELS);
}

static int parse_list(const char *s, int64_t *iv, double *dv, int *n, double lo, double hi) {
    *n = 0;
    for (const char *p = s; *p && *n < MAX_GRID;) {
        char *end;
        errno = 0;
        const double x = strtod(p, &end);
        if (end == p || errno || !(x >= lo && x <= hi) || (*end && *end != ',')) return -1;
        if (iv) {
            if (x != floor(x)) return -1;
            iv[*n] = (int64_t)x;
        } else dv[*n] = x;
        (*n)++;
        p = *end ? end + 1 : end;
    }
    return *n > 0 ? 0 : -1;
}

static int parse(int argc, char **argv, needle_opts *o) {
    *o = (needle_opts){.device = "auto", .trials = 4, .candidates = 10, .seed = 1};
    parse_list("2048,4096,8192", o->lengths, NULL, &o->n_lengths, 64, 1 << 22);
    parse_list("0,0.25,0.5,0.75,1", NULL, o->depths, &o->n_depths, 0, 1);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--ckpt") || !strcmp(a, "--label")) {
            if (cli_flag_str(argc, argv, &i, a, &v) < 0) return 2;
            int *n = a[2] == 'c' ? &o->n_models : &o->n_labels;
            if (*n >= MAX_MODELS) return fprintf(stderr, "ttt needle: at most %d models\n", MAX_MODELS), 2;
            (a[2] == 'c' ? o->ckpt : o->label)[(*n)++] = v;
        } else if (!strcmp(a, "--lengths") || !strcmp(a, "--depths")) {
            if (cli_flag_str(argc, argv, &i, a, &v) < 0) return 2;
            const int bad = a[2] == 'l' ? parse_list(v, o->lengths, NULL, &o->n_lengths, 64, 1 << 22)
                                        : parse_list(v, NULL, o->depths, &o->n_depths, 0, 1);
            if (bad)
                return fprintf(stderr, "ttt needle: %s '%s': want a comma list of %s (at most %d)\n", a, v,
                               a[2] == 'l' ? "whole numbers in [64, 4194304]" : "numbers in [0, 1]", MAX_GRID),
                       2;
        } else if (!strcmp(a, "--tokenizer")) {
            if (cli_flag_str(argc, argv, &i, a, &o->tokenizer) < 0) return 2;
        } else if (!strcmp(a, "--data")) {
            if (cli_flag_str(argc, argv, &i, a, &o->data) < 0) return 2;
        } else if (!strcmp(a, "--device")) {
            if (cli_flag_str(argc, argv, &i, a, &o->device) < 0) return 2;
        } else if (!strcmp(a, "--out")) {
            if (cli_flag_str(argc, argv, &i, a, &o->out) < 0) return 2;
        } else if (!strcmp(a, "--trials")) {
            if (cli_flag_int(argc, argv, &i, a, 1, 1 << 20, &o->trials) < 0) return 2;
        } else if (!strcmp(a, "--candidates")) {
            if (cli_flag_int(argc, argv, &i, a, 2, 1000, &o->candidates) < 0) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (cli_flag_int(argc, argv, &i, a, 0, 1024, &o->threads) < 0) return 2;
        } else if (!strcmp(a, "--seed")) {
            if (cli_flag_int(argc, argv, &i, a, 0, INT64_MAX, &o->seed) < 0) return 2;
        } else return cli_unknown("needle", a);
    }
    if (!o->n_models || !o->tokenizer || !o->data)
        return fprintf(stderr, "ttt needle: --ckpt, --tokenizer and --data are required (see --help)\n"), 2;
    if (o->n_labels && o->n_labels != o->n_models)
        return fprintf(stderr, "ttt needle: give a --label for every --ckpt, or none\n"), 2;
    if (strcmp(o->device, "cpu") && strcmp(o->device, "cuda") && strcmp(o->device, "auto"))
        return fprintf(stderr, "ttt needle: --device must be cpu, cuda or auto, not '%s'\n", o->device), 2;
    return 0;
}

static uint64_t next_rand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Tokens of text into a malloc'd array. */
static int32_t *encode(ttt_tokenizer *tok, const char *text, int64_t *n) {
    ttt_token_ids ids = {0};
    char err[256];
    if (ttt_tokenizer_encode(tok, text, strlen(text), &ids, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt needle: %s\n", err);
        return NULL;
    }
    int32_t *out = malloc(sizeof(int32_t) * (ids.n ? ids.n : 1));
    if (out) memcpy(out, ids.ids, sizeof(int32_t) * ids.n);
    *n = (int64_t)ids.n;
    ttt_token_ids_free(&ids);
    return out;
}

/* log softmax(logits)[id] of a [V] row. */
static double log_prob(const double *row, int64_t V, int32_t id) {
    double mx = row[0], z = 0;
    for (int64_t v = 1; v < V; v++) mx = fmax(mx, row[v]);
    for (int64_t v = 0; v < V; v++) z += exp(row[v] - mx);
    return row[id] - mx - log(z);
}

typedef struct {
    ttt_ctx *ctx;
    ttt_lm m;
    ttt_lm_reader main, scratch;
    double *row; /* [V] host */
} model_run;

/* Reads tokens into the scratch copy of the main reader; returns the sum of
 * the log-probabilities of ans given first (the main read's last logits). */
static double answer_logprob(model_run *r, const double *first, const int32_t *ans, int64_t n) {
    const int64_t V = r->m.cfg.vocab;
    if (ttt_lm_reader_copy(r->ctx, &r->m, &r->scratch, &r->main) != TTT_OK) return NAN;
    double lp = log_prob(first, V, ans[0]);
    if (n > 1) {
        ttt_tensor *lg = ttt_lm_reader_read(r->ctx, &r->m, &r->scratch,
                                            ttt_from_host(r->ctx, TTT_I32, TTT_DIMS(1, n - 1), ans), 1);
        if (!lg) return NAN;
        double *all = malloc(sizeof(double) * (size_t)((n - 1) * V));
        if (!all || ttt_copy_to_host(r->ctx, lg, all, TTT_F64) != TTT_OK) {
            free(all);
            return NAN;
        }
        for (int64_t j = 1; j < n; j++) lp += log_prob(all + (j - 1) * V, V, ans[j]);
        free(all);
    }
    ttt_step_reset(r->ctx);
    return lp;
}

/* Greedy continuation from the main read's last logits: does it spell key? */
static int greedy_spells(model_run *r, ttt_tokenizer *tok, const double *first, const char *key) {
    const int64_t V = r->m.cfg.vocab;
    if (ttt_lm_reader_copy(r->ctx, &r->m, &r->scratch, &r->main) != TTT_OK) return -1;
    int32_t gen[8];
    int n = 0;
    const double *row = first;
    for (; n < 4; n++) {
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        gen[n] = best;
        ttt_tensor *lg = ttt_lm_reader_read(r->ctx, &r->m, &r->scratch, ttt_from_host(r->ctx, TTT_I32, TTT_DIMS(1, 1), &gen[n]), 0);
        if (!lg || ttt_copy_to_host(r->ctx, lg, r->row, TTT_F64) != TTT_OK) return -1;
        ttt_step_reset(r->ctx);
        row = r->row;
    }
    char *text = NULL;
    if (ttt_tokenizer_decode(tok, gen, (size_t)n, 1, &text, NULL, NULL, 0) != TTT_OK) return -1;
    const char *p = text;
    while (*p == ' ') p++;
    const int ok = !strncmp(p, key, KEY_DIGITS);
    free(text);
    return ok;
}

int cmd_needle(int argc, char **argv) {
    needle_opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    ttt_tokenizer *tok = NULL;
    if (cli_load_tokenizer("needle", o.tokenizer, &tok)) return 1;
    char err[512];
    ttt_shard *shard = NULL;
    if (ttt_shard_open(o.data, &shard, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt needle: %s\n", err);
        ttt_tokenizer_free(tok);
        return 1;
    }
    int64_t max_len = 0;
    for (int i = 0; i < o.n_lengths; i++) max_len = o.lengths[i] > max_len ? o.lengths[i] : max_len;
    /* documents long enough for the longest haystack */
    const int64_t n_docs = ttt_shard_n_docs(shard);
    int64_t *docs = malloc(sizeof(int64_t) * (size_t)(n_docs ? n_docs : 1)), n_long = 0;
    for (int64_t d = 0; docs && d < n_docs; d++) {
        int64_t st, len;
        if (ttt_shard_doc(shard, d, &st, &len, err, sizeof err) == TTT_OK && len >= max_len) docs[n_long++] = d;
    }
    FILE *out = NULL;
    if (!docs || n_long == 0) {
        fprintf(stderr, "ttt needle: %s has no document of %lld tokens or more (lower --lengths)\n", o.data,
                (long long)max_len);
        rc = 1;
    } else if (o.out && !(out = fopen(o.out, "w"))) {
        fprintf(stderr, "ttt needle: --out %s: %s\n", o.out, strerror(errno));
        rc = 1;
    }
    const ttt_device dev = !strcmp(o.device, "cuda") || (!strcmp(o.device, "auto") && ttt_device_count(TTT_CUDA) > 0)
                               ? TTT_CUDA
                               : TTT_CPU;
    int64_t nq = 0;
    int32_t *question = rc ? NULL : encode(tok, " What is the pass key? The pass key is", &nq);
    if (!rc && !question) rc = 1;
    /* results[model][length][depth] */
    static double rank_acc[MAX_MODELS][MAX_GRID][MAX_GRID], greedy_acc[MAX_MODELS][MAX_GRID][MAX_GRID];
    for (int mi = 0; mi < o.n_models && !rc; mi++) {
        model_run r = {0};
        ttt_ctx_config cc = {.device = dev, .seed = 1, .threads = (int)o.threads};
        if (!(r.ctx = ttt_ctx_new(&cc))) {
            fprintf(stderr, "ttt needle: no %s context: %s\n", dev == TTT_CUDA ? "cuda" : "cpu", ttt_runtime_error());
            rc = 1;
            break;
        }
        if (ttt_lm_load(r.ctx, o.ckpt[mi], -1, &r.m, NULL, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt needle: %s\n", err);
            rc = 1;
        } else if (r.m.cfg.vocab < ttt_tokenizer_vocab_size(tok)) {
            fprintf(stderr, "ttt needle: %s has a vocabulary of %lld, the tokenizer %d\n", o.ckpt[mi],
                    (long long)r.m.cfg.vocab, ttt_tokenizer_vocab_size(tok));
            rc = 1;
        } else if (ttt_lm_reader_init(r.ctx, &r.m, &r.main, 1, max_len + 64) != TTT_OK ||
                   ttt_lm_reader_init(r.ctx, &r.m, &r.scratch, 1, max_len + 64) != TTT_OK ||
                   !(r.row = malloc(sizeof(double) * (size_t)r.m.cfg.vocab))) {
            fprintf(stderr, "ttt needle: %s: %s\n", o.ckpt[mi], ttt_error(r.ctx));
            rc = 1;
        }
        const char *label = o.n_labels ? o.label[mi] : o.ckpt[mi];
        const double t0 = cli_now();
        if (!rc)
            fprintf(stderr, "needle: %s (%s, window %lld, %lld parameters)\n", label,
                    ttt_lm_is_e2e(&r.m) ? "TTT-E2E" : r.m.cfg.window ? "sliding window" : "full attention",
                    (long long)r.m.cfg.window, (long long)ttt_lm_param_count(&r.m.cfg));
        for (int li = 0; li < o.n_lengths && !rc; li++)
            for (int di = 0; di < o.n_depths && !rc; di++) {
                int64_t hits = 0, greedy_hits = 0;
                uint64_t rng = (uint64_t)o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)(li * 131 + di);
                for (int64_t tr = 0; tr < o.trials && !rc; tr++) {
                    char keys[1000][8], needle_s[160], answer[16];
                    for (int64_t k = 0; k < o.candidates; k++) { /* distinct keys; keys[0] is hidden */
                        int dup;
                        do {
                            snprintf(keys[k], sizeof keys[k], "%05u", (unsigned)(10000 + next_rand(&rng) % 90000));
                            dup = 0;
                            for (int64_t q = 0; q < k; q++) dup |= !strcmp(keys[q], keys[k]);
                        } while (dup);
                    }
                    snprintf(needle_s, sizeof needle_s, " The pass key is %s. Remember it. %s is the pass key.",
                             keys[0], keys[0]);
                    int64_t nn = 0;
                    int32_t *needle = encode(tok, needle_s, &nn);
                    const int64_t L = o.lengths[li], hay = L - nn - nq;
                    int64_t dst, dlen;
                    const int64_t doc = docs[next_rand(&rng) % (uint64_t)n_long];
                    int32_t *seq = needle ? malloc(sizeof(int32_t) * (size_t)L) : NULL;
                    if (!seq || hay < 1 || ttt_shard_doc(shard, doc, &dst, &dlen, err, sizeof err) ||
                        ttt_shard_read(shard, dst, hay, seq, err, sizeof err)) {
                        fprintf(stderr, "ttt needle: cannot build a haystack of %lld tokens: %s\n", (long long)L,
                                hay < 1 ? "the needle and question are longer" : err);
                        rc = 1;
                    }
                    if (!rc) { /* haystack[:pos] needle haystack[pos:] question */
                        const int64_t pos = (int64_t)floor(o.depths[di] * (double)hay);
                        memmove(seq + pos + nn, seq + pos, sizeof(int32_t) * (size_t)(hay - pos));
                        memcpy(seq + pos, needle, sizeof(int32_t) * (size_t)nn);
                        memcpy(seq + hay + nn, question, sizeof(int32_t) * (size_t)nq);
                    }
                    ttt_tensor *lg = NULL;
                    if (!rc && (ttt_lm_reader_reset(r.ctx, &r.m, &r.main) != TTT_OK ||
                                !(lg = ttt_lm_reader_read(r.ctx, &r.m, &r.main,
                                                          ttt_from_host(r.ctx, TTT_I32, TTT_DIMS(1, L), seq), 0)) ||
                                ttt_copy_to_host(r.ctx, lg, r.row, TTT_F64) != TTT_OK)) {
                        fprintf(stderr, "ttt needle: %s: %s\n", label, ttt_error(r.ctx));
                        rc = 1;
                    }
                    ttt_step_reset(r.ctx);
                    double *first = rc ? NULL : malloc(sizeof(double) * (size_t)r.m.cfg.vocab);
                    if (first) memcpy(first, r.row, sizeof(double) * (size_t)r.m.cfg.vocab);
                    double best = -INFINITY;
                    int64_t best_k = -1;
                    for (int64_t k = 0; k < o.candidates && first; k++) {
                        snprintf(answer, sizeof answer, " %s", keys[k]);
                        int64_t na = 0;
                        int32_t *ans = encode(tok, answer, &na);
                        const double lp = ans ? answer_logprob(&r, first, ans, na) : NAN;
                        free(ans);
                        if (isnan(lp)) {
                            fprintf(stderr, "ttt needle: %s: %s\n", label, ttt_error(r.ctx));
                            rc = 1;
                            break;
                        }
                        if (lp > best) best = lp, best_k = k;
                    }
                    if (!rc && first) {
                        hits += best_k == 0;
                        const int g = greedy_spells(&r, tok, first, keys[0]);
                        if (g < 0) rc = 1;
                        greedy_hits += g > 0;
                    }
                    free(first), free(seq), free(needle);
                }
                if (rc) break;
                rank_acc[mi][li][di] = (double)hits / (double)o.trials;
                greedy_acc[mi][li][di] = (double)greedy_hits / (double)o.trials;
                fprintf(stderr, "  length %7lld depth %.2f: rank %lld/%lld, greedy %lld/%lld  (%.0f s)\n",
                        (long long)o.lengths[li], o.depths[di], (long long)hits, (long long)o.trials,
                        (long long)greedy_hits, (long long)o.trials, cli_now() - t0);
                if (out)
                    fprintf(out,
                            "{\"model\": \"%s\", \"e2e\": %d, \"window\": %lld, \"length\": %lld, \"depth\": %g, "
                            "\"trials\": %lld, \"candidates\": %lld, \"rank_acc\": %g, \"greedy_acc\": %g}\n",
                            label, ttt_lm_is_e2e(&r.m), (long long)r.m.cfg.window, (long long)o.lengths[li],
                            o.depths[di], (long long)o.trials, (long long)o.candidates, rank_acc[mi][li][di],
                            greedy_acc[mi][li][di]);
            }
        free(r.row);
        ttt_lm_reader_free(r.ctx, &r.main);
        ttt_lm_reader_free(r.ctx, &r.scratch);
        ttt_lm_free(r.ctx, &r.m);
        ttt_ctx_free(r.ctx);
    }
    if (!rc) { /* the table: rank accuracy (greedy accuracy) per model, length and depth */
        printf("passkey retrieval, %lld trials per cell, %lld candidates (chance %.0f%%): rank accuracy %% (greedy %%)\n",
               (long long)o.trials, (long long)o.candidates, 100.0 / (double)o.candidates);
        for (int mi = 0; mi < o.n_models; mi++) {
            printf("%s\n  %8s", o.n_labels ? o.label[mi] : o.ckpt[mi], "length");
            for (int di = 0; di < o.n_depths; di++) printf("  depth %-6.2f", o.depths[di]);
            printf("\n");
            for (int li = 0; li < o.n_lengths; li++) {
                printf("  %8lld", (long long)o.lengths[li]);
                for (int di = 0; di < o.n_depths; di++)
                    printf("  %5.0f (%4.0f)", 100 * rank_acc[mi][li][di], 100 * greedy_acc[mi][li][di]);
                printf("\n");
            }
        }
    }
    if (out && fclose(out) != 0 && !rc) {
        fprintf(stderr, "ttt needle: --out %s: %s\n", o.out, strerror(errno));
        rc = 1;
    }
    free(question), free(docs);
    ttt_shard_close(shard);
    ttt_tokenizer_free(tok);
    return rc;
}
