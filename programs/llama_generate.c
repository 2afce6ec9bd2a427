/* `ttt lm generate --model FILE.gguf|DIR`: text from a pretrained Llama-family
 * model (include/ttt/llama.h) over a KV cache, with the project's sampler
 * (sample.c). --chat wraps one user turn in the model's chat template and
 * prints only the answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int llama_generate(const llama_generate_args *a) {
    char err[1024];
    ttt_ctx_config cc = {.device = a->device, .seed = (uint64_t)a->seed, .threads = a->threads};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx) {
        fprintf(stderr, "ttt lm generate: could not create a %s context: %s\n", a->device == TTT_CUDA ? "cuda" : "cpu",
                ttt_runtime_error());
        return EXIT_RUNTIME;
    }
    ttt_llama m = {0};
    ttt_lm_cache cache = {0};
    ttt_token_ids prompt = {0};
    double *row = NULL;
    sample_cand *cands = NULL;
    char *text = NULL;
    int rc = EXIT_RUNTIME;
    const double t_load = cli_now();
    if (ttt_llama_load(ctx, a->model, &m, err, sizeof err) != TTT_OK) {
        fprintf(stderr, "ttt lm generate: --model %s: %s\n", a->model, err);
        goto done;
    }
    fprintf(stderr, "%s: %s (%s), %lld blocks, width %lld, %lld/%lld heads, vocab %lld, %.1fM parameters (f32), "
                    "loaded in %.2f s\n", a->model, m.cfg.arch, m.source, (long long)m.cfg.depth, (long long)m.cfg.dim,
            (long long)m.cfg.heads, (long long)m.cfg.kv_heads, (long long)m.cfg.vocab, ttt_llama_param_count(&m) / 1e6,
            cli_now() - t_load);
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
    const int64_t V = m.cfg.vocab, n_prompt = (int64_t)prompt.n, V_text = ttt_tokenizer_vocab_size(m.tok);
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
    ttt_step_reset(ctx);
    ttt_tensor *logits = ttt_llama_decode(ctx, &m, &cache, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, n_prompt), prompt.ids));
    /* only the last position's logits are read */
    logits = logits ? ttt_slice(ctx, logits, 1, n_prompt - 1, n_prompt, 1) : NULL;
    if (!logits || ttt_copy_to_host(ctx, logits, row, TTT_F64) != TTT_OK) {
        fprintf(stderr, "\nttt lm generate: prefill: %s\n", ttt_error(ctx));
        goto done;
    }
    const double t_prefill = cli_now() - t0;
    uint64_t rng = (uint64_t)a->seed;
    int64_t made = 0;
    const char *stop = "the token limit";
    const sample_params sp = {a->temperature, a->top_k, a->top_p};
    while (made < a->tokens) {
        const int32_t next = sample_token(row, V_text, &sp, &rng, cands);
        made++;
        if (!a->ignore_eos && (next == m.eos || next == m.eot)) {
            stop = "the end-of-turn token";
            break;
        }
        if (emit(m.tok, next, err, sizeof err) != TTT_OK) {
            fprintf(stderr, "\nttt lm generate: %s\n", err);
            goto done;
        }
        if (made == a->tokens) break; /* the last token needs no logits */
        ttt_step_reset(ctx);
        logits = ttt_llama_decode(ctx, &m, &cache, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, 1), &next));
        if (!logits || ttt_copy_to_host(ctx, logits, row, TTT_F64) != TTT_OK) {
            fprintf(stderr, "\nttt lm generate: token %lld: %s\n", (long long)made, ttt_error(ctx));
            goto done;
        }
    }
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
