/* The loops behind `ttt adapt` (adapt_loop.h). One session holds the context,
 * the base model and its adapted matrices; every pass of generation decodes
 * prompts of equal token length together over one KV cache (a batch needs no
 * padding then), greedy or sampled with the project's sampler. */
#include "adapt_loop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "sample.h"
#include "ttt/adapter.h"
#include "ttt/tasks.h"
#include "ttt/ttt.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* ---- the session ---- */

typedef struct {
    ttt_ctx *ctx;
    ttt_llama m;
    ttt_adapted_set set;
    int64_t V, V_text;
    double *rows;         /* [gen_batch, V] the last logits of each row */
    sample_cand *cands;   /* [V] */
} session;

typedef struct {
    int32_t *ids;
    int64_t n;
} toks;

static void toks_free(toks *t, int n) {
    for (int i = 0; t && i < n; i++) free(t[i].ids);
    free(t);
}

static int which_of(const char *matrices) {
    return !strcmp(matrices, "attn") ? TTT_ADAPT_ATTN : !strcmp(matrices, "all") ? TTT_ADAPT_ATTN | TTT_ADAPT_MLP : TTT_ADAPT_MLP;
}

static void session_close(session *s) {
    ttt_adapted_set_free(s->ctx, &s->set);
    ttt_llama_free(s->ctx, &s->m);
    free(s->rows);
    free(s->cands);
    if (s->ctx) ttt_ctx_free(s->ctx);
    *s = (session){0};
}

static int session_open(const adapt_args *a, session *s, int need_svd) {
    *s = (session){0};
    char err[1024];
    ttt_ctx_config cc = {.device = a->device, .seed = (uint64_t)a->seed, .threads = a->threads};
    if (!(s->ctx = ttt_ctx_new(&cc))) {
        fprintf(stderr, "ttt adapt: could not create a %s context: %s\n", a->device == TTT_CUDA ? "cuda" : "cpu",
                ttt_runtime_error());
        return EXIT_RUNTIME;
    }
    const double t0 = cli_now();
    if (ttt_llama_load(s->ctx, a->model, &s->m, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt adapt: --model %s: %s\n", a->model, err);
        return EXIT_RUNTIME;
    }
    if (!s->m.chat_template) {
        fprintf(stderr, "ttt adapt: --model %s has no chat template (an instruct model is needed)\n", a->model);
        return EXIT_RUNTIME;
    }
    s->V = s->m.cfg.vocab;
    s->V_text = ttt_tokenizer_vocab_size(s->m.tok);
    if (s->V_text > s->V) s->V_text = s->V;
    s->rows = malloc(sizeof(double) * (size_t)(s->V * a->gen_batch));
    s->cands = malloc(sizeof(sample_cand) * (size_t)s->V);
    if (!s->rows || !s->cands) {
        fprintf(stderr, "ttt adapt: out of host memory\n");
        return EXIT_RUNTIME;
    }
    if (ttt_adapted_set_init(s->ctx, &s->m, which_of(a->matrices), &s->set, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt adapt: %s\n", err);
        return EXIT_RUNTIME;
    }
    fprintf(stderr, "%s: %lld blocks, width %lld, %.1fM parameters, loaded in %.2f s on %s; %d adapted matrices (%s)\n",
            a->model, (long long)s->m.cfg.depth, (long long)s->m.cfg.dim, ttt_llama_param_count(&s->m) / 1e6,
            cli_now() - t0, a->device == TTT_CUDA ? "cuda" : "cpu", s->set.n, a->matrices);
    if (!need_svd) return 0;
    char cache[4096];
    if (a->svd_cache) snprintf(cache, sizeof cache, "%s", a->svd_cache);
    else {
        const size_t len = strlen(a->model);
        const int gguf = len > 5 && !strcmp(a->model + len - 5, ".gguf");
        snprintf(cache, sizeof cache, gguf ? "%s.svd-%s.safetensors" : "%s/svd-%s.safetensors", a->model, a->matrices);
    }
    if (ttt_svd_compute(s->ctx, &s->set, cache, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt adapt: %s\n", err);
        return EXIT_RUNTIME;
    }
    fprintf(stderr, "SVD of %d matrices: %s (%s)\n", s->set.n, s->set.cache_note, cache);
    if (s->set.seconds > 0) fprintf(stderr, "SVD computed in %.2f s\n", s->set.seconds);
    return 0;
}

/* ---- prompts and answers ---- */

/* The chat-formatted prompt's token ids (with bos when the model wants one). */
static int encode_chat(session *s, const char *user, toks *out) {
    char err[512], *text = NULL;
    ttt_token_ids ids = {0};
    *out = (toks){0};
    if (ttt_llama_chat_prompt(&s->m, NULL, user, &text, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt adapt: chat template: %s\n", err);
        return TTT_ERR;
    }
    if (s->m.add_bos && s->m.bos >= 0 && (ids.ids = malloc(sizeof(int32_t))) != NULL) {
        ids.ids[0] = s->m.bos;
        ids.n = ids.cap = 1;
    }
    const int rc = ttt_tokenizer_encode(s->m.tok, text, strlen(text), &ids, err, sizeof err);
    free(text);
    if (rc != TTT_OK) {
        fprintf(stderr, "ttt adapt: tokenizer: %s\n", err);
        ttt_token_ids_free(&ids);
        return TTT_ERR;
    }
    out->ids = ids.ids;
    out->n = (int64_t)ids.n;
    return TTT_OK;
}

/* The text of an answer, without its end-of-turn token (malloc'd). */
static char *answer_text(session *s, const toks *ans) {
    char err[256], *text = NULL;
    size_t len = 0;
    int64_t n = ans->n;
    if (n > 0 && (ans->ids[n - 1] == s->m.eot || ans->ids[n - 1] == s->m.eos)) n--;
    if (ttt_tokenizer_decode(s->m.tok, ans->ids, (size_t)n, 1, &text, &len, err, sizeof err) != TTT_OK) return strdup("");
    return text;
}

static int stop_token(const session *s, int32_t id) { return id == s->m.eot || id == s->m.eos; }

typedef struct {
    int64_t len, idx;
} by_len;
static int cmp_len(const void *x, const void *y) {
    const by_len *a = x, *b = y;
    return a->len != b->len ? (a->len < b->len ? -1 : 1) : (a->idx < b->idx ? -1 : a->idx > b->idx);
}

/* Answers (token ids, ending with the stop token when one was sampled) to n
 * prompts, decoded by view in groups of equal prompt length. */
static int generate(session *s, const adapt_args *a, const ttt_llama *view, const toks *prompts, int n,
                    const sample_params *sp, uint64_t *rng, toks *answers) {
    ttt_ctx *ctx = s->ctx;
    by_len *order = malloc(sizeof *order * (size_t)n);
    if (!order) return TTT_ERR;
    for (int i = 0; i < n; i++) order[i] = (by_len){prompts[i].n, i};
    qsort(order, (size_t)n, sizeof *order, cmp_len);
    for (int i = 0; i < n; i++) answers[i] = (toks){calloc((size_t)a->max_new, sizeof(int32_t)), 0};
    int rc = TTT_OK;
    int32_t *buf = NULL, *next = NULL;
    int *done = NULL;
    for (int g0 = 0; rc == TTT_OK && g0 < n;) {
        const int64_t L = order[g0].len;
        int g = 0;
        while (g0 + g < n && order[g0 + g].len == L && g < a->gen_batch) g++;
        ttt_lm_cache cache = {0};
        const ttt_mark_t mark0 = ttt_mark(ctx);
        free(buf), free(next), free(done);
        buf = malloc(sizeof(int32_t) * (size_t)(g * L));
        next = malloc(sizeof(int32_t) * (size_t)g);
        done = calloc((size_t)g, sizeof *done);
        if (!buf || !next || !done || ttt_llama_cache_init(ctx, view, &cache, g, L + a->max_new) != TTT_OK) {
            fprintf(stderr, "ttt adapt: generation: %s\n", buf && next && done ? ttt_error(ctx) : "out of host memory");
            rc = TTT_ERR;
            break;
        }
        for (int r = 0; r < g; r++) memcpy(buf + r * L, prompts[order[g0 + r].idx].ids, sizeof(int32_t) * (size_t)L);
        ttt_tensor *lg = ttt_llama_decode(ctx, view, &cache, ttt_from_host(ctx, TTT_I32, TTT_DIMS(g, L), buf));
        lg = lg ? ttt_slice(ctx, lg, 1, L - 1, L, 1) : NULL;
        if (!lg || ttt_copy_to_host(ctx, lg, s->rows, TTT_F64) != TTT_OK) rc = TTT_ERR;
        for (int64_t t = 0; rc == TTT_OK && t < a->max_new; t++) {
            int left = 0;
            for (int r = 0; r < g; r++) {
                toks *ans = &answers[order[g0 + r].idx];
                next[r] = s->m.eot >= 0 ? s->m.eot : 0;
                if (done[r]) continue;
                const int32_t id = sample_token(s->rows + r * s->V, s->V_text, sp, rng, s->cands);
                ans->ids[ans->n++] = id;
                next[r] = id;
                done[r] = stop_token(s, id);
                left += !done[r];
            }
            if (!left || t + 1 == a->max_new) break;
            const ttt_mark_t mark = ttt_mark(ctx);
            lg = ttt_llama_decode(ctx, view, &cache, ttt_from_host(ctx, TTT_I32, TTT_DIMS(g, 1), next));
            if (!lg || ttt_copy_to_host(ctx, lg, s->rows, TTT_F64) != TTT_OK) rc = TTT_ERR;
            ttt_release(ctx, mark);
        }
        if (rc != TTT_OK) fprintf(stderr, "ttt adapt: generation: %s\n", ttt_error(ctx));
        ttt_lm_cache_free(ctx, &cache);
        ttt_release(ctx, mark0);
        g0 += g;
    }
    free(order), free(buf), free(next), free(done);
    return rc;
}

/* ---- task examples ---- */

typedef struct {
    int n;
    char **prompt, **answer;
    toks *ids;
} examples;

static void examples_free(examples *e) {
    for (int i = 0; i < e->n; i++) free(e->prompt[i]), free(e->answer[i]);
    free(e->prompt), free(e->answer);
    toks_free(e->ids, e->n);
    *e = (examples){0};
}

static int split_of(const char *s) {
    return !s || !strcmp(s, "test") ? TTT_SPLIT_TEST : !strcmp(s, "val") ? TTT_SPLIT_VAL : TTT_SPLIT_TRAIN;
}

/* n examples of family from split starting at index start; wrap: prompts wrapped for classification. */
static int examples_make(session *s, const char *family, int split, int64_t start, int n, int classify, examples *e) {
    char err[512];
    *e = (examples){.n = 0};
    e->prompt = calloc((size_t)n, sizeof *e->prompt);
    e->answer = calloc((size_t)n, sizeof *e->answer);
    e->ids = calloc((size_t)n, sizeof *e->ids);
    if (!e->prompt || !e->answer || !e->ids) return TTT_ERR;
    for (int i = 0; i < n; i++) {
        ttt_task_example ex;
        if (ttt_task_generate(family, split, start + i, &ex, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt adapt: task %s: %s\n", family, err);
            return TTT_ERR;
        }
        e->n = i + 1;
        if (classify) {
            e->prompt[i] = ttt_task_classify_prompt(ex.prompt);
            e->answer[i] = strdup(ttt_task_family_find(family)->category);
        } else {
            e->prompt[i] = strdup(ex.prompt);
            e->answer[i] = strdup(ex.answer);
        }
        ttt_task_example_free(&ex);
        if (!e->prompt[i] || !e->answer[i] || encode_chat(s, e->prompt[i], &e->ids[i]) != TTT_OK) return TTT_ERR;
    }
    return TTT_OK;
}

/* Greedy answers of view to e; correct[i] (may be NULL) set; returns the accuracy (NaN on error). */
static double score(session *s, const adapt_args *a, const ttt_llama *view, const ttt_task_family *fam, const examples *e,
                    int *correct, char ***texts) {
    toks *ans = calloc((size_t)e->n, sizeof *ans);
    uint64_t rng = 1;
    const sample_params greedy = {0, 0, 1};
    if (!ans || generate(s, a, view, e->ids, e->n, &greedy, &rng, ans) != TTT_OK) {
        toks_free(ans, e->n);
        return NAN;
    }
    int right = 0;
    if (texts) *texts = calloc((size_t)e->n, sizeof **texts);
    for (int i = 0; i < e->n; i++) {
        char *t = answer_text(s, &ans[i]);
        const int ok = ttt_task_check(fam, e->answer[i], t);
        right += ok;
        if (correct) correct[i] = ok;
        if (texts && *texts) (*texts)[i] = t;
        else free(t);
    }
    toks_free(ans, e->n);
    return (double)right / e->n;
}

/* The mean log-prob per token that view gives the expected answers of e (the answer text
 * and the end of the turn, after the chat prompt), teacher-forced, no graph: a fitness
 * with more resolution than accuracy on a few examples. NaN on error. */
static double answer_logprob(session *s, const ttt_llama *view, const examples *e) {
    double total = 0;
    int64_t count = 0;
    char err[256];
    for (int i = 0; i < e->n; i++) {
        ttt_token_ids ans = {0};
        if (ttt_tokenizer_encode(s->m.tok, e->answer[i], strlen(e->answer[i]), &ans, err, sizeof err) != TTT_OK) return NAN;
        const int64_t P = e->ids[i].n, A = (int64_t)ans.n + (s->m.eot >= 0), T = P + A;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
        float *mask = calloc((size_t)T, sizeof *mask);
        if (!ids || !mask) {
            free(ids), free(mask), ttt_token_ids_free(&ans);
            return NAN;
        }
        memcpy(ids, e->ids[i].ids, sizeof(int32_t) * (size_t)P);
        memcpy(ids + P, ans.ids, sizeof(int32_t) * ans.n);
        if (s->m.eot >= 0) ids[T - 1] = s->m.eot;
        for (int64_t t = P; t < T; t++) mask[t] = 1;
        const double one = 1.0;
        double lp = NAN;
        const ttt_mark_t mark = ttt_mark(s->ctx);
        ttt_no_grad_begin(s->ctx);
        ttt_tensor *loss = ttt_adapter_pg_loss(s->ctx, view, NULL, ids, mask, 1, T, &one, 0.0, &lp, NULL);
        ttt_no_grad_end(s->ctx);
        ttt_release(s->ctx, mark);
        free(ids), free(mask), ttt_token_ids_free(&ans);
        if (!loss) return NAN;
        total += lp * (double)A, count += A;
    }
    return count ? total / (double)count : NAN;
}

static const ttt_task_family *family_or_die(const char *name) {
    const ttt_task_family *f = ttt_task_family_find(name);
    if (!f) {
        fprintf(stderr, "ttt adapt: unknown task family '%s' (ttt tasks list shows them)\n", name);
        return NULL;
    }
    return f;
}

/* ---- svd ---- */

int adapt_svd(const adapt_args *a) {
    session s;
    int rc = session_open(a, &s, 1);
    if (!rc) {
        int64_t z = 0;
        for (int i = 0; i < s.set.n; i++) z += s.set.s[i]->shape[0];
        printf("%d matrices (%s); an SVF expert has %lld parameters\n", s.set.n, a->matrices, (long long)z);
        int64_t lora = 0;
        for (int i = 0; i < s.set.n; i++) lora += a->rank * (s.set.w[i]->shape[0] + s.set.w[i]->shape[1]);
        printf("LoRA rank %lld: %lld parameters\n", (long long)a->rank, (long long)lora);
    }
    session_close(&s);
    return rc;
}

/* ---- eval ---- */

static int load_expert(session *s, const char *path, ttt_adapter *ad, char *category, size_t clen) {
    char err[1024], *meta = NULL;
    if (ttt_adapter_load(s->ctx, path, &s->set, ad, &meta, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt adapt: %s\n", err);
        return TTT_ERR;
    }
    if (category && (!meta || ttt_metadata_get(meta, "category", category, clen) != TTT_OK)) snprintf(category, clen, "?");
    free(meta);
    return TTT_OK;
}

int adapt_eval(const adapt_args *a) {
    const ttt_task_family *fam = family_or_die(a->task);
    if (!fam) return EXIT_USAGE;
    session s;
    ttt_adapter ad = {0};
    ttt_llama view = {0};
    examples e = {0};
    char **texts = NULL;
    int rc = session_open(a, &s, a->expert != NULL);
    if (rc) goto done;
    rc = EXIT_RUNTIME;
    if (a->expert && load_expert(&s, a->expert, &ad, NULL, 0) != TTT_OK) goto done;
    if (ttt_adapter_view_materialize(s.ctx, &s.m, &s.set, a->expert ? &ad : NULL, &view) != TTT_OK) {
        fprintf(stderr, "ttt adapt: %s\n", ttt_error(s.ctx));
        goto done;
    }
    const int n = (int)(a->n ? a->n : 100);
    if (examples_make(&s, fam->name, split_of(a->split), a->start, n, 0, &e) != TTT_OK) goto done;
    const double t0 = cli_now();
    const double acc = score(&s, a, &view, fam, &e, NULL, &texts);
    if (isnan(acc)) goto done;
    for (int i = 0; texts && i < e.n && i < a->show; i++)
        printf("--- %d\n%s\n=> %s   (expected %s)\n", i, e.prompt[i], texts[i], e.answer[i]);
    printf("%s %s [%lld, %lld): accuracy %.4f (%d examples, %s) in %.1f s\n", fam->name, a->split ? a->split : "test",
           (long long)a->start, (long long)(a->start + n), acc, e.n, a->expert ? a->expert : "base model",
           cli_now() - t0);
    rc = 0;
done:
    for (int i = 0; texts && i < e.n; i++) free(texts[i]);
    free(texts);
    examples_free(&e);
    ttt_adapter_view_free(s.ctx, &view);
    ttt_adapter_free(s.ctx, &ad);
    session_close(&s);
    return rc;
}

/* ---- train (REINFORCE) ---- */

int adapt_train(const adapt_args *a) {
    const int classify = !strcmp(a->task, "classify");
    const ttt_task_family *fam = family_or_die(a->task);
    if (!fam) return EXIT_USAGE;
    if (fam->held_out) {
        fprintf(stderr, "ttt adapt train: '%s' is a held-out family (for transfer); experts train on the others\n",
                fam->name);
        return EXIT_USAGE;
    }
    const int svf = !strcmp(a->method, "svf");
    session s;
    ttt_adapter ad = {0};
    ttt_optimizer *opt = NULL;
    ttt_tensor **params = NULL;
    int np = 0, rc = session_open(a, &s, svf);
    examples val = {0};
    FILE *metrics = NULL;
    int32_t *ids = NULL;
    float *mask = NULL;
    double *rewards = NULL;
    toks *answers = NULL;
    examples batch = {0};
    if (rc) goto done;
    rc = EXIT_RUNTIME;
    char err[1024];
    if (ttt_adapter_new(s.ctx, &s.set, svf ? TTT_ADAPTER_SVF : TTT_ADAPTER_LORA, a->rank, a->alpha, (uint64_t)a->seed, &ad,
                        err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt adapt train: %s\n", err);
        goto done;
    }
    ttt_adapter_params(&ad, &params, &np);
    opt = ttt_adamw_new(s.ctx, np, params, NULL, &(ttt_optim_config){.lr = a->lr});
    if (!opt) {
        fprintf(stderr, "ttt adapt train: %s\n", ttt_error(s.ctx));
        goto done;
    }
    if (a->metrics && !(metrics = fopen(a->metrics, "w"))) {
        fprintf(stderr, "ttt adapt train: --metrics %s: cannot open for writing\n", a->metrics);
        goto done;
    }
    fprintf(stderr, "%s expert on %s: %lld trainable parameters (%s), batch %lld, lr %g, kl %g, %lld steps\n",
            svf ? "SVF" : "LoRA", fam->name, (long long)ttt_adapter_param_count(&ad), a->matrices, (long long)a->batch,
            a->lr, a->kl, (long long)a->steps);
    if (examples_make(&s, fam->name, TTT_SPLIT_VAL, 0, (int)a->val_n, classify, &val) != TTT_OK) goto done;
    const ttt_task_family *judge = classify ? ttt_task_family_find("classify") : fam;
    char category[32];
    snprintf(category, sizeof category, "%s", fam->category);
    const char *meta[] = {"task", fam->name, "category", category, "method", a->method, NULL};
    /* validation accuracy of an adapter (materialized once) */
#define VALIDATE(acc_out)                                                                                    \
    do {                                                                                                     \
        ttt_llama vv;                                                                                        \
        acc_out = NAN;                                                                                       \
        if (ttt_adapter_view_materialize(s.ctx, &s.m, &s.set, &ad, &vv) == TTT_OK) {                         \
            acc_out = score(&s, a, &vv, judge, &val, NULL, NULL);                                            \
            ttt_adapter_view_free(s.ctx, &vv);                                                               \
        }                                                                                                    \
    } while (0)
    double best;
    VALIDATE(best);
    if (isnan(best)) {
        fprintf(stderr, "ttt adapt train: validation: %s\n", ttt_error(s.ctx));
        goto done;
    }
    if (ttt_adapter_save(s.ctx, a->out, &ad, &s.set, meta, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt adapt train: --out: %s\n", err);
        goto done;
    }
    fprintf(stderr, "step 0: validation accuracy %.4f (%lld examples): the start (≈ the base model)\n", best,
            (long long)a->val_n);
    if (metrics) fprintf(metrics, "{\"step\": 0, \"val_acc\": %.6f}\n", best), fflush(metrics);
    int64_t best_step = 0;
    const int B = (int)a->batch;
    rewards = malloc(sizeof(double) * (size_t)B);
    answers = calloc((size_t)B, sizeof *answers);
    uint64_t rng = (uint64_t)a->seed * 0x9E3779B97F4A7C15ull + 1;
    const sample_params sp = {a->temperature, 0, 1.0};
    const double t_start = cli_now();
    for (int64_t step = 1; step <= a->steps; step++) {
        const double t0 = cli_now();
        examples_free(&batch);
        if (!rewards || !answers || examples_make(&s, fam->name, TTT_SPLIT_TRAIN, (step - 1) * B, B, classify, &batch) != TTT_OK)
            goto done;
        /* 1. sample answers with the current expert */
        ttt_llama gen;
        if (ttt_adapter_view_materialize(s.ctx, &s.m, &s.set, &ad, &gen) != TTT_OK) {
            fprintf(stderr, "ttt adapt train: %s\n", ttt_error(s.ctx));
            goto done;
        }
        for (int i = 0; i < B; i++) free(answers[i].ids), answers[i] = (toks){0};
        const int grc = generate(&s, a, &gen, batch.ids, B, &sp, &rng, answers);
        ttt_adapter_view_free(s.ctx, &gen);
        if (grc != TTT_OK) goto done;
        const double t_gen = cli_now() - t0;
        /* 2. rewards: +1 right, -1 wrong */
        int right = 0;
        int64_t T = 2;
        for (int i = 0; i < B; i++) {
            char *t = answer_text(&s, &answers[i]);
            const int ok = ttt_task_check(judge, batch.answer[i], t);
            free(t);
            right += ok;
            rewards[i] = ok ? 1.0 : -1.0;
            if (batch.ids[i].n + answers[i].n > T) T = batch.ids[i].n + answers[i].n;
        }
        if (a->baseline) { /* --baseline: the batch's mean reward subtracted (variance reduction) */
            double mean = 0;
            for (int i = 0; i < B; i++) mean += rewards[i] / B;
            for (int i = 0; i < B; i++) rewards[i] -= mean;
        }
        /* 3. the policy gradient, in micro-batches, through one view of the expert */
        free(ids), free(mask);
        ids = malloc(sizeof(int32_t) * (size_t)(a->micro_batch * T));
        mask = malloc(sizeof(float) * (size_t)(a->micro_batch * T));
        if (!ids || !mask) goto done;
        ttt_step_reset(s.ctx);
        ttt_zero_grad(s.ctx, np, params);
        ttt_llama view;
        if (ttt_adapter_view(s.ctx, &s.m, &s.set, &ad, &view) != TTT_OK) {
            fprintf(stderr, "ttt adapt train: %s\n", ttt_error(s.ctx));
            goto done;
        }
        double logp = 0, kl = 0;
        int ok = 1;
        for (int b0 = 0; ok && b0 < B; b0 += (int)a->micro_batch) {
            const int mb = b0 + a->micro_batch <= B ? (int)a->micro_batch : B - b0;
            for (int r = 0; r < mb; r++) {
                const toks *p = &batch.ids[b0 + r], *q = &answers[b0 + r];
                for (int64_t t = 0; t < T; t++) {
                    const int64_t j = r * T + t;
                    ids[j] = t < p->n ? p->ids[t] : t < p->n + q->n ? q->ids[t - p->n] : (s.m.eot >= 0 ? s.m.eot : 0);
                    mask[j] = t >= p->n && t < p->n + q->n;
                }
            }
            const ttt_mark_t mark = ttt_mark(s.ctx);
            double lp = 0, k = 0;
            ttt_tensor *loss = ttt_adapter_pg_loss(s.ctx, &view, &s.m, ids, mask, mb, T, rewards + b0, a->kl, &lp, &k);
            loss = loss ? ttt_scale(s.ctx, loss, (double)mb / B) : NULL;
            ok = loss && ttt_backward(s.ctx, loss) == TTT_OK;
            ttt_release(s.ctx, mark);
            logp += lp * mb / B, kl += k * mb / B;
        }
        ttt_adapter_view_free(s.ctx, &view);
        double gnorm = 0;
        if (!ok || ttt_clip_grad_norm(s.ctx, np, params, a->clip > 0 ? a->clip : 1e30, &gnorm) != TTT_OK ||
            ttt_optimizer_step(opt, -1) != TTT_OK) {
            fprintf(stderr, "ttt adapt train: step %lld: %s\n", (long long)step, ttt_error(s.ctx));
            goto done;
        }
        ttt_step_reset(s.ctx);
        const double dt = cli_now() - t0;
        double mean_r = 0;
        for (int i = 0; i < B; i++) mean_r += rewards[i] / B;
        double acc = NAN;
        /* out of time when another step like this one would pass --time-limit: validate now and stop */
        const int out_of_time = a->time_limit > 0 && cli_now() - t_start + dt > a->time_limit && step < a->steps;
        const int validate = step % a->eval_every == 0 || step == a->steps || out_of_time;
        if (validate) {
            VALIDATE(acc);
            if (isnan(acc)) {
                fprintf(stderr, "ttt adapt train: validation: %s\n", ttt_error(s.ctx));
                goto done;
            }
            if (acc > best) {
                best = acc, best_step = step;
                char st[24];
                snprintf(st, sizeof st, "%lld", (long long)step);
                const char *meta2[] = {"task", fam->name, "category", category, "method", a->method, "step", st, NULL};
                if (ttt_adapter_save(s.ctx, a->out, &ad, &s.set, meta2, err, sizeof err) != TTT_OK) {
                    fprintf(stderr, "ttt adapt train: --out: %s\n", err);
                    goto done;
                }
            }
        }
        fprintf(stderr, "step %lld/%lld: reward %+.3f (%d/%d right), answer log-prob %.3f, kl %.4f, grad norm %.3g, %.1f s (%.1f generating)",
                (long long)step, (long long)a->steps, mean_r, right, B, logp, kl, gnorm, dt, t_gen);
        if (validate) fprintf(stderr, "; validation %.4f (best %.4f at step %lld)", acc, best, (long long)best_step);
        fprintf(stderr, "\n");
        if (out_of_time) fprintf(stderr, "stopping after step %lld: --time-limit %g s\n", (long long)step, a->time_limit);
        if (metrics) {
            fprintf(metrics, "{\"step\": %lld, \"reward\": %.6f, \"sample_acc\": %.6f, \"logp\": %.6f, \"kl\": %.6f, "
                             "\"grad_norm\": %.6g, \"seconds\": %.3f",
                    (long long)step, mean_r, (double)right / B, logp, kl, gnorm, dt);
            if (validate) fprintf(metrics, ", \"val_acc\": %.6f", acc);
            fprintf(metrics, "}\n");
            fflush(metrics);
        }
        if (out_of_time) break;
    }
#undef VALIDATE
    printf("%s: best validation accuracy %.4f at step %lld (step 0: the start); %lld parameters\n", a->out, best,
           (long long)best_step, (long long)ttt_adapter_param_count(&ad));
    rc = 0;
done:
    if (metrics) fclose(metrics);
    free(ids), free(mask), free(rewards);
    toks_free(answers, (int)a->batch);
    examples_free(&batch);
    examples_free(&val);
    ttt_optimizer_free(opt);
    free(params);
    ttt_adapter_free(s.ctx, &ad);
    session_close(&s);
    return rc;
}

/* ---- dispatch ---- */

static const char *const CATEGORIES[4] = {"math", "code", "reasoning", "other"};

static int category_index(const char *c) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(c, CATEGORIES[i])) return i;
    return 3;
}

/* The category a classification answer names: the word the classify family's checker
 * reads ("This is a math task." -> math), with a few synonyms. */
static int parse_category(const char *text) {
    char w[64];
    if (!ttt_task_extract(TTT_ANSWER_WORD, text, w, sizeof w)) return 3;
    for (char *c = w; *c; c++)
        if (*c >= 'A' && *c <= 'Z') *c = (char)(*c + 32);
    if (!strncmp(w, "math", 4) || !strcmp(w, "arithmetic")) return 0;
    if (!strncmp(w, "code", 4) || !strncmp(w, "coding", 6) || !strncmp(w, "program", 7) || !strcmp(w, "python")) return 1;
    if (!strncmp(w, "reason", 6) || !strncmp(w, "logic", 5)) return 2;
    return 3;
}

static double gauss(uint64_t *rng) {
    const double u1 = ((sample_rng_next(rng) >> 11) + 0.5) * 0x1.0p-53, u2 = (sample_rng_next(rng) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

typedef struct {
    double fit;
    int idx;
} ranked;
static int cmp_fit(const void *x, const void *y) {
    const ranked *a = x, *b = y;
    return a->fit != b->fit ? (a->fit > b->fit ? -1 : 1) : a->idx - b->idx;
}

/* CEM over mixing coefficients: fitness = accuracy on shots. *best_alpha (D values) receives the best. */
static int cem(session *s, const adapt_args *a, const ttt_adapter *const *experts, int K, const ttt_task_family *fam,
               const examples *shots, double *best_alpha, double *best_fit, int64_t *evals) {
    const int D = a->per_matrix ? K * s->set.n : K, P = (int)a->cem_pop;
    const int elite = (int)ceil(a->cem_elite * P) < 1 ? 1 : (int)ceil(a->cem_elite * P);
    double *mu = malloc(sizeof(double) * D), *sd = malloc(sizeof(double) * D), *pop = malloc(sizeof(double) * D * P);
    ranked *rk = malloc(sizeof *rk * P);
    if (!mu || !sd || !pop || !rk) return TTT_ERR;
    uint64_t rng = (uint64_t)a->seed ^ 0xC0FFEEull;
    for (int d = 0; d < D; d++) mu[d] = 1.0 / K, sd[d] = 0.5;
    *best_fit = -1;
    *evals = 0;
    int rc = TTT_OK;
    char err[512];
    for (int64_t it = 0; rc == TTT_OK && it < a->cem_iters; it++) {
        for (int p = 0; rc == TTT_OK && p < P; p++) {
            double *x = pop + (size_t)p * D;
            for (int d = 0; d < D; d++) x[d] = p == 0 && it == 0 ? mu[d] : mu[d] + sd[d] * gauss(&rng);
            ttt_adapter mix;
            ttt_llama view;
            if (ttt_adapter_mix(s->ctx, K, experts, x, a->per_matrix, &mix, err, sizeof err) != TTT_OK) {
                fprintf(stderr, "ttt adapt: cem: %s\n", err);
                rc = TTT_ERR;
                break;
            }
            if (ttt_adapter_view_materialize(s->ctx, &s->m, &s->set, &mix, &view) != TTT_OK) rc = TTT_ERR;
            else {
                /* accuracy, or (--cem-fitness logprob) accuracy + 0.01 x the right answers' mean log-prob,
                 * which orders mixtures that the few shots' accuracy cannot tell apart */
                double fit = score(s, a, &view, fam, shots, NULL, NULL);
                if (a->cem_logprob && !isnan(fit)) fit += 0.01 * answer_logprob(s, &view, shots);
                rk[p] = (ranked){fit, p};
                if (isnan(rk[p].fit)) rc = TTT_ERR;
                ttt_adapter_view_free(s->ctx, &view);
            }
            ttt_adapter_free(s->ctx, &mix);
            ++*evals;
            if (rc == TTT_OK && rk[p].fit > *best_fit) {
                *best_fit = rk[p].fit;
                memcpy(best_alpha, x, sizeof(double) * D);
            }
        }
        if (rc != TTT_OK) break;
        qsort(rk, (size_t)P, sizeof *rk, cmp_fit);
        double spread = 0;
        for (int d = 0; d < D; d++) {
            double m = 0, v = 0;
            for (int e = 0; e < elite; e++) m += pop[(size_t)rk[e].idx * D + d] / elite;
            for (int e = 0; e < elite; e++) v += pow(pop[(size_t)rk[e].idx * D + d] - m, 2) / elite;
            mu[d] = m;
            sd[d] = sqrt(v) + 1e-3;
            spread = fmax(spread, sd[d]);
        }
        fprintf(stderr, "  cem iteration %lld: best %.3f, elite mean %.3f, spread %.3g\n", (long long)it + 1, *best_fit,
                rk[elite - 1].fit, spread);
        if (*best_fit >= 1.0 || spread < 2e-3) break;
    }
    free(mu), free(sd), free(pop), free(rk);
    return rc;
}

int adapt_dispatch(const adapt_args *a) {
    const int strategy = !strcmp(a->strategy, "prompt") ? 0 : !strcmp(a->strategy, "classifier") ? 1 : 2;
    for (int f = 0; f < a->n_tasks; f++)
        if (!family_or_die(a->tasks[f])) return EXIT_USAGE;
    session s;
    int rc = session_open(a, &s, 1);
    ttt_adapter *ex = calloc((size_t)a->n_experts, sizeof *ex), classifier = {0};
    char (*cat)[32] = calloc((size_t)a->n_experts, sizeof *cat);
    int confusion[4][4] = {{0}};
    ttt_llama views[4], cls_view = {0};
    memset(views, 0, sizeof views);
    if (rc) goto done;
    rc = EXIT_RUNTIME;
    if (!ex || !cat) goto done;
    for (int k = 0; k < a->n_experts; k++) {
        if (load_expert(&s, a->experts[k], &ex[k], cat[k], sizeof cat[k]) != TTT_OK) goto done;
        if (ex[k].kind != TTT_ADAPTER_SVF && strategy == 2) {
            fprintf(stderr, "ttt adapt dispatch: %s is not an SVF expert (CEM mixes SVF experts)\n", a->experts[k]);
            goto done;
        }
        fprintf(stderr, "expert %d: %s (%s)\n", k, a->experts[k], cat[k]);
    }
    /* the adapted models of the categories (prompt / classifier): base where no expert */
    for (int c = 0; strategy < 2 && c < 4; c++) {
        const ttt_adapter *pick = NULL;
        for (int k = 0; k < a->n_experts; k++)
            if (category_index(cat[k]) == c && c < 3) pick = &ex[k];
        if (ttt_adapter_view_materialize(s.ctx, &s.m, &s.set, pick, &views[c]) != TTT_OK) {
            fprintf(stderr, "ttt adapt dispatch: %s\n", ttt_error(s.ctx));
            goto done;
        }
    }
    if (strategy == 1) {
        if (load_expert(&s, a->classifier, &classifier, NULL, 0) != TTT_OK ||
            ttt_adapter_view_materialize(s.ctx, &s.m, &s.set, &classifier, &cls_view) != TTT_OK)
            goto done;
    }
    const int n = (int)(a->n ? a->n : 50);
    double p1_total = 0, p2_total = 0;
    int all_right = 0, all_n = 0;
    printf("%-14s %-10s %8s %8s %9s %9s  %s\n", "family", "category", "n", "accuracy", "pass1 s", "pass2 s", "chosen");
    for (int f = 0; f < a->n_tasks; f++) {
        const ttt_task_family *fam = ttt_task_family_find(a->tasks[f]);
        const int truth = category_index(fam->category);
        examples e = {0}, shots = {0};
        if (examples_make(&s, fam->name, split_of(a->split), 0, n, 0, &e) != TTT_OK) {
            examples_free(&e);
            goto done;
        }
        int *chosen = calloc((size_t)n, sizeof *chosen), *right = calloc((size_t)n, sizeof *right);
        double p1 = 0, p2 = 0;
        char note[256] = "";
        int frc = TTT_OK;
        if (strategy < 2) {
            /* pass 1: classify every prompt (the base model, or the classification expert) */
            examples q = {0};
            const double t0 = cli_now();
            frc = examples_make(&s, fam->name, split_of(a->split), 0, n, 1, &q);
            toks *ans = frc == TTT_OK ? calloc((size_t)n, sizeof *ans) : NULL;
            uint64_t rng = 1;
            const sample_params greedy = {0, 0, 1};
            adapt_args short_answers = *a;
            short_answers.max_new = 8; /* "This is a math task." */
            if (!ans || generate(&s, &short_answers, strategy ? &cls_view : &s.m, q.ids, n, &greedy, &rng, ans) != TTT_OK)
                frc = TTT_ERR;
            for (int i = 0; frc == TTT_OK && i < n; i++) {
                char *t = answer_text(&s, &ans[i]);
                chosen[i] = parse_category(t);
                free(t);
            }
            toks_free(ans, n);
            examples_free(&q);
            p1 = cli_now() - t0;
            /* pass 2: each prompt answered by the model of its chosen category */
            const double t1 = cli_now();
            for (int c = 0; frc == TTT_OK && c < 4; c++) {
                examples sub = {0};
                int m = 0;
                for (int i = 0; i < n; i++) m += chosen[i] == c;
                if (!m) continue;
                sub.n = m;
                sub.prompt = calloc((size_t)m, sizeof *sub.prompt);
                sub.answer = calloc((size_t)m, sizeof *sub.answer);
                sub.ids = calloc((size_t)m, sizeof *sub.ids);
                int *ok = calloc((size_t)m, sizeof *ok);
                for (int i = 0, j = 0; i < n; i++)
                    if (chosen[i] == c) sub.prompt[j] = e.prompt[i], sub.answer[j] = e.answer[i], sub.ids[j++] = e.ids[i];
                if (isnan(score(&s, a, &views[c], fam, &sub, ok, NULL))) frc = TTT_ERR;
                for (int i = 0, j = 0; i < n && frc == TTT_OK; i++)
                    if (chosen[i] == c) right[i] = ok[j++];
                free(ok), free(sub.prompt), free(sub.answer), free(sub.ids); /* the strings belong to e */
            }
            p2 = cli_now() - t1;
        } else {
            /* pass 1: CEM on the family's first validation examples; pass 2: the mixture answers every prompt */
            const int D = a->per_matrix ? a->n_experts * s.set.n : a->n_experts;
            double *alpha = malloc(sizeof(double) * D), fit = 0;
            int64_t evals = 0;
            const double t0 = cli_now();
            const ttt_adapter **eps = malloc(sizeof *eps * (size_t)a->n_experts);
            for (int k = 0; eps && k < a->n_experts; k++) eps[k] = &ex[k];
            frc = alpha && eps ? examples_make(&s, fam->name, TTT_SPLIT_VAL, 0, (int)a->cem_shots, 0, &shots) : TTT_ERR;
            if (frc == TTT_OK) frc = cem(&s, a, eps, a->n_experts, fam, &shots, alpha, &fit, &evals);
            p1 = cli_now() - t0;
            ttt_adapter mix = {0};
            ttt_llama view = {0};
            char err[512];
            const double t1 = cli_now();
            if (frc == TTT_OK && (ttt_adapter_mix(s.ctx, a->n_experts, eps, alpha, a->per_matrix, &mix, err, sizeof err) != TTT_OK ||
                                  ttt_adapter_view_materialize(s.ctx, &s.m, &s.set, &mix, &view) != TTT_OK))
                frc = TTT_ERR;
            if (frc == TTT_OK && isnan(score(&s, a, &view, fam, &e, right, NULL))) frc = TTT_ERR;
            p2 = cli_now() - t1;
            /* the expert with the largest total coefficient stands for the choice in the confusion matrix */
            int top = 0;
            double tot_best = -1e300;
            int len = snprintf(note, sizeof note, "alpha");
            for (int k = 0; frc == TTT_OK && k < a->n_experts; k++) {
                double tot = 0;
                for (int i = 0; i < (a->per_matrix ? s.set.n : 1); i++) tot += alpha[a->per_matrix ? k * s.set.n + i : k];
                if (a->per_matrix) tot /= s.set.n;
                if (tot > tot_best) tot_best = tot, top = k;
                if (len < (int)sizeof note - 24) len += snprintf(note + len, sizeof note - (size_t)len, " %s %.2f", cat[k], tot);
            }
            if (len < (int)sizeof note - 40)
                snprintf(note + len, sizeof note - (size_t)len, "; shots fitness %.3f, %lld evals", fit, (long long)evals);
            for (int i = 0; i < n; i++) chosen[i] = category_index(cat[top]);
            ttt_adapter_view_free(s.ctx, &view);
            ttt_adapter_free(s.ctx, &mix);
            free(alpha), free(eps);
        }
        examples_free(&shots);
        if (frc != TTT_OK) {
            fprintf(stderr, "ttt adapt dispatch: %s: %s\n", fam->name, ttt_error(s.ctx));
            free(chosen), free(right);
            examples_free(&e);
            goto done;
        }
        int r = 0, counts[4] = {0};
        for (int i = 0; i < n; i++) r += right[i], counts[chosen[i]]++, confusion[truth][chosen[i]]++;
        if (strategy < 2)
            snprintf(note, sizeof note, "math %d, code %d, reasoning %d, other %d", counts[0], counts[1], counts[2], counts[3]);
        printf("%-14s %-10s %8d %8.4f %9.2f %9.2f  %s\n", fam->name, fam->category, n, (double)r / n, p1, p2, note);
        fflush(stdout);
        all_right += r, all_n += n, p1_total += p1, p2_total += p2;
        free(chosen), free(right);
        examples_free(&e);
    }
    printf("all: accuracy %.4f over %d prompts; pass 1 took %.2f s, pass 2 %.2f s: pass 1 = %.1f%% of pass 2 (strategy %s)\n",
           (double)all_right / all_n, all_n, p1_total, p2_total, 100.0 * p1_total / (p2_total > 0 ? p2_total : 1e-9),
           a->strategy);
    printf("dispatch confusion (rows: the family's category, columns: the chosen one)\n%-10s", "");
    for (int c = 0; c < 4; c++) printf(" %9s", CATEGORIES[c]);
    printf("\n");
    for (int t = 0; t < 4; t++) {
        int any = 0;
        for (int c = 0; c < 4; c++) any += confusion[t][c];
        if (!any) continue;
        printf("%-10s", CATEGORIES[t]);
        for (int c = 0; c < 4; c++) printf(" %9d", confusion[t][c]);
        printf("\n");
    }
    rc = 0;
done:
    for (int c = 0; c < 4; c++) ttt_adapter_view_free(s.ctx, &views[c]);
    ttt_adapter_view_free(s.ctx, &cls_view);
    for (int k = 0; ex && k < a->n_experts; k++) ttt_adapter_free(s.ctx, &ex[k]);
    ttt_adapter_free(s.ctx, &classifier);
    free(ex), free(cat);
    session_close(&s);
    return rc;
}
