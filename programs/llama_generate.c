/* `ttt lm generate --model FILE.gguf|DIR`: text from a pretrained Llama-family
 * model (include/ttt/llama.h) over a KV cache, with the project's sampler
 * (sample.c). --chat wraps one user turn in the model's chat template and
 * prints only the answer. `ttt chat` (cmd_chat.c): a conversation, one line a turn. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "llama_generate.h"
#include "sample.h"
#include "ttt/llama.h"
#include "ttt/runtime.h"
#include "ttt/ttt.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static int emit(const ttt_tokenizer *tok, int32_t id, char *err, size_t err_len) {
    char *text = NULL;
    size_t len = 0;
    if (ttt_tokenizer_decode(tok, &id, 1, 1, &text, &len, err, err_len) != TTT_OK) return TTT_ERR;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    free(text);
    return TTT_OK;
}

/* Reads ids[0..n) after the cached positions; row <- the last position's logits (f64). */
static int feed(ttt_ctx *ctx, const ttt_llama *m, ttt_lm_cache *c, const int32_t *ids, int64_t n, double *row) {
    ttt_step_reset(ctx);
    ttt_tensor *lg = ttt_llama_decode(ctx, m, c, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, n), ids));
    lg = lg ? ttt_slice(ctx, lg, 1, n - 1, n, 1) : NULL;
    return lg && ttt_copy_to_host(ctx, lg, row, TTT_F64) == TTT_OK ? TTT_OK : TTT_ERR;
}

/* Samples from row, prints and feeds tokens until the end of the turn (unless
 * ignore_eos) or max tokens. *made: tokens sampled; *stop: why it stopped. */
static int answer(ttt_ctx *ctx, const ttt_llama *m, ttt_lm_cache *c, double *row, sample_cand *cands,
                  const sample_params *sp, uint64_t *rng, int64_t max, int ignore_eos, int64_t *made,
                  const char **stop) {
    char err[512];
    const int64_t V_text = ttt_tokenizer_vocab_size(m->tok);
    *made = 0;
    *stop = "the token limit";
    while (*made < max) {
        const int32_t next = sample_token(row, V_text, sp, rng, cands);
        ++*made;
        if (!ignore_eos && (next == m->eos || next == m->eot)) {
            *stop = "the end-of-turn token";
            return TTT_OK;
        }
        if (emit(m->tok, next, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "\nttt: %s\n", err);
            return TTT_ERR;
        }
        if (*made == max) break; /* the last token needs no logits */
        if (feed(ctx, m, c, &next, 1, row) != TTT_OK) {
            fprintf(stderr, "\nttt: token %lld: %s\n", (long long)*made, ttt_error(ctx));
            return TTT_ERR;
        }
    }
    return TTT_OK;
}

static ttt_ctx *open_ctx(const llama_generate_args *a) {
    ttt_ctx_config cc = {.device = a->device, .seed = (uint64_t)a->seed, .threads = a->threads, .tf32 = a->tf32};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx)
        fprintf(stderr, "ttt: could not create a %s context: %s\n", a->device == TTT_CUDA ? "cuda" : "cpu",
                ttt_runtime_error());
    return ctx;
}

static int load(ttt_ctx *ctx, const llama_generate_args *a, ttt_llama *m) {
    char err[1024];
    const double t_load = cli_now();
    if (ttt_llama_load(ctx, a->model, m, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt: --model %s: %s\n", a->model, err);
        return TTT_ERR;
    }
    fprintf(stderr, "%s: %s (%s), %lld blocks, width %lld, %lld/%lld heads, vocab %lld, %.1fM parameters (f32), "
                    "loaded in %.2f s\n", a->model, m->cfg.arch, m->source, (long long)m->cfg.depth, (long long)m->cfg.dim,
            (long long)m->cfg.heads, (long long)m->cfg.kv_heads, (long long)m->cfg.vocab, ttt_llama_param_count(m) / 1e6,
            cli_now() - t_load);
    return TTT_OK;
}

int llama_chat(const llama_generate_args *a) {
    ttt_ctx *ctx = open_ctx(a);
    if (!ctx) return EXIT_RUNTIME;
    ttt_llama m = {0};
    ttt_lm_cache cache = {0};
    double *row = NULL;
    sample_cand *cands = NULL;
    char *line = NULL, err[1024];
    size_t cap = 0;
    int rc = EXIT_RUNTIME;
    if (load(ctx, a, &m)) goto done;
    char *probe = NULL; /* a ChatML template? */
    const int chatml = m.chat_template && ttt_llama_chat_next(&m, "", &probe, err, sizeof err) == TTT_OK;
    free(probe);
    if (!chatml) {
        fprintf(stderr, "ttt chat: %s\n", m.chat_template ? err : "the model has no chat template");
        goto done;
    }
    const int64_t ctx_len = a->context > 0 ? a->context : 2048;
    row = malloc(sizeof(double) * (size_t)m.cfg.vocab);
    cands = malloc(sizeof(sample_cand) * (size_t)m.cfg.vocab);
    if (!row || !cands || ttt_llama_cache_init(ctx, &m, &cache, 1, ctx_len) != TTT_OK) {
        fprintf(stderr, "ttt chat: %s\n", row && cands ? ttt_error(ctx) : "out of host memory");
        goto done;
    }
    const int tty = isatty(0);
    uint64_t rng = (uint64_t)a->seed;
    const sample_params sp = {a->temperature, a->top_k, a->top_p};
    if (tty) fprintf(stderr, "one line a turn; an empty line or end of input ends the conversation\n");
    for (;;) {
        if (tty) fprintf(stderr, "> ");
        ssize_t n = getline(&line, &cap, stdin);
        if (n <= 0) break;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (n == 0) break;
        char *text = NULL;
        ttt_token_ids ids = {0};
        int r = cache.len == 0 ? ttt_llama_chat_prompt(&m, a->system, line, &text, err, sizeof err)
                               : ttt_llama_chat_next(&m, line, &text, err, sizeof err);
        if (r == TTT_OK) r = ttt_tokenizer_encode(m.tok, text, strlen(text), &ids, err, sizeof err);
        free(text);
        if (r == TTT_OK && cache.len + (int64_t)ids.n + a->tokens > ctx_len) { /* full: start a new conversation */
            fprintf(stderr, "[the context of %lld tokens is full: the conversation starts over]\n", (long long)ctx_len);
            ttt_lm_cache_reset(&cache);
            ids.n = 0;
            r = ttt_llama_chat_prompt(&m, a->system, line, &text, err, sizeof err);
            if (r == TTT_OK) r = ttt_tokenizer_encode(m.tok, text, strlen(text), &ids, err, sizeof err);
            free(text);
        }
        if (r != TTT_OK || (int64_t)ids.n + a->tokens > ctx_len) {
            fprintf(stderr, "ttt chat: %s\n", r != TTT_OK ? err : "the turn does not fit the context (--context)");
            ttt_token_ids_free(&ids);
            continue;
        }
        const double t0 = cli_now();
        int64_t made = 0;
        const char *stop;
        r = feed(ctx, &m, &cache, ids.ids, (int64_t)ids.n, row) == TTT_OK
                ? answer(ctx, &m, &cache, row, cands, &sp, &rng, a->tokens, 0, &made, &stop)
                : (fprintf(stderr, "ttt chat: %s\n", ttt_error(ctx)), TTT_ERR);
        ttt_token_ids_free(&ids);
        if (r != TTT_OK) goto done;
        printf("\n");
        fflush(stdout);
        if (tty) fprintf(stderr, "[%lld tokens, %.1f tokens/s, %lld of %lld context positions used]\n", (long long)made,
                         made / (cli_now() - t0), (long long)cache.len, (long long)ctx_len);
    }
    rc = 0;
done:
    free(line);
    free(row);
    free(cands);
    ttt_lm_cache_free(ctx, &cache);
    ttt_llama_free(ctx, &m);
    ttt_ctx_free(ctx);
    return rc;
}

int llama_generate(const llama_generate_args *a) {
    char err[1024];
    ttt_ctx *ctx = open_ctx(a);
    if (!ctx) return EXIT_RUNTIME;
    ttt_llama m = {0};
    ttt_lm_cache cache = {0};
    ttt_token_ids prompt = {0};
    double *row = NULL;
    sample_cand *cands = NULL;
    char *text = NULL;
    int rc = EXIT_RUNTIME;
    if (load(ctx, a, &m)) goto done;
    const char *input = a->prompt;
    if (a->chat) {
        if (ttt_llama_chat_prompt(&m, a->system, a->chat, &text, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "ttt lm generate: --chat: %s\n", err);
            goto done;
        }
        input = text;
    }
    if (m.add_bos && m.bos >= 0 && (prompt.ids = malloc(sizeof(int32_t))) != NULL) {
        prompt.ids[0] = m.bos;
        prompt.n = prompt.cap = 1;
    }
    if (ttt_tokenizer_encode(m.tok, input, strlen(input), &prompt, err, sizeof err) != TTT_OK || prompt.n == 0) {
        fprintf(stderr, "ttt lm generate: %s\n", prompt.n ? err : "the prompt encodes to no tokens");
        rc = prompt.n ? EXIT_RUNTIME : EXIT_USAGE;
        goto done;
    }
    const int64_t V = m.cfg.vocab, n_prompt = (int64_t)prompt.n;
    if (a->show_ids) {
        fprintf(stderr, "prompt ids:");
        for (size_t i = 0; i < prompt.n; i++) fprintf(stderr, " %d", prompt.ids[i]);
        fprintf(stderr, "\n");
    }
    row = malloc(sizeof(double) * (size_t)V);
    cands = malloc(sizeof(sample_cand) * (size_t)V);
    if (!row || !cands) {
        fprintf(stderr, "ttt lm generate: out of host memory\n");
        goto done;
    }
    if (ttt_llama_cache_init(ctx, &m, &cache, 1, n_prompt + a->tokens) != TTT_OK) {
        fprintf(stderr, "ttt lm generate: %s\n", ttt_error(ctx));
        goto done;
    }
    if (!a->chat) {
        fwrite(a->prompt, 1, strlen(a->prompt), stdout);
        fflush(stdout);
    }
    const double t0 = cli_now();
    if (feed(ctx, &m, &cache, prompt.ids, n_prompt, row) != TTT_OK) { /* only the last position's logits are read */
        fprintf(stderr, "\nttt lm generate: prefill: %s\n", ttt_error(ctx));
        goto done;
    }
    const double t_prefill = cli_now() - t0;
    uint64_t rng = (uint64_t)a->seed;
    int64_t made = 0;
    const char *stop;
    const sample_params sp = {a->temperature, a->top_k, a->top_p};
    if (answer(ctx, &m, &cache, row, cands, &sp, &rng, a->tokens, a->ignore_eos, &made, &stop) != TTT_OK) goto done;
    printf("\n");
    const double dt = cli_now() - t0 - t_prefill;
    fprintf(stderr, "prompt: %lld tokens in %.3f s (%.1f tokens/s); generated %lld tokens in %.3f s (%.1f tokens/s), "
                    "stopped at %s; device %s\n", (long long)n_prompt, t_prefill, n_prompt / (t_prefill > 0 ? t_prefill : 1e-9),
            (long long)made, dt, (double)made / (dt > 0 ? dt : 1e-9), stop, a->device == TTT_CUDA ? "cuda" : "cpu");
    rc = 0;
done:
    free(row);
    free(cands);
    free(text);
    ttt_lm_cache_free(ctx, &cache);
    ttt_llama_free(ctx, &m);
    ttt_token_ids_free(&prompt);
    ttt_ctx_free(ctx);
    return rc;
}
