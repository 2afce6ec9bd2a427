/* fuzz/make_seeds.c: writes the seed corpora fuzz/corpus/TARGET/ with the
 * project's own writers (safetensors, checkpoints of the training runner and
 * of a language model, shards, IDX, a trained tokenizer in GPT-2 files and as
 * tokenizer.json, TTT-E2E state files). Run from the repository root:
 *   build/dev/fuzz_make_seeds fuzz/corpus
 * The files are small and committed; rerun only when a format changes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "fuzz.h"
#include "checkpoint_toy.h"
#include "e2e_state_model.h"
#include "ttt/ttt.h"

static const char *root;
static ttt_ctx *ctx;

static void die(const char *what, const char *why) {
    fprintf(stderr, "make_seeds: %s: %s\n", what, why && *why ? why : "failed");
    exit(1);
}

static const char *out_path(char *buf, size_t n, const char *target, const char *name) {
    snprintf(buf, n, "%s/%s", root, target);
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) die(buf, strerror(errno));
    snprintf(buf, n, "%s/%s/%s", root, target, name);
    return buf;
}

static char *slurp(const char *path, size_t *len) {
    char *d = NULL, err[256];
    if (ttt_read_file(path, &d, len, err, sizeof err) != TTT_OK) die(path, err);
    return d;
}

/* target/name <- prefix + the file at path (removed) */
static void move_with_prefix(const char *path, const void *prefix, size_t plen, const char *target, const char *name) {
    size_t len;
    char *d = slurp(path, &len), out[512];
    char *all = malloc(plen + len);
    memcpy(all, prefix, plen), memcpy(all + plen, d, len);
    fuzz_write(out_path(out, sizeof out, target, name), all, plen + len);
    free(all), free(d);
    remove(path);
}

static void safetensors_seeds(void) {
    char p[512];
    const float a[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    const double b[4] = {0.25, -1, 2, 1e300};
    const int32_t d[3] = {-1, 0, 2147483647};
    ttt_tensor *ta = ttt_from_host(ctx, TTT_F32, TTT_DIMS(2, 3), a), *tb = ttt_from_host(ctx, TTT_F64, TTT_DIMS(4), b);
    ttt_tensor *tc = ttt_cast(ctx, ttt_from_host(ctx, TTT_F32, TTT_DIMS(2, 2), a), TTT_BF16);
    ttt_tensor *td = ttt_from_host(ctx, TTT_I32, TTT_DIMS(3), d);
    const ttt_named_tensor nt[4] = {{"a", ta}, {"b", tb}, {"c", tc}, {"d", td}};
    const char *meta[] = {"format", "ttt-lm", "step", "12", "model", "vocab=5 dim=4", NULL};
    if (ttt_save_safetensors(ctx, out_path(p, sizeof p, "safetensors", "four"), 4, nt, meta) != TTT_OK ||
        ttt_save_safetensors(ctx, out_path(p, sizeof p, "safetensors", "no_metadata"), 4, nt, NULL) != TTT_OK ||
        ttt_save_safetensors(ctx, out_path(p, sizeof p, "safetensors", "one"), 1, nt + 1, meta) != TTT_OK)
        die("safetensors", ttt_error(ctx));
    ttt_step_reset(ctx);
}

static void idx_seeds(void) {
    char p[512];
    const uint8_t plain[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6};
    const uint8_t labels[] = {0, 0, 8, 1, 0, 0, 0, 4, 9, 0, 3, 7};
    fuzz_write(out_path(p, sizeof p, "idx", "images_2x3"), plain, sizeof plain);
    fuzz_write(out_path(p, sizeof p, "idx", "labels_4"), labels, sizeof labels);
    gzFile gz = gzopen(out_path(p, sizeof p, "idx", "images_2x3.gz"), "wb");
    if (!gz || gzwrite(gz, plain, sizeof plain) != (int)sizeof plain || gzclose(gz) != Z_OK) die(p, "gzip");
}

static void shard_seed(const char *name, int64_t vocab) {
    char p[512], err[256];
    ttt_shard_writer *w = NULL;
    const int32_t d0[] = {1, 2, 3, 0}, d1[] = {(int32_t)(vocab - 1), 5}, d2[] = {7, 8, 9, 10, 11, 12, 13, 0};
    if (ttt_shard_writer_open(out_path(p, sizeof p, "shards", name), vocab, &w, err, sizeof err) != TTT_OK ||
        ttt_shard_writer_add(w, d0, 4, err, sizeof err) != TTT_OK || ttt_shard_writer_add(w, d1, 2, err, sizeof err) ||
        ttt_shard_writer_add(w, d1, 0, err, sizeof err) || ttt_shard_writer_add(w, d2, 8, err, sizeof err) ||
        ttt_shard_writer_close(w, err, sizeof err) != TTT_OK)
        die(p, err);
}

static void json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') fputc('\\', f);
        fputc(s[i], f);
    }
    fputc('"', f);
}

/* tokenizer.json around the vocabulary and merges of tok (merges from its merges.txt) */
static void tokenizer_json(const ttt_tokenizer *tok, const char *merges_txt, int arrays, int added, const char *name) {
    char p[512];
    FILE *f = fopen(out_path(p, sizeof p, "tokenizer_json", name), "wb");
    if (!f) die(p, strerror(errno));
    fprintf(f, "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[");
    const int32_t n = ttt_tokenizer_vocab_size(tok);
    if (added) fprintf(f, "{\"id\":%d,\"content\":\"<|endoftext|>\",\"single_word\":false,\"lstrip\":false,"
                          "\"rstrip\":false,\"normalized\":true,\"special\":true}", n);
    fprintf(f, "],\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":%s,"
               "\"trim_offsets\":true,\"use_regex\":true},\"post_processor\":{\"type\":\"ByteLevel\"},"
               "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
               "\"continuing_subword_prefix\":\"\",\"end_of_word_suffix\":\"\",\"fuse_unk\":false,"
               "\"byte_fallback\":false,\"vocab\":{", arrays ? "true" : "false");
    for (int32_t id = 0; id < n; id++) {
        size_t len;
        const char *piece = ttt_tokenizer_piece(tok, id, &len);
        if (!piece) continue;
        if (id) fputc(',', f);
        json_string(f, piece, len);
        fprintf(f, ":%d", id);
    }
    fprintf(f, "},\"merges\":[");
    size_t len;
    char *m = slurp(merges_txt, &len);
    int first = 1;
    for (char *line = strtok(m, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "#version", 8)) continue;
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        fputs(first ? "" : ",", f), first = 0;
        if (arrays) {
            fputc('[', f), json_string(f, line, (size_t)(sp - line)), fputc(',', f);
            json_string(f, sp + 1, strlen(sp + 1)), fputc(']', f);
        } else {
            json_string(f, line, strlen(line));
        }
    }
    free(m);
    fprintf(f, "]}}\n");
    if (fclose(f) != 0) die(p, strerror(errno));
}

static void tokenizer_seeds(void) {
    static const char text[] = "the cat sat on the mat; the cat's hat is flat. 2026 cats! \xc3\xbc\xc3\xbc the the";
    const char *texts[] = {text};
    const size_t lens[] = {sizeof text - 1};
    const ttt_bpe_train_config cfg = {.vocab_size = 256 + 24};
    ttt_tokenizer *tok = NULL;
    char err[256], vocab[400], merges[400];
    if (ttt_tokenizer_train(texts, lens, 1, &cfg, &tok, err, sizeof err) != TTT_OK) die("tokenizer_train", err);
    if (ttt_tokenizer_save_gpt2(tok, fuzz_dir(), err, sizeof err) != TTT_OK) die("tokenizer_save_gpt2", err);
    fuzz_path(vocab, sizeof vocab, "vocab.json");
    fuzz_path(merges, sizeof merges, "merges.txt");
    tokenizer_json(tok, merges, 0, 1, "trained_strings");
    tokenizer_json(tok, merges, 1, 0, "trained_arrays");
    size_t vl, ml;
    char *v = slurp(vocab, &vl), *m = slurp(merges, &ml), p[512];
    const char sep[] = "\n#merges.txt#\n";
    char *all = malloc(vl + sizeof sep + ml);
    memcpy(all, v, vl), memcpy(all + vl, sep, sizeof sep - 1), memcpy(all + vl + sizeof sep - 1, m, ml);
    fuzz_write(out_path(p, sizeof p, "tokenizer_gpt2", "trained"), all, vl + sizeof sep - 1 + ml);
    free(all), free(v), free(m);
    ttt_tokenizer_free(tok);
}

static void checkpoint_seeds(void) {
    char err[1024], p[512];
    toy t = {0};
    ttt_train_model m;
    ttt_train_config c;
    ttt_trainer *tr = NULL;
    if (toy_setup(ctx, &t, fuzz_dir(), 0, &m, &c) != TTT_OK) die("toy", ttt_error(ctx));
    c.stop_at = 3;
    if (ttt_train_open(ctx, &m, &c, &tr, err, sizeof err) != TTT_OK || ttt_train_run(tr, err, sizeof err) != TTT_OK)
        die("toy run", err);
    size_t ml;
    char *metrics = slurp(ttt_train_metrics_path(tr), &ml);
    if (ml > 65535) ml = 65535;
    unsigned char *prefix = malloc(2 + ml);
    prefix[0] = (unsigned char)(ml & 255), prefix[1] = (unsigned char)(ml >> 8);
    memcpy(prefix + 2, metrics, ml);
    move_with_prefix(ttt_train_checkpoint_path(tr), prefix, 2 + ml, "checkpoint", "toy_step3");
    remove(ttt_train_metrics_path(tr));
    free(metrics), free(prefix);
    ttt_train_close(tr);
    ttt_step_reset(ctx);

    /* a language model's file, as `ttt lm train` writes it: parameters and format / model / train / step */
    ttt_lm_config lc;
    ttt_lm lm;
    ttt_lm_preset("tiny", 7, &lc, NULL, 0);
    lc.dim = 4, lc.depth = 1, lc.heads = 1, lc.mlp_hidden = 4;
    char cfg[1024];
    if (ttt_lm_init(ctx, &lm, &lc, TTT_F32) != TTT_OK || ttt_lm_config_format(&lm.cfg, cfg, sizeof cfg) != TTT_OK)
        die("lm", ttt_error(ctx));
    ttt_named_tensor *nt = calloc((size_t)lm.n_params, sizeof *nt);
    for (int i = 0; i < lm.n_params; i++) nt[i] = (ttt_named_tensor){lm.names[i], lm.params[i]};
    const char *meta[] = {"format", "ttt-lm", "model", cfg, "train", "dtype=f32 lr=0.001", "step", "5", NULL};
    const unsigned char none[2] = {0, 0};
    fuzz_path(p, sizeof p, "lm.safetensors");
    if (ttt_save_safetensors(ctx, p, lm.n_params, nt, meta) != TTT_OK) die("lm save", ttt_error(ctx));
    move_with_prefix(p, none, 2, "checkpoint", "lm_tiny");
    free(nt);
    ttt_lm_free(ctx, &lm);
    ttt_step_reset(ctx);
}

static void lm_config_seeds(void) {
    static const char *const presets[] = {"tiny", "small-swa", "tiny-e2e"};
    char p[512], cfg[1024];
    for (int i = 0; i < 3; i++) {
        ttt_lm_config c;
        ttt_lm_preset(presets[i], 50257, &c, NULL, 0);
        if (ttt_lm_config_format(&c, cfg, sizeof cfg) != TTT_OK) die("config_format", presets[i]);
        fuzz_write(out_path(p, sizeof p, "lm_config", presets[i]), cfg, strlen(cfg));
    }
    static const char small[] = "vocab=5 dim=4 depth=1 heads=1 mlp_hidden=4 window=0 prime_blocks=0 prime_hidden=0 "
                                "qk_norm=1 rope_theta=10000 norm_eps=1e-06";
    static const char meta[] = "{\"format\":\"ttt-lm\",\"step\":\"42\",\"model\":\"dim=4\",\"log_window\":\"steps=2 "
                               "loss_sum=1.5 aux.mse=0.25\"}";
    fuzz_write(out_path(p, sizeof p, "lm_config", "small_no_optional"), small, sizeof small - 1);
    fuzz_write(out_path(p, sizeof p, "lm_config", "metadata_json"), meta, sizeof meta - 1);
}

static void e2e_state_seeds(void) {
    ttt_lm m;
    ttt_lm_reader r;
    char p[512];
    if (e2e_fuzz_model(ctx, &m, &r) != TTT_OK) die("e2e model", ttt_error(ctx));
    const int64_t reads[] = {0, 2, 7};
    const char *names[] = {"fresh", "mid_chunk", "two_inner_steps"};
    for (int k = 0; k < 3; k++) {
        if (reads[k] - (k ? reads[k - 1] : 0) > 0) {
            const int64_t n = reads[k] - (k ? reads[k - 1] : 0);
            int32_t ids[16];
            for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 3 + k) % m.cfg.vocab);
            if (!ttt_lm_reader_read(ctx, &m, &r, ttt_from_host(ctx, TTT_I32, TTT_DIMS(E2E_FUZZ_BATCH, n), ids), 0))
                die("e2e read", ttt_error(ctx));
        }
        if (ttt_lm_reader_save(ctx, &m, &r, out_path(p, sizeof p, "e2e_state", names[k]), E2E_FUZZ_MODEL_ID,
                               E2E_FUZZ_TOKENIZER_ID) != TTT_OK)
            die("e2e save", ttt_error(ctx));
        ttt_step_reset(ctx);
    }
    ttt_lm_reader_free(ctx, &r);
    ttt_lm_free(ctx, &m);
}

int main(int argc, char **argv) {
    if (argc != 2) return fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR (fuzz/corpus)\n"), 2;
    root = argv[1];
    if (mkdir(root, 0755) != 0 && errno != EEXIST) die(root, strerror(errno));
    ttt_ctx_config cc = {.device = TTT_CPU, .threads = 1, .seed = 1};
    if (!(ctx = ttt_ctx_new(&cc))) die("context", "cannot create");
    safetensors_seeds();
    idx_seeds();
    shard_seed("width2", 300);
    shard_seed("width4", 70000);
    tokenizer_seeds();
    checkpoint_seeds();
    lm_config_seeds();
    e2e_state_seeds();
    ttt_ctx_free(ctx);
    printf("make_seeds: wrote %s\n", root);
    return 0;
}
