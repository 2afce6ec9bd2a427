/* ttt data: token shards (include/ttt/shards.h, docs/shards.md).
 *   prepare  text files or folders -> one shard (each file one document + end-of-text)
 *   info     header and document statistics
 *   verify   full check (hash, token range) */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "ttt/fileio.h"
#include "ttt/shards.h"
#include "ttt/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: ttt data prepare --tokenizer PATH --out FILE [flags] INPUT...\n"
            "       ttt data info FILE\n"
            "       ttt data verify FILE\n"
            "\n"
            "prepare   tokenizes text files into one shard. INPUT is a file or a folder (walked recursively,\n"
            "          in sorted order so the shard is reproducible; files named directly are always taken).\n"
            "          Each file is one document, followed by the end-of-text token. The shard is written\n"
            "          atomically; a progress line goes to stderr, the summary to stdout.\n"
            "  --tokenizer PATH     a folder with vocab.json + merges.txt (GPT-2 style, as `ttt tokenizer train`\n"
            "                       writes them) or a Hugging Face tokenizer.json\n"
            "  --out FILE           the shard to write\n"
            "  --ext LIST           only files ending in one of these, comma-separated (e.g. .rst,.txt)\n"
            "  --split-tokens N     cut documents into pieces of at most N tokens (training data)\n"
            "  --min-doc-tokens N   drop documents (after splitting) shorter than N tokens (e.g. 32768 for the\n"
            "                       long-context evaluation set)\n"
            "  --max-doc-tokens N   drop documents (after splitting) longer than N tokens\n"
            "  --eot PIECE          the end-of-text token (a piece of the vocabulary; default <|endoftext|>,\n"
            "                       when the vocabulary has it, else none)\n"
            "  --no-eot             append no end-of-text token\n"
            "  --concat-dirs        one document per folder: the folder's files, concatenated in sorted order\n"
            "                       (long documents from collections of short files)\n"
            "  --quiet              no progress line\n"
            "info      prints the header, the document count and min / median / max document length.\n"
            "verify    checks the content hash and that every token is below the vocabulary size.\n"
            "exit codes: 0 ok, 1 runtime failure (message names the file), 2 bad usage\n");
}

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static int list_push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        size_t c = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, c * sizeof *v);
        if (!v) return -1;
        l->v = v, l->cap = c;
    }
    return (l->v[l->n] = strdup(s)) ? (int)l->n++ : -1;
}

static void list_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_ext(const char *name, const char *exts) {
    if (!exts) return 1;
    const size_t n = strlen(name);
    for (const char *p = exts; *p;) {
        const char *comma = strchr(p, ',');
        size_t k = comma ? (size_t)(comma - p) : strlen(p);
        if (k && k <= n && !strncmp(name + n - k, p, k)) return 1;
        p += k + (comma != NULL);
    }
    return 0;
}

/* Files under path, sorted, a folder's own files before its subfolders (so that
 * with --concat-dirs each folder's files are adjacent). groups[k] names the
 * document file k belongs to under --concat-dirs: its folder, or the file itself
 * when it was named directly. */
static int walk(const char *path, const char *exts, strlist *files, strlist *groups, int top) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "ttt data: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode) && top) return list_push(files, path) < 0 || list_push(groups, path) < 0 ? -1 : 0;
    if (!S_ISDIR(st.st_mode)) return 0;
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "ttt data: %s: %s\n", path, strerror(errno));
        return -1;
    }
    strlist names = {0};
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)))
        if (e->d_name[0] != '.' && list_push(&names, e->d_name) < 0) rc = -1;
    closedir(d);
    if (names.n) qsort(names.v, names.n, sizeof *names.v, cmp_str);
    char *full = NULL;
    for (int pass = 0; pass < 2; pass++) /* 0: files, 1: folders */
        for (size_t i = 0; rc == 0 && i < names.n; i++) {
            size_t len = strlen(path) + strlen(names.v[i]) + 2;
            char *f = realloc(full, len);
            if (!f) {
                rc = -1;
                break;
            }
            full = f;
            snprintf(full, len, "%s/%s", path, names.v[i]);
            if (stat(full, &st) != 0) continue;
            if (pass == 1 && S_ISDIR(st.st_mode)) rc = walk(full, exts, files, groups, 0);
            else if (pass == 0 && S_ISREG(st.st_mode) && has_ext(names.v[i], exts))
                rc = list_push(files, full) < 0 || list_push(groups, path) < 0 ? -1 : 0;
        }
    free(full);
    list_free(&names);
    return rc;
}

static char *read_file(const char *path, size_t *len) {
    char *d = NULL;
    return ttt_read_file(path, &d, len, NULL, 0) == TTT_OK ? d : NULL; /* errno says why */
}

typedef struct {
    const char *tokenizer, *out, *exts;
    const char *eot;
    int64_t split, min_doc, max_doc;
    int concat_dirs, quiet, no_eot;
} prep_opts;

typedef struct {
    ttt_shard_writer *w;
    int64_t split, min_doc, max_doc, docs, short_docs, long_docs, empty_docs, tokens;
} sink;

/* One document (pieces of at most split tokens), dropping pieces outside [min_doc, max_doc]. */
static int emit(sink *s, const int32_t *ids, int64_t n) {
    char err[512];
    const int64_t step = s->split > 0 ? s->split : (n > 0 ? n : 1);
    for (int64_t at = 0; at < n; at += step) {
        const int64_t k = n - at < step ? n - at : step;
        if (k < s->min_doc) {
            s->short_docs++;
            continue;
        }
        if (k > s->max_doc) {
            s->long_docs++;
            continue;
        }
        if (ttt_shard_writer_add(s->w, ids + at, k, err, sizeof err)) {
            fprintf(stderr, "ttt data: %s\n", err);
            return -1;
        }
        s->docs++, s->tokens += k;
    }
    return 0;
}

static int prepare(const prep_opts *o, int n_inputs, char **inputs) {
    strlist files = {0}, groups = {0};
    for (int i = 0; i < n_inputs; i++)
        if (walk(inputs[i], o->exts, &files, &groups, 1) < 0) {
            list_free(&files), list_free(&groups);
            return 1;
        }
    if (files.n == 0) {
        fprintf(stderr, "ttt data prepare: no input files found%s%s\n", o->exts ? " with extensions " : "",
                o->exts ? o->exts : "");
        list_free(&files), list_free(&groups);
        return 1;
    }
    ttt_tokenizer *tok = NULL;
    int rc = cli_load_tokenizer("data prepare", o->tokenizer, &tok);
    if (rc) {
        list_free(&files), list_free(&groups);
        return rc;
    }
    int32_t eot = -1;
    if (o->eot) {
        if ((eot = ttt_tokenizer_piece_id(tok, o->eot, strlen(o->eot))) < 0) {
            fprintf(stderr, "ttt data prepare: --eot %s is not in the vocabulary of %s\n", o->eot, o->tokenizer);
            ttt_tokenizer_free(tok);
            list_free(&files), list_free(&groups);
            return 2;
        }
    } else if (!o->no_eot) {
        eot = ttt_tokenizer_piece_id(tok, CLI_EOT, strlen(CLI_EOT));
        if (eot < 0) fprintf(stderr, "ttt data prepare: note: the vocabulary has no %s; documents get no end-of-text token\n", CLI_EOT);
    }
    char err[512];
    sink s = {.split = o->split, .min_doc = o->min_doc, .max_doc = o->max_doc > 0 ? o->max_doc : INT64_MAX};
    if (ttt_shard_writer_open(o->out, ttt_tokenizer_vocab_size(tok), &s.w, err, sizeof err)) {
        fprintf(stderr, "ttt data prepare: %s\n", err);
        ttt_tokenizer_free(tok);
        list_free(&files), list_free(&groups);
        return 1;
    }
    int32_t *doc = NULL;
    size_t doc_len = 0, doc_cap = 0;
    double t0 = cli_now(), last = t0;
    size_t bytes = 0;
    for (size_t i = 0; rc == 0 && i < files.n; i++) {
        size_t len;
        char *text = read_file(files.v[i], &len);
        if (!text) {
            fprintf(stderr, "ttt data prepare: %s: %s\n", files.v[i], strerror(errno ? errno : EIO));
            rc = 1;
            break;
        }
        ttt_token_ids ids = {0};
        if (ttt_tokenizer_encode(tok, text, len, &ids, err, sizeof err)) {
            fprintf(stderr, "ttt data prepare: %s: %s\n", files.v[i], err);
            free(text);
            rc = 1;
            break;
        }
        free(text);
        bytes += len;
        size_t need = doc_len + ids.n + 1;
        if (need > doc_cap) {
            size_t c = doc_cap ? doc_cap : 1 << 16;
            while (c < need) c *= 2;
            int32_t *d = realloc(doc, c * sizeof *d);
            if (!d) {
                fprintf(stderr, "ttt data prepare: out of memory\n");
                ttt_token_ids_free(&ids);
                rc = 1;
                break;
            }
            doc = d, doc_cap = c;
        }
        /* an empty file encodes to no ids and a NULL array: memcpy must not see it */
        if (ids.n) memcpy(doc + doc_len, ids.ids, ids.n * sizeof *doc);
        doc_len += ids.n;
        ttt_token_ids_free(&ids);
        /* a document ends here unless the next file continues the same folder group */
        const int ends = !o->concat_dirs || i + 1 == files.n || strcmp(groups.v[i], groups.v[i + 1]) != 0;
        if (ends && doc_len == 0) {
            s.empty_docs++; /* an empty file (or folder of empty files) is no document, not a lone end-of-text */
        } else if (ends) {
            if (eot >= 0) doc[doc_len++] = eot;
            if (emit(&s, doc, (int64_t)doc_len) < 0) rc = 1;
            doc_len = 0;
        }
        double now = cli_now();
        if (!o->quiet && (now - last > 1.0 || i + 1 == files.n)) {
            fprintf(stderr, "\rprepare: %zu/%zu files, %lld docs, %lld tokens, %.1f MB/s   ", i + 1, files.n,
                    (long long)s.docs, (long long)s.tokens, (double)bytes / 1e6 / (now - t0 + 1e-9));
            last = now;
        }
    }
    if (!o->quiet) fprintf(stderr, "\n");
    free(doc);
    if (rc == 0 && s.docs == 0) {
        fprintf(stderr, "ttt data prepare: no document to write: %lld empty, %lld outside --min-doc-tokens / --max-doc-tokens; nothing written\n",
                (long long)s.empty_docs, (long long)(s.short_docs + s.long_docs));
        rc = 1;
    }
    if (rc) ttt_shard_writer_abort(s.w);
    else if (ttt_shard_writer_close(s.w, err, sizeof err)) {
        fprintf(stderr, "ttt data prepare: %s\n", err);
        rc = 1;
    } else {
        struct stat st;
        const long long out_bytes = stat(o->out, &st) == 0 ? (long long)st.st_size : -1;
        const double secs = cli_now() - t0;
        printf("wrote %s: %lld documents, %lld tokens, vocabulary %d, %d-byte tokens, %lld bytes, from %zu files "
               "(%.1f MB) in %.1f s (%.1f MB/s)",
               o->out, (long long)s.docs, (long long)s.tokens, (int)ttt_tokenizer_vocab_size(tok),
               ttt_tokenizer_vocab_size(tok) <= 65536 ? 2 : 4, out_bytes, files.n, (double)bytes / 1e6, secs,
               (double)bytes / 1e6 / (secs + 1e-9));
        if (o->min_doc > 0) printf("; dropped %lld shorter than %lld tokens", (long long)s.short_docs, (long long)o->min_doc);
        if (o->max_doc > 0) printf("; dropped %lld longer than %lld tokens", (long long)s.long_docs, (long long)o->max_doc);
        if (s.empty_docs) printf("; skipped %lld empty", (long long)s.empty_docs);
        printf("\n");
    }
    ttt_tokenizer_free(tok);
    list_free(&files), list_free(&groups);
    return rc;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int info_or_verify(const char *path, int verify) {
    char err[512];
    ttt_shard *s = NULL;
    if (ttt_shard_open(path, &s, err, sizeof err)) {
        fprintf(stderr, "ttt data: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (verify) {
        if (ttt_shard_verify(s, err, sizeof err)) fprintf(stderr, "ttt data verify: %s\n", err), rc = 1;
        else printf("%s: ok (%lld tokens, %lld documents)\n", path, (long long)ttt_shard_n_tokens(s), (long long)ttt_shard_n_docs(s));
    } else {
        const int64_t n = ttt_shard_n_docs(s);
        int64_t *lens = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
        if (!lens) fprintf(stderr, "ttt data info: out of memory for %lld document lengths\n", (long long)n), rc = 1;
        for (int64_t i = 0; lens && i < n; i++) {
            int64_t start;
            ttt_shard_doc(s, i, &start, &lens[i], err, sizeof err);
        }
        if (lens && n) qsort(lens, (size_t)n, sizeof *lens, cmp_i64);
        struct stat st;
        printf("%s\n  format TTTSHARD version 1, %d-byte tokens, %lld bytes\n  tokens %lld\n  documents %lld\n  vocabulary %lld\n",
               path, ttt_shard_width(s), stat(path, &st) == 0 ? (long long)st.st_size : -1LL,
               (long long)ttt_shard_n_tokens(s), (long long)n, (long long)ttt_shard_vocab(s));
        if (lens && n)
            printf("  document length min %lld, median %lld, max %lld\n", (long long)lens[0], (long long)lens[n / 2],
                   (long long)lens[n - 1]);
        free(lens);
    }
    ttt_shard_close(s);
    return rc;
}

int cmd_data(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "info") || !strcmp(sub, "verify")) {
        if (argc == 3 && !strcmp(argv[2], "--help")) return usage(stdout), 0;
        if (argc != 3) {
            fprintf(stderr, "usage: ttt data %s FILE\n", sub);
            return 2;
        }
        return info_or_verify(argv[2], !strcmp(sub, "verify"));
    }
    if (strcmp(sub, "prepare")) {
        fprintf(stderr, "ttt data: unknown subcommand '%s' (prepare, info, verify)\n", sub);
        return 2;
    }
    prep_opts o = {0};
    char **inputs = calloc((size_t)argc, sizeof *inputs);
    int n_inputs = 0;
    if (!inputs) return 1;
    for (int i = 2; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            free(inputs);
            return usage(stdout), 0;
        }
        if ((r = cli_flag_str(argc, argv, &i, "--tokenizer", &o.tokenizer)) || (r = cli_flag_str(argc, argv, &i, "--out", &o.out)) ||
            (r = cli_flag_str(argc, argv, &i, "--ext", &o.exts)) ||
            (r = cli_flag_int(argc, argv, &i, "--split-tokens", 1, INT64_MAX, &o.split)) ||
            (r = cli_flag_int(argc, argv, &i, "--min-doc-tokens", 0, INT64_MAX, &o.min_doc)) ||
            (r = cli_flag_int(argc, argv, &i, "--max-doc-tokens", 1, INT64_MAX, &o.max_doc)) ||
            (r = cli_flag_str(argc, argv, &i, "--eot", &o.eot)) || (r = cli_flag_bool(argv, i, "--no-eot", &o.no_eot)) ||
            (r = cli_flag_bool(argv, i, "--concat-dirs", &o.concat_dirs)) || (r = cli_flag_bool(argv, i, "--quiet", &o.quiet))) {
            if (r < 0) {
                free(inputs);
                return 2;
            }
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1]) {
            free(inputs);
            return cli_unknown("data prepare", argv[i]);
        }
        inputs[n_inputs++] = argv[i];
    }
    int rc;
    if (!o.tokenizer || !o.out || !n_inputs) {
        fprintf(stderr, "ttt data prepare: needs --tokenizer, --out and at least one INPUT (see --help)\n");
        rc = 2;
    } else if (o.eot && o.no_eot) {
        fprintf(stderr, "ttt data prepare: --eot and --no-eot exclude each other\n");
        rc = 2;
    } else if (o.max_doc > 0 && o.max_doc < o.min_doc) {
        fprintf(stderr, "ttt data prepare: --max-doc-tokens %lld is below --min-doc-tokens %lld\n", (long long)o.max_doc,
                (long long)o.min_doc);
        rc = 2;
    } else {
        rc = prepare(&o, n_inputs, inputs);
    }
    free(inputs);
    return rc;
}
