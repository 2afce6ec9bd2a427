/* ttt tokenizer: train a byte-level BPE tokenizer, encode text to ids, decode
 * ids to text (see include/ttt/tokenizer.h and docs/tokenizer.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "ttt/fileio.h"
#include "ttt/tokenizer.h"

#define DEFAULT_SPECIAL "<|endoftext|>"
enum { MAX_INPUTS = 256, MAX_SPECIAL = 64 };

static void usage(FILE *f) {
    fprintf(f,
            "usage: ttt tokenizer train  --input FILE... --vocab-size N --out DIR [--special TOK]... [--no-special]\n"
            "                            [--quiet]\n"
            "       ttt tokenizer encode TOKENIZER [--input FILE] [--special TOK]... [--no-special] [--stats]\n"
            "                            [--repeat K]          < text   > ids\n"
            "       ttt tokenizer decode TOKENIZER [--input FILE] [--skip-special]   < ids    > text\n"
            "TOKENIZER is --tokenizer PATH, as in `ttt data prepare` and `ttt lm generate`: a folder with\n"
            "vocab.json + merges.txt (GPT-2's files, e.g. data/gpt2-tokenizer, or what train writes) or a\n"
            "Hugging Face tokenizer.json file; or --vocab FILE --merges FILE for two files named one by one.\n"
            "(--dir DIR and --tokenizer-json FILE, the older spellings of --tokenizer, still work with a note.)\n"
            "\n"
            "train     learns byte-level BPE merges (GPT-2 pre-tokenization) until the vocabulary has N tokens\n"
            "          (256 bytes + merges + special tokens) and writes DIR/vocab.json and DIR/merges.txt\n"
            "          atomically. Progress goes to stderr (--quiet: none).\n"
            "encode    prints the ids of the text (stdin or --input), separated by spaces, then a newline.\n"
            "decode    reads whitespace-separated ids and writes their bytes.\n"
            "--special TOK   an extra special token (matched atomically in the text); with GPT-2 files and for\n"
            "                train, " DEFAULT_SPECIAL " is special by default (when in the vocabulary); --no-special\n"
            "                turns that off. tokenizer.json files name their own added tokens.\n"
            "--stats         encode: bytes, tokens and throughput on stderr; --repeat K encodes K times (a fresh\n"
            "                tokenizer cache only on the first) and reports the first and the fastest run.\n"
            "--skip-special  decode: leave special tokens out.\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *read_input(const char *path, size_t *len) {
    char err[600], *s = NULL;
    if (ttt_read_file(path ? path : "/dev/stdin", &s, len, err, sizeof err) != TTT_OK)
        fprintf(stderr, "ttt tokenizer: %s\n", err);
    return s;
}

typedef struct {
    const char *vocab, *merges, *tokenizer, *input;
    const char *special[MAX_SPECIAL];
    int n_special, no_special, stats, skip_special, quiet;
    int64_t repeat;
} opts;

#define TOKENIZER_HINT "GPT-2's files ship in data/gpt2-tokenizer; `ttt tokenizer train` makes new ones"

static int load(const opts *o, ttt_tokenizer **tok) {
    char err[512];
    char vbuf[4096], mbuf[4096];
    const char *vocab = o->vocab, *merges = o->merges, *json = NULL;
    int sources = (o->tokenizer != NULL) + (o->vocab || o->merges);
    if (sources != 1 || (!o->tokenizer && !(vocab && merges))) {
        fprintf(stderr, "ttt tokenizer: give one tokenizer: --tokenizer PATH, or --vocab FILE --merges FILE\n");
        return 2;
    }
    if (o->tokenizer) { /* a folder of GPT-2 files, or a tokenizer.json: the same rule as cli_load_tokenizer */
        struct stat st;
        if (stat(o->tokenizer, &st) != 0) {
            fprintf(stderr, "ttt tokenizer: --tokenizer %s: %s (" TOKENIZER_HINT ")\n", o->tokenizer, strerror(errno));
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            snprintf(vbuf, sizeof vbuf, "%s/vocab.json", o->tokenizer);
            snprintf(mbuf, sizeof mbuf, "%s/merges.txt", o->tokenizer);
            vocab = vbuf;
            merges = mbuf;
        } else {
            json = o->tokenizer;
        }
    }
    int rc = json ? ttt_tokenizer_load_json(json, tok, err, sizeof err)
                  : ttt_tokenizer_load_gpt2(vocab, merges, tok, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ttt tokenizer: %s%s\n", err, strstr(err, "cannot open") ? " (" TOKENIZER_HINT ")" : "");
        return 1;
    }
    if (!json && !o->no_special && ttt_tokenizer_piece_id(*tok, DEFAULT_SPECIAL, strlen(DEFAULT_SPECIAL)) >= 0 &&
        ttt_tokenizer_add_special(*tok, DEFAULT_SPECIAL, NULL, err, sizeof err)) {
        fprintf(stderr, "ttt tokenizer: %s\n", err);
        return 1;
    }
    for (int i = 0; i < o->n_special; i++)
        if (ttt_tokenizer_add_special(*tok, o->special[i], NULL, err, sizeof err)) {
            fprintf(stderr, "ttt tokenizer: %s\n", err);
            return 1;
        }
    return 0;
}

static int do_encode(const opts *o) {
    ttt_tokenizer *tok = NULL;
    int rc = load(o, &tok);
    if (rc) {
        ttt_tokenizer_free(tok);
        return rc;
    }
    size_t len;
    char *text = read_input(o->input, &len);
    if (!text) {
        ttt_tokenizer_free(tok);
        return 1;
    }
    char err[512];
    ttt_token_ids ids = {0};
    double first = 0, best = 1e300;
    for (int64_t r = 0; r < o->repeat; r++) {
        ids.n = 0;
        double t0 = now_s();
        if (ttt_tokenizer_encode(tok, text, len, &ids, err, sizeof err)) {
            fprintf(stderr, "ttt tokenizer: %s\n", err);
            rc = 1;
            goto out;
        }
        double dt = now_s() - t0;
        if (r == 0) first = dt;
        if (dt < best) best = dt;
    }
    /* print: at most 11 characters per id */
    char *buf = malloc(ids.n * 12 + 2);
    if (!buf) {
        fprintf(stderr, "ttt tokenizer: out of memory\n");
        rc = 1;
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < ids.n; i++) k += (size_t)sprintf(buf + k, i ? " %d" : "%d", ids.ids[i]);
    buf[k++] = '\n';
    if (fwrite(buf, 1, k, stdout) != k || fflush(stdout)) {
        fprintf(stderr, "ttt tokenizer: cannot write the ids\n");
        rc = 1;
    }
    free(buf);
    if (o->stats) {
        fprintf(stderr, "%zu bytes -> %zu tokens (%.2f bytes/token); encode %.1f ms = %.2f MB/s", len, ids.n,
                ids.n ? (double)len / (double)ids.n : 0.0, first * 1e3, first > 0 ? (double)len / first / 1e6 : 0.0);
        if (o->repeat > 1)
            fprintf(stderr, "; fastest of %lld: %.1f ms = %.2f MB/s", (long long)o->repeat, best * 1e3,
                    best > 0 ? (double)len / best / 1e6 : 0.0);
        fprintf(stderr, "\n");
    }
out:
    ttt_token_ids_free(&ids);
    free(text);
    ttt_tokenizer_free(tok);
    return rc;
}

static int do_decode(const opts *o) {
    ttt_tokenizer *tok = NULL;
    int rc = load(o, &tok);
    if (rc) {
        ttt_tokenizer_free(tok);
        return rc;
    }
    size_t len;
    char *in = read_input(o->input, &len);
    if (!in) {
        ttt_tokenizer_free(tok);
        return 1;
    }
    ttt_token_ids ids = {0};
    char *out = NULL, err[512];
    size_t out_len;
    for (char *p = in;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "ttt tokenizer decode: not an id at \"%.20s\"\n", p);
            rc = 1;
            goto done;
        }
        if (ids.n == ids.cap) {
            size_t cap = ids.cap ? ids.cap * 2 : 1024;
            int32_t *q = realloc(ids.ids, cap * sizeof *q);
            if (!q) {
                fprintf(stderr, "ttt tokenizer decode: out of memory\n");
                rc = 1;
                goto done;
            }
            ids.ids = q;
            ids.cap = cap;
        }
        ids.ids[ids.n++] = (int32_t)v;
        p = end;
    }
    if (ttt_tokenizer_decode(tok, ids.ids, ids.n, o->skip_special, &out, &out_len, err, sizeof err)) {
        fprintf(stderr, "ttt tokenizer: %s\n", err);
        rc = 1;
        goto done;
    }
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout)) {
        fprintf(stderr, "ttt tokenizer: cannot write the text\n");
        rc = 1;
    }
done:
    free(out);
    ttt_token_ids_free(&ids);
    free(in);
    ttt_tokenizer_free(tok);
    return rc;
}

static int do_train(const opts *o, const char *const *inputs, int n_inputs, int64_t vocab_size, const char *out_dir) {
    if (!n_inputs || !vocab_size || !out_dir) {
        fprintf(stderr, "ttt tokenizer train: needs --input FILE..., --vocab-size N and --out DIR\n");
        return 2;
    }
    const char *special[MAX_SPECIAL + 1];
    int ns = 0;
    if (!o->no_special) special[ns++] = DEFAULT_SPECIAL;
    for (int i = 0; i < o->n_special; i++)
        if (o->no_special || strcmp(o->special[i], DEFAULT_SPECIAL)) special[ns++] = o->special[i];
    ttt_bpe_train_config cfg = {(int32_t)vocab_size, special, ns, !o->quiet};
    ttt_tokenizer *tok = NULL;
    char err[512];
    if (ttt_tokenizer_train_files(inputs, n_inputs, &cfg, &tok, err, sizeof err) ||
        ttt_tokenizer_save_gpt2(tok, out_dir, err, sizeof err)) {
        fprintf(stderr, "ttt tokenizer train: %s\n", err);
        ttt_tokenizer_free(tok);
        return 1;
    }
    if (!o->quiet)
        fprintf(stderr, "tokenizer train: wrote %s/vocab.json (%d tokens) and %s/merges.txt (%zu merges)\n", out_dir,
                ttt_tokenizer_vocab_size(tok), out_dir, ttt_tokenizer_merge_count(tok));
    ttt_tokenizer_free(tok);
    return 0;
}

int cmd_tokenizer(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    int train = !strcmp(sub, "train"), encode = !strcmp(sub, "encode"), decode = !strcmp(sub, "decode");
    if (!train && !encode && !decode) {
        fprintf(stderr, "ttt tokenizer: unknown subcommand '%s' (train, encode or decode)\n", sub);
        return 2;
    }
    opts o;
    memset(&o, 0, sizeof o);
    o.repeat = 1;
    const char *inputs[MAX_INPUTS];
    int n_inputs = 0;
    int64_t vocab_size = 0;
    const char *out_dir = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int r;
        int has_value = i + 1 < argc;
        /* this subcommand's flags that take a value, given none (last on the line) */
        const int takes_value = !strcmp(a, "--input") || (train && !strcmp(a, "--out")) ||
                                ((train || encode) && !strcmp(a, "--special")) ||
                                (!train && (!strcmp(a, "--vocab") || !strcmp(a, "--merges") || !strcmp(a, "--tokenizer") ||
                                            !strcmp(a, "--dir") || !strcmp(a, "--tokenizer-json")));
        if (takes_value && !has_value) {
            fprintf(stderr, "ttt tokenizer %s: %s needs a value\n", sub, a);
            return 2;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (train && (r = cli_flag_int(argc, argv, &i, "--vocab-size", 256, INT32_MAX, &vocab_size))) {
            if (r < 0) return 2;
        } else if (encode && (r = cli_flag_int(argc, argv, &i, "--repeat", 1, 1000, &o.repeat))) {
            if (r < 0) return 2;
        } else if (!strcmp(a, "--input") && has_value) {
            if (!train) {
                o.input = argv[++i];
                continue;
            }
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) {
                if (n_inputs == MAX_INPUTS) {
                    fprintf(stderr, "ttt tokenizer train: at most %d input files\n", MAX_INPUTS);
                    return 2;
                }
                inputs[n_inputs++] = argv[++i];
            }
        } else if (train && !strcmp(a, "--out") && has_value) {
            out_dir = argv[++i];
        } else if (!train && !strcmp(a, "--vocab") && has_value) {
            o.vocab = argv[++i];
        } else if (!train && !strcmp(a, "--merges") && has_value) {
            o.merges = argv[++i];
        } else if (!train && (!strcmp(a, "--tokenizer") || !strcmp(a, "--dir") || !strcmp(a, "--tokenizer-json")) &&
                   has_value) {
            if (o.tokenizer) {
                fprintf(stderr, "ttt tokenizer: give one tokenizer (%s after --tokenizer %s)\n", a, o.tokenizer);
                return 2;
            }
            if (strcmp(a, "--tokenizer")) /* the older spellings: one flag for a tokenizer everywhere now */
                fprintf(stderr, "ttt tokenizer: note: %s is deprecated; use --tokenizer %s (the same flag as data prepare and lm generate)\n",
                        a, argv[i + 1]);
            o.tokenizer = argv[++i];
        } else if ((train || encode) && !strcmp(a, "--special") && has_value) {
            if (o.n_special == MAX_SPECIAL || !argv[i + 1][0]) {
                fprintf(stderr, "ttt tokenizer: --special: at most %d, none empty\n", MAX_SPECIAL);
                return 2;
            }
            o.special[o.n_special++] = argv[++i];
        } else if ((train || encode) && cli_flag_bool(argv, i, "--no-special", &o.no_special)) {
        } else if (encode && cli_flag_bool(argv, i, "--stats", &o.stats)) {
        } else if (decode && cli_flag_bool(argv, i, "--skip-special", &o.skip_special)) {
        } else if (train && cli_flag_bool(argv, i, "--quiet", &o.quiet)) {
        } else {
            char name[64];
            snprintf(name, sizeof name, "tokenizer %s", sub);
            return cli_unknown(name, a);
        }
    }
    if (train) return do_train(&o, inputs, n_inputs, vocab_size, out_dir);
    return encode ? do_encode(&o) : do_decode(&o);
}
