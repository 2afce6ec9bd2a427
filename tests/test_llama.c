/* Pretrained-model loading (include/ttt/llama.h) against the fixtures of
 * scripts/make_gguf_fixtures.py (tests/fixtures/gguf):
 *   - the tokenizer from GGUF metadata and from tokenizer.json give the
 *     `tokenizers` library's ids on tricky text (spaces, digits, unicode, special tokens);
 *   - logits of tiny random Llamas (GQA 4/2; tied head with linear RoPE scaling and Q8_0
 *     weights; untied with F16 weights; the untied one also as a Hugging Face folder), a
 *     Qwen2 (q/k/v biases) and a Mistral (sliding window 4) match transformers' models in
 *     float64 within 2e-5 of the logits' scale;
 *   - cached decoding (prefill, then one token at a time) equals the full forward pass;
 *   - the ChatML prompt, with the template's default system message;
 *   - a file that is not a model is refused with a message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttt/gguf.h"
#include "ttt/llama.h"
#include "ttt/ttt.h"

static int failures;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            failures++;                                   \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);   \
            printf(__VA_ARGS__);                          \
            printf("\n");                                 \
        }                                                 \
    } while (0)

static void fixture(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s", __FILE__);
    char *cut = strstr(out, "/tests/test_llama.c");
    if (cut) snprintf(cut, n - (size_t)(cut - out), "/tests/fixtures/gguf/%s", name);
    else snprintf(out, n, "tests/fixtures/gguf/%s", name);
}

static ttt_gguf *reference(void) {
    char path[4096], err[512];
    fixture(path, sizeof path, "reference.gguf");
    ttt_gguf *r = NULL;
    if (ttt_gguf_open(path, &r, err, sizeof err)) CHECK(0, "%s", err);
    return r;
}

static void check_tokenizer(const ttt_gguf *ref, ttt_tokenizer *tok, const char *what) {
    int64_t n = 0;
    char err[512], key[64];
    CHECK(ttt_gguf_get_int(ref, "case.count", &n, err, sizeof err) == 0, "%s", err);
    int ok = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *text;
        size_t len;
        snprintf(key, sizeof key, "case.%lld.text", (long long)i);
        CHECK(ttt_gguf_get_str(ref, key, &text, &len, err, sizeof err) == 0, "%s", err);
        snprintf(key, sizeof key, "case.%lld.ids", (long long)i);
        const ttt_gguf_kv *want = ttt_gguf_find(ref, key);
        ttt_token_ids ids = {0};
        CHECK(ttt_tokenizer_encode(tok, text, len, &ids, err, sizeof err) == 0, "%s", err);
        int same = want && ids.n == want->n;
        for (size_t k = 0; same && k < ids.n; k++) same = ids.ids[k] == ttt_gguf_arr_int(want, k);
        CHECK(same, "%s: case %lld (\"%.*s\"): %zu ids, the tokenizers library's %llu", what, (long long)i, (int)len,
              text, ids.n, want ? (unsigned long long)want->n : 0ull);
        char *back = NULL;
        size_t blen = 0;
        CHECK(ttt_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, err, sizeof err) == 0 && blen == len &&
                  !memcmp(back, text, len), "%s: case %lld does not decode back", what, (long long)i);
        free(back);
        ok += same;
        ttt_token_ids_free(&ids);
    }
    printf("tokenizer (%s): %d of %lld cases equal the tokenizers library's ids\n", what, ok, (long long)n);
}

/* max |a - b| / max |b| over n values */
static double rel_err(const float *a, const float *b, int64_t n) {
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / (s > 0 ? s : 1);
}

static void check_model(ttt_ctx *ctx, const ttt_gguf *ref, const char *file, const char *logits_name, int tied) {
    char path[4096], err[1024];
    fixture(path, sizeof path, file);
    ttt_llama m;
    if (ttt_llama_load(ctx, path, &m, err, sizeof err)) {
        CHECK(0, "load %s: %s", file, err);
        return;
    }
    CHECK(m.cfg.tied == tied && m.cfg.heads == 4 && m.cfg.kv_heads == 2 && m.cfg.head_dim == 8 && m.cfg.depth == 2,
          "%s: config", file);
    const ttt_gguf_tensor *ids_t = ttt_gguf_tensor_find(ref, "ids"), *lt = ttt_gguf_tensor_find(ref, logits_name);
    const int64_t T = ids_t->ne[0], V = m.cfg.vocab;
    CHECK(ttt_gguf_tensor_numel(lt) == T * V, "%s: reference logits shape", file);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
    memcpy(ids, ids_t->data, sizeof(int32_t) * (size_t)T);
    float *got = malloc(sizeof(float) * (size_t)(T * V)), *dec = malloc(sizeof(float) * (size_t)(T * V));
    ttt_step_reset(ctx);
    ttt_tensor *x = ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, T), ids);
    ttt_tensor *lg = ttt_llama_forward(ctx, &m, x, 0);
    CHECK(lg && ttt_copy_to_host(ctx, lg, got, TTT_F32) == 0, "%s: forward: %s", file, ttt_error(ctx));
    const double e = rel_err(got, (const float *)lt->data, T * V);
    CHECK(e < 2e-5, "%s: logits differ from transformers' by %.3g of their scale", file, e);
    /* cached decoding: 5 tokens, then one at a time */
    ttt_lm_cache c;
    CHECK(ttt_llama_cache_init(ctx, &m, &c, 1, T) == 0, "%s", ttt_error(ctx));
    for (int64_t t0 = 0; t0 < T;) {
        const int64_t n = t0 == 0 ? 5 : 1;
        ttt_step_reset(ctx);
        ttt_tensor *l = ttt_llama_decode(ctx, &m, &c, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, n), ids + t0));
        CHECK(l && ttt_copy_to_host(ctx, l, dec + t0 * V, TTT_F32) == 0, "%s: decode: %s", file, ttt_error(ctx));
        t0 += n;
    }
    const double ed = rel_err(dec, got, T * V);
    CHECK(ed < 1e-5, "%s: cached decoding differs from the forward pass by %.3g", file, ed);
    ttt_step_reset(ctx);
    CHECK(ttt_llama_decode(ctx, &m, &c, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, 1), ids)) == NULL &&
              strstr(ttt_error(ctx), "exceed"), "%s: a full cache accepted a token", file);
    ttt_clear_error(ctx);
    printf("%-16s (%s %s, %s head, %lld params): logits vs transformers float64 %.2e of scale; decode vs forward %.2e\n",
           file, m.cfg.arch, m.source, tied ? "tied" : "untied", (long long)ttt_llama_param_count(&m), e, ed);
    /* the chat prompt and the special tokens that came with the model */
    const char *user, *want;
    size_t ul, wl;
    CHECK(ttt_gguf_get_str(ref, "chat.user", &user, &ul, err, sizeof err) == 0 &&
              ttt_gguf_get_str(ref, "chat.rendered", &want, &wl, err, sizeof err) == 0, "%s", err);
    char u[64], *chat = NULL;
    snprintf(u, sizeof u, "%.*s", (int)ul, user);
    CHECK(ttt_llama_chat_prompt(&m, NULL, u, &chat, err, sizeof err) == 0 && strlen(chat) == wl && !memcmp(chat, want, wl),
          "%s: chat prompt %s", file, chat ? chat : err);
    free(chat);
    CHECK(m.eot == 2 && ttt_tokenizer_is_special(m.tok, 1), "%s: <|im_end|> is the end of a turn (got %d)", file, m.eot);
    ttt_lm_cache_free(ctx, &c);
    ttt_llama_free(ctx, &m);
    free(ids);
    free(got);
    free(dec);
}

/* Templates without a model: Qwen2's shape (the first system block joins the user's
 * message, the default is in the else branch), no default, and a non-ChatML one. */
static void test_templates(void) {
    char err[256], *out = NULL;
    ttt_llama m = {0};
    m.chat_template = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
                      "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}{%- endif %}";
    CHECK(ttt_llama_chat_prompt(&m, NULL, "Q", &out, err, sizeof err) == 0 &&
              !strcmp(out, "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"),
          "Qwen2-style default system message: %s", out ? out : err);
    free(out);
    CHECK(ttt_llama_chat_prompt(&m, "S", "Q", &out, err, sizeof err) == 0 &&
              !strcmp(out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"),
          "an explicit system message: %s", out ? out : err);
    free(out);
    CHECK(ttt_llama_chat_next(&m, "R", &out, err, sizeof err) == 0 &&
              !strcmp(out, "<|im_end|>\n<|im_start|>user\nR<|im_end|>\n<|im_start|>assistant\n"), "the next turn");
    free(out);
    m.chat_template = "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}";
    CHECK(ttt_llama_chat_prompt(&m, NULL, "Q", &out, err, sizeof err) == 0 &&
              !strcmp(out, "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"), "no default system message");
    free(out);
    m.chat_template = "{{ bos_token }}[INST] {{ message['content'] }} [/INST]";
    CHECK(ttt_llama_chat_prompt(&m, NULL, "Q", &out, err, sizeof err) != 0 && strstr(err, "ChatML"),
          "a Llama-2 template must be refused: %s", err);
    printf("chat templates: ok\n");
}

int main(int argc, char **argv) {
    /* --device cuda: the same checks on the GPU (the coordinator's GPU run; CI has none) */
    const int cuda = argc > 2 && !strcmp(argv[1], "--device") && !strcmp(argv[2], "cuda");
    ttt_gguf *ref = reference();
    if (!ref) return 1;
    test_templates();
    char path[4096], err[1024];
    /* tokenizers: GGUF metadata and tokenizer.json */
    fixture(path, sizeof path, "tiny_untied.gguf");
    ttt_gguf *g = NULL;
    ttt_tokenizer *tok = NULL;
    CHECK(ttt_gguf_open(path, &g, err, sizeof err) == 0 && ttt_tokenizer_load_gguf(g, &tok, err, sizeof err) == 0,
          "%s", err);
    if (tok) check_tokenizer(ref, tok, "GGUF metadata");
    ttt_tokenizer_free(tok);
    ttt_gguf_close(g);
    tok = NULL;
    fixture(path, sizeof path, "tiny_untied_hf/tokenizer.json");
    CHECK(ttt_tokenizer_load_json(path, &tok, err, sizeof err) == 0, "%s", err);
    if (tok) check_tokenizer(ref, tok, "tokenizer.json");
    ttt_tokenizer_free(tok);

    ttt_ctx *ctx = ttt_ctx_new(&(ttt_ctx_config){.device = cuda ? TTT_CUDA : TTT_CPU});
    if (!ctx) {
        printf("no %s context: %s\n", cuda ? "cuda" : "cpu", ttt_runtime_error());
        return 1;
    }
    printf("device: %s\n", cuda ? "cuda" : "cpu");
    check_model(ctx, ref, "tiny_tied.gguf", "logits.tied", 1);
    check_model(ctx, ref, "tiny_untied.gguf", "logits.untied", 0);
    check_model(ctx, ref, "tiny_untied_hf", "logits.untied", 0);
    check_model(ctx, ref, "tiny_qwen2_hf", "logits.qwen2", 1);   /* q/k/v biases, bf16 safetensors */
    check_model(ctx, ref, "tiny_mistral_hf", "logits.mistral", 0); /* a sliding window of 4 tokens */
    /* not a model */
    ttt_llama m;
    fixture(path, sizeof path, "quants.gguf");
    CHECK(ttt_llama_load(ctx, path, &m, err, sizeof err) != 0 && strstr(err, "architecture 'test'"), "quants.gguf: %s", err);
    CHECK(ttt_llama_load(ctx, "/nonexistent", &m, err, sizeof err) != 0 && strstr(err, "cannot open"), "%s", err);
    ttt_ctx_free(ctx);
    ttt_gguf_close(ref);
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
