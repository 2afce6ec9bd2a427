/* llama_logits: a pretrained model's logits and tokenization, for comparisons with
 * other implementations (bench/llm/check_smollm2.py).
 *
 *   llama_logits MODEL --text TEXT [--out FILE] [--device cpu|cuda]
 *     prints the ids of TEXT (the model's tokenizer, special tokens matched) on one line;
 *     with --out, writes the logits of the whole forward pass over those ids to FILE as
 *     raw little-endian f32 [T, V] (T and V on the second line). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttt/ttt.h"

int main(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *out = NULL, *device = "cpu";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text") && i + 1 < argc) text = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!model && argv[i][0] != '-') model = argv[i];
        else {
            fprintf(stderr, "usage: llama_logits MODEL --text TEXT [--out FILE] [--device cpu|cuda]\n");
            return 2;
        }
    }
    if (!model || !text) {
        fprintf(stderr, "usage: llama_logits MODEL --text TEXT [--out FILE] [--device cpu|cuda]\n");
        return 2;
    }
    ttt_ctx_config cc = {.device = strcmp(device, "cuda") ? TTT_CPU : TTT_CUDA};
    ttt_ctx *ctx = ttt_ctx_new(&cc);
    if (!ctx) {
        fprintf(stderr, "llama_logits: %s\n", ttt_runtime_error());
        return 1;
    }
    char err[1024];
    ttt_llama m;
    if (ttt_llama_load(ctx, model, &m, err, sizeof err)) {
        fprintf(stderr, "llama_logits: %s\n", err);
        ttt_ctx_free(ctx);
        return 1;
    }
    ttt_token_ids ids = {0};
    int rc = 1;
    if (ttt_tokenizer_encode(m.tok, text, strlen(text), &ids, err, sizeof err) || ids.n == 0) {
        fprintf(stderr, "llama_logits: %s\n", ids.n ? err : "no tokens");
        goto done;
    }
    for (size_t i = 0; i < ids.n; i++) printf("%s%d", i ? " " : "", ids.ids[i]);
    printf("\n");
    if (out) {
        const int64_t T = (int64_t)ids.n, V = m.cfg.vocab;
        float *lg = malloc(sizeof(float) * (size_t)(T * V));
        ttt_tensor *l = ttt_llama_forward(ctx, &m, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, T), ids.ids), 0);
        if (!lg || !l || ttt_copy_to_host(ctx, l, lg, TTT_F32)) {
            fprintf(stderr, "llama_logits: %s\n", ttt_error(ctx));
            free(lg);
            goto done;
        }
        FILE *f = fopen(out, "wb");
        if (!f || fwrite(lg, sizeof(float), (size_t)(T * V), f) != (size_t)(T * V)) {
            fprintf(stderr, "llama_logits: cannot write %s\n", out);
            if (f) fclose(f);
            free(lg);
            goto done;
        }
        fclose(f);
        free(lg);
        printf("%lld %lld\n", (long long)T, (long long)V);
    }
    rc = 0;
done:
    ttt_token_ids_free(&ids);
    ttt_llama_free(ctx, &m);
    ttt_ctx_free(ctx);
    return rc;
}
