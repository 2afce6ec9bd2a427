/* llama_logits: a pretrained model's logits and tokenization, for comparisons with
 * other implementations (bench/llm/check_smollm2.py).
 *
 *   llama_logits MODEL --text TEXT [--out FILE] [--device cpu|cuda]
 *     prints the ids of TEXT (the model's tokenizer, special tokens matched) on one line;
 *     with --out, writes the logits of the whole forward pass over those ids to FILE as
 *     raw little-endian f32 [T, V] (T and V on the second line); with --compare REF, reads
 *     such a file (e.g. written on the CPU) and prints the largest difference. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttt/ttt.h"

int main(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *out = NULL, *device = "cpu", *compare = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text") && i + 1 < argc) text = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--compare") && i + 1 < argc) compare = argv[++i];
        else if (!model && argv[i][0] != '-') model = argv[i];
        else {
            fprintf(stderr, "usage: llama_logits MODEL --text TEXT [--out FILE] [--compare REF] [--device cpu|cuda]\n");
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
    if (out || compare) {
        const int64_t T = (int64_t)ids.n, V = m.cfg.vocab;
        float *lg = malloc(sizeof(float) * (size_t)(T * V));
        ttt_tensor *l = ttt_llama_forward(ctx, &m, ttt_from_host(ctx, TTT_I32, TTT_DIMS(1, T), ids.ids), 0);
        if (!lg || !l || ttt_copy_to_host(ctx, l, lg, TTT_F32)) {
            fprintf(stderr, "llama_logits: %s\n", ttt_error(ctx));
            free(lg);
            goto done;
        }
        FILE *f = out ? fopen(out, "wb") : NULL;
        if (out && (!f || fwrite(lg, sizeof(float), (size_t)(T * V), f) != (size_t)(T * V))) {
            fprintf(stderr, "llama_logits: cannot write %s\n", out);
            if (f) fclose(f);
            free(lg);
            goto done;
        }
        if (f) fclose(f);
        printf("%lld %lld\n", (long long)T, (long long)V);
        if (compare) {
            float *ref = malloc(sizeof(float) * (size_t)(T * V));
            FILE *r = fopen(compare, "rb");
            const int ok = ref && r && fread(ref, sizeof(float), (size_t)(T * V), r) == (size_t)(T * V);
            if (r) fclose(r);
            if (!ok) {
                fprintf(stderr, "llama_logits: cannot read %lld x %lld logits from %s\n", (long long)T, (long long)V, compare);
                free(ref);
                free(lg);
                goto done;
            }
            double d = 0, s = 0;
            int64_t same = 0;
            for (int64_t t = 0; t < T; t++) {
                int64_t a = 0, b = 0;
                for (int64_t v = 0; v < V; v++) {
                    const int64_t i = t * V + v;
                    d = fmax(d, fabs((double)lg[i] - ref[i]));
                    s = fmax(s, fabs((double)ref[i]));
                    if (lg[i] > lg[t * V + a]) a = v;
                    if (ref[i] > ref[t * V + b]) b = v;
                }
                same += a == b;
            }
            printf("vs %s: max |logit diff| %.3g (logits up to %.3g), same argmax at %lld of %lld positions\n", compare,
                   d, s, (long long)same, (long long)T);
            free(ref);
        }
        free(lg);
    }
    rc = 0;
done:
    ttt_token_ids_free(&ids);
    ttt_llama_free(ctx, &m);
    ttt_ctx_free(ctx);
    return rc;
}
