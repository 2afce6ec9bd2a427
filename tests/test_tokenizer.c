/* Byte-level BPE tokenizer: pre-tokenization, BPE, training, save/load, and
 * exact agreement with the Hugging Face `tokenizers` library on reference
 * encodings (tests/fixtures/tokenizer/gpt2_reference.json, made by
 * scripts/make_tokenizer_fixtures.py) with the GPT-2 files in data/gpt2-tokenizer,
 * and training on data/tinyshakespeare. The repository ships both, so a missing
 * file fails the test (TTT_DATA_DIR points it at another folder of that layout). */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ttt/tokenizer.h"

#ifdef TTT_HAVE_JSONC
#include <json-c/json.h>
#endif

static char root[4096], data_dir[4096];

/* snprintf into a char array, failing the test on truncation. */
#define PATH(buf, ...)                                                                     \
    do {                                                                                   \
        if (snprintf(buf, sizeof buf, __VA_ARGS__) >= (int)sizeof buf) {                  \
            fprintf(stderr, "%s:%d: path too long\n", __FILE__, __LINE__);                 \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void find_paths(void) {
    /* the repository root: this file is ROOT/tests/test_tokenizer.c */
    PATH(root, "%s", __FILE__);
    char *p = strstr(root, "/tests/test_tokenizer.c");
    if (p) *p = 0;
    else PATH(root, ".");
    const char *env = getenv("TTT_DATA_DIR");
    if (env && *env) PATH(data_dir, "%s", env);
    else PATH(data_dir, "%s/data", root);
}

/* A data file the repository ships: present, or a failure that says where it comes from. */
static int have_data_file(const char *path) {
    struct stat st;
    CHECK_MSG(stat(path, &st) == 0 && S_ISREG(st.st_mode),
              "missing %s: the repository ships it under data/ (see data/*/README.md; `git checkout -- data/` restores it)",
              path);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

#ifdef TTT_HAVE_JSONC
static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
#endif

static char *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (s) {
        s[n] = 0;
        *len = (size_t)n;
    }
    return s;
}

/* encode then decode; checks the round trip. Returns the ids (caller frees). */
static ttt_token_ids roundtrip(ttt_tokenizer *tok, const char *text, size_t len) {
    ttt_token_ids ids = {0};
    char err[256];
    int rc = ttt_tokenizer_encode(tok, text, len, &ids, err, sizeof err);
    CHECK_MSG(rc == TTT_OK, "%s", err);
    char *back = NULL;
    size_t blen = 0;
    rc = ttt_tokenizer_decode(tok, ids.ids, ids.n, 0, &back, &blen, err, sizeof err);
    CHECK_MSG(rc == TTT_OK, "%s", err);
    CHECK_MSG(back && blen == len && !memcmp(back, text, len), "round trip of %zu bytes", len);
    free(back);
    return ids;
}

/* ---- pre-tokenization ---------------------------------------------------------------- */

static void expect_split(const char *text, const char *const *want, int n) {
    size_t len = strlen(text), pos = 0;
    int k = 0, ok = 1;
    while (pos < len) {
        size_t end = ttt_gpt2_pretoken_end(text, len, pos);
        if (end <= pos || end > len) {
            ok = 0;
            break;
        }
        if (k >= n || strlen(want[k]) != end - pos || memcmp(want[k], text + pos, end - pos)) ok = 0;
        k++;
        pos = end;
    }
    CHECK_MSG(ok && k == n, "pre-tokens of \"%s\"", text);
}

#define SPLIT(text, ...)                                                              \
    do {                                                                              \
        const char *w_[] = {__VA_ARGS__};                                             \
        expect_split(text, w_, (int)(sizeof w_ / sizeof w_[0]));                      \
    } while (0)

static void test_pretokenize(void) {
    SPLIT("Hello world", "Hello", " world");
    SPLIT("a   b", "a", "  ", " b");
    SPLIT("x\n\n y", "x", "\n\n", " y");
    SPLIT("end  ", "end", "  ");
    SPLIT("a \tb", "a", " ", "\t", "b");
    SPLIT("I'm here, they'll see", "I", "'m", " here", ",", " they", "'ll", " see");
    SPLIT("don't 's 'S", "don", "'t", " '", "s", " '", "S");
    SPLIT("abc123def 42", "abc", "123", "def", " 42");
    SPLIT("x... !?", "x", "...", " !?");
    SPLIT("caf\xc3\xa9 na\xc3\xafve", "caf\xc3\xa9", " na\xc3\xafve");  /* letters */
    SPLIT("e\xcc\x81", "e", "\xcc\x81");                                /* combining mark: not \p{L} */
    SPLIT("\xe6\x97\xa5\xe6\x9c\xac \xe2\x91\xa0", "\xe6\x97\xa5\xe6\x9c\xac", " \xe2\x91\xa0"); /* CJK, No */
    SPLIT("a\xc2\xa0" "b", "a", "\xc2\xa0", "b");                       /* NBSP is \s */
    SPLIT("a\xff\xfe" "b", "a", "\xff\xfe", "b");                       /* invalid UTF-8: punctuation-like */
    SPLIT("   ", "   ");
    SPLIT("\n", "\n");
    CHECK(strlen(ttt_tokenizer_unicode_version()) >= 4);
}

/* ---- BPE from merges, specials, errors ----------------------------------------------- */

static void test_small(void) {
    char err[256];
    ttt_bpe_merge m[] = {{"l", 1, "o", 1}, {"lo", 2, "w", 1}, {" ", 1, "low", 3}, {"e", 1, "r", 1}};
    ttt_tokenizer *tok = NULL;
    CHECK(ttt_tokenizer_from_merges(m, 4, &tok, err, sizeof err) == TTT_OK);
    if (!tok) return;
    CHECK(ttt_tokenizer_vocab_size(tok) == 260);
    CHECK(ttt_tokenizer_merge_count(tok) == 4);
    /* bytes in GPT-2's order: '!' is id 0, 'A' is 32, ' ' (piece U+0120) is 220 */
    CHECK(ttt_tokenizer_piece_id(tok, "!", 1) == 0);
    CHECK(ttt_tokenizer_piece_id(tok, "A", 1) == 32);
    CHECK(ttt_tokenizer_piece_id(tok, "\xc4\xa0", 2) == 220);
    CHECK(ttt_tokenizer_piece_id(tok, "\xc4\xa0low", 5) == 258);
    ttt_token_ids ids = roundtrip(tok, "low lower", 9);
    int32_t want[] = {257, 258, 259};  /* "low" " low" "er" */
    CHECK(ids.n == 3 && !memcmp(ids.ids, want, sizeof want));
    ttt_token_ids_free(&ids);

    int32_t sid = -1;
    CHECK(ttt_tokenizer_add_special(tok, "<|end|>", &sid, err, sizeof err) == TTT_OK);
    CHECK(sid == 260 && ttt_tokenizer_is_special(tok, 260) && !ttt_tokenizer_is_special(tok, 257));
    ids = roundtrip(tok, "low<|end|><|end|> low<|end", 26);
    CHECK(ids.n >= 4 && ids.ids[1] == 260 && ids.ids[2] == 260);
    char *text;
    size_t len;
    CHECK(ttt_tokenizer_decode(tok, ids.ids, ids.n, 1, &text, &len, err, sizeof err) == TTT_OK);
    CHECK(len == 12 && !memcmp(text, "low low<|end", 12));
    free(text);
    ttt_token_ids_free(&ids);

    int32_t bad[] = {5, 261};
    CHECK(ttt_tokenizer_decode(tok, bad, 2, 0, &text, &len, err, sizeof err) == TTT_ERR);
    CHECK(strstr(err, "261") != NULL);
    CHECK(!text);

    /* every byte value round-trips, one byte per token when nothing merges */
    char all[256];
    for (int i = 0; i < 256; i++) all[i] = (char)i;
    ids = roundtrip(tok, all, 256);
    ttt_token_ids_free(&ids);
    ids = roundtrip(tok, "", 0);
    CHECK(ids.n == 0);
    ttt_token_ids_free(&ids);
    ttt_tokenizer_free(tok);
}

/* The worked example of Stanford CS336's assignment 1 (words low x5, lower x2,
 * widest x3, newest x6): the first six merges with its tie-break. */
static void test_train_small(void) {
    const char *text = "low\nlow\nlow\nlow\nlow\nlower\nlower\nwidest\nwidest\nwidest\n"
                       "newest\nnewest\nnewest\nnewest\nnewest\nnewest<|endoftext|>lowest";
    const char *special[] = {"<|endoftext|>"};
    ttt_bpe_train_config cfg = {256 + 6 + 1, special, 1, 0};
    size_t len = strlen(text);
    ttt_tokenizer *tok = NULL;
    char err[256];
    CHECK_MSG(ttt_tokenizer_train(&text, &len, 1, &cfg, &tok, err, sizeof err) == TTT_OK, "%s", err);
    if (!tok) return;
    const char *want[] = {"st", "est", "ow", "low", "west", "ne"};
    CHECK(ttt_tokenizer_merge_count(tok) == 6);
    CHECK(ttt_tokenizer_vocab_size(tok) == 263);
    for (int i = 0; i < 6; i++) {
        size_t pl;
        const char *p = ttt_tokenizer_piece(tok, 256 + i, &pl);
        CHECK_MSG(p && pl == strlen(want[i]) && !memcmp(p, want[i], pl), "merge %d: want %s", i + 1, want[i]);
    }
    CHECK(ttt_tokenizer_piece_id(tok, "<|endoftext|>", 13) == 262 && ttt_tokenizer_is_special(tok, 262));
    ttt_token_ids ids = roundtrip(tok, text, len);
    ttt_token_ids_free(&ids);
    ttt_tokenizer_free(tok);

    cfg.vocab_size = 100;
    CHECK(ttt_tokenizer_train(&text, &len, 1, &cfg, &tok, err, sizeof err) == TTT_ERR && !tok);
    CHECK(strstr(err, "vocab_size") != NULL);
    /* a corpus that runs out of pairs stops early */
    const char *tiny = "ab ab";
    size_t tl = 5;
    cfg.vocab_size = 1000;
    CHECK(ttt_tokenizer_train(&tiny, &tl, 1, &cfg, &tok, err, sizeof err) == TTT_OK);
    CHECK(tok && ttt_tokenizer_merge_count(tok) == 2);  /* a+b, then space+ab */
    ttt_tokenizer_free(tok);
}

/* ---- reference encodings ------------------------------------------------------------ */

#ifdef TTT_HAVE_JSONC
static int check_reference(ttt_tokenizer *tok, json_object *cases, const char *what) {
    size_t n = json_object_array_length(cases);
    int match = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(cases, i), *jt, *jids;
        json_object_object_get_ex(c, "text", &jt);
        json_object_object_get_ex(c, "ids", &jids);
        const char *text = json_object_get_string(jt);
        size_t len = (size_t)json_object_get_string_len(jt);
        ttt_token_ids ids = roundtrip(tok, text, len);
        size_t nw = json_object_array_length(jids);
        int same = ids.n == nw;
        for (size_t k = 0; same && k < nw; k++)
            same = ids.ids[k] == json_object_get_int(json_object_array_get_idx(jids, k));
        CHECK_MSG(same, "%s: case %zu (%zu bytes): %zu ids, want %zu", what, i, len, ids.n, nw);
        if (!same) {
            fprintf(stderr, "  text: %.80s\n  got:", text);
            for (size_t k = 0; k < ids.n && k < 24; k++) fprintf(stderr, " %d", ids.ids[k]);
            fprintf(stderr, "\n  want:");
            for (size_t k = 0; k < nw && k < 24; k++)
                fprintf(stderr, " %d", json_object_get_int(json_object_array_get_idx(jids, k)));
            fprintf(stderr, "\n");
        }
        match += same;
        ttt_token_ids_free(&ids);
    }
    printf("%s: %d/%zu reference encodings match exactly (tokenizers library)\n", what, match, n);
    return match;
}
#endif

static void test_reference(void) {
#ifndef TTT_HAVE_JSONC
    printf("note: built without json-c; skipping the reference encodings\n");
#else
    char vocab[4200], merges[4200], fixture[4200], tj[4200], err[512];
    PATH(vocab, "%s/gpt2-tokenizer/vocab.json", data_dir);
    PATH(merges, "%s/gpt2-tokenizer/merges.txt", data_dir);
    PATH(fixture, "%s/tests/fixtures/tokenizer/gpt2_reference.json", root);
    PATH(tj, "%s/tests/fixtures/tokenizer/gpt2_tokenizer.json", root);
    json_object *ref = json_object_from_file(fixture), *cases = NULL;
    CHECK_MSG(ref && json_object_object_get_ex(ref, "cases", &cases), "cannot read %s", fixture);
    if (!cases) {
        json_object_put(ref);
        return;
    }
    if (have_data_file(vocab) && have_data_file(merges)) {
        ttt_tokenizer *tok = NULL;
        double t0 = now_s();
        int rc = ttt_tokenizer_load_gpt2(vocab, merges, &tok, err, sizeof err);
        CHECK_MSG(rc == TTT_OK, "%s", err);
        if (tok) {
            printf("loaded GPT-2 vocab.json + merges.txt in %.0f ms: %d ids, %zu merges\n", (now_s() - t0) * 1e3,
                   ttt_tokenizer_vocab_size(tok), ttt_tokenizer_merge_count(tok));
            CHECK(ttt_tokenizer_vocab_size(tok) == 50257 && ttt_tokenizer_merge_count(tok) == 50000);
            int32_t eot = -1;
            CHECK(ttt_tokenizer_add_special(tok, "<|endoftext|>", &eot, err, sizeof err) == TTT_OK && eot == 50256);
            int n = check_reference(tok, cases, "GPT-2 vocab.json + merges.txt");
            CHECK(n == (int)json_object_array_length(cases));
            ttt_tokenizer_free(tok);
        }
    }
    CHECK_MSG(exists(tj), "missing %s: the repository ships it (scripts/make_tokenizer_fixtures.py makes it)", tj);
    if (exists(tj)) {
        ttt_tokenizer *tok = NULL;
        int rc = ttt_tokenizer_load_json(tj, &tok, err, sizeof err);
        CHECK_MSG(rc == TTT_OK, "%s", err);
        if (tok) {
            CHECK(ttt_tokenizer_is_special(tok, 50256));
            int n = check_reference(tok, cases, "tokenizer.json");
            CHECK(n == (int)json_object_array_length(cases));
            ttt_tokenizer_free(tok);
        }
    }
    json_object_put(ref);
#endif
}

/* ---- loaders: formats and rejections --------------------------------------------------- */

#ifdef TTT_HAVE_JSONC
static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A minimal valid tokenizer.json body around MODEL and the given pieces. */
static void write_tokenizer_json(const char *path, const char *normalizer, const char *pre, const char *model_extra,
                                 const char *merges, const char *added) {
    char vocab[65536];
    size_t k = 0;
    /* the 256 byte pieces in GPT-2 order, then "ab" and "Ġa" */
    k += (size_t)snprintf(vocab + k, sizeof vocab - k, "{");
    int id = 0;
    for (int cp = 0; cp < 324; cp++) {
        int is_byte = (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255) ||
                      (cp >= 256 && cp < 256 + 68);
        if (!is_byte) continue;
        char u[8];
        if (cp == '"' || cp == '\\') PATH(u, "\\%c", cp);
        else if (cp < 0x80) PATH(u, "%c", cp);
        else PATH(u, "%c%c", 0xC0 | (cp >> 6), 0x80 | (cp & 0x3F));
        k += (size_t)snprintf(vocab + k, sizeof vocab - k, "%s\"%s\": %d", id ? ", " : "", u, id);
        id++;
    }
    snprintf(vocab + k, sizeof vocab - k, ", \"ab\": 256, \"\xc4\xa0" "a\": 257, \"\xc4\xa0" "ab\": 258}");
    char *doc = malloc(sizeof vocab + 4096);
    snprintf(doc, sizeof vocab + 4096,
             "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \"added_tokens\": %s,"
             " \"normalizer\": %s, \"pre_tokenizer\": %s, \"post_processor\": null, \"decoder\": {\"type\": \"ByteLevel\"},"
             " \"model\": {\"type\": \"BPE\", \"dropout\": null %s, \"vocab\": %s, \"merges\": %s}}",
             added, normalizer, pre, model_extra, vocab, merges);
    write_file(path, doc);
    free(doc);
}

#endif

static void test_loaders(const char *tmp) {
#ifndef TTT_HAVE_JSONC
    (void)tmp;
    char err[256];
    ttt_tokenizer *t;
    CHECK(ttt_tokenizer_load_json("x.json", &t, err, sizeof err) == TTT_ERR && strstr(err, "json-c"));
    printf("note: built without json-c; skipping the loader tests\n");
#else
    char path[4200], err[512];
    ttt_tokenizer *tok = NULL;
    const char *bl = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}";
    PATH(path, "%s/t.json", tmp);

    /* merges as strings, and as pairs; added token beyond the vocabulary */
    const char *added = "[{\"id\": 259, \"content\": \"<s>\", \"single_word\": false, \"lstrip\": false,"
                        " \"rstrip\": false, \"normalized\": false, \"special\": true}]";
    for (int form = 0; form < 2; form++) {
        write_tokenizer_json(path, "null", bl, "",
                             form ? "[[\"\xc4\xa0\", \"a\"], [\"a\", \"b\"], [\"\xc4\xa0" "a\", \"b\"]]"
                                  : "[\"\xc4\xa0 a\", \"a b\", \"\xc4\xa0" "a b\"]",
                             added);
        CHECK_MSG(ttt_tokenizer_load_json(path, &tok, err, sizeof err) == TTT_OK, "%s", err);
        if (!tok) continue;
        ttt_token_ids ids = roundtrip(tok, "ab ab<s>a", 9);
        int32_t want[] = {256, 258, 259, 64};  /* 'a' is id 64 */
        CHECK(ids.n == 4 && !memcmp(ids.ids, want, sizeof want));
        ttt_token_ids_free(&ids);
        ttt_tokenizer_free(tok);
    }
    /* add_prefix_space: "ab" encodes as " ab" */
    write_tokenizer_json(path, "null", "{\"type\": \"ByteLevel\", \"add_prefix_space\": true}", "",
                         "[\"\xc4\xa0 a\", \"a b\", \"\xc4\xa0" "a b\"]", "[]");
    CHECK_MSG(ttt_tokenizer_load_json(path, &tok, err, sizeof err) == TTT_OK, "%s", err);
    if (tok) {
        ttt_token_ids ids = {0};
        CHECK(ttt_tokenizer_encode(tok, "ab", 2, &ids, err, sizeof err) == TTT_OK);
        CHECK(ids.n == 1 && ids.ids[0] == 258);
        ttt_token_ids_free(&ids);
        ttt_tokenizer_free(tok);
    }
    /* ignore_merges: a pre-token that is a whole token skips the merges */
    write_tokenizer_json(path, "null", bl, ", \"ignore_merges\": true", "[\"a b\"]", "[]");
    CHECK_MSG(ttt_tokenizer_load_json(path, &tok, err, sizeof err) == TTT_OK, "%s", err);
    if (tok) {
        ttt_token_ids ids = {0};
        CHECK(ttt_tokenizer_encode(tok, " ab", 3, &ids, err, sizeof err) == TTT_OK);
        CHECK(ids.n == 1 && ids.ids[0] == 258);
        ttt_token_ids_free(&ids);
        ttt_tokenizer_free(tok);
    }

    struct {
        const char *normalizer, *pre, *extra, *merges, *added, *want;
    } bad[] = {
        {"{\"type\": \"NFC\"}", bl, "", "[]", "[]", "normalizer \"NFC\""},
        {"null", "{\"type\": \"Metaspace\"}", "", "[]", "[]", "pre_tokenizer \"Metaspace\""},
        {"null", "{\"type\": \"Sequence\", \"pretokenizers\": []}", "", "[]", "[]", "pre_tokenizer \"Sequence\""},
        {"null", "{\"type\": \"ByteLevel\", \"use_regex\": false}", "", "[]", "[]", "use_regex"},
        {"null", bl, ", \"byte_fallback\": true", "[]", "[]", "byte_fallback"},
        {"null", bl, ", \"continuing_subword_prefix\": \"##\"", "[]", "[]", "continuing_subword_prefix"},
        {"null", bl, ", \"dropout\": 0.1", "[]", "[]", "dropout"},
        {"null", bl, "", "[\"a c d\"]", "[]", "merges[0]"},
        {"null", bl, "", "[\"a \xc4\xa0\"]", "[]", "not in the vocabulary"},
        {"null", bl, "", "[]", "[{\"id\": 300, \"content\": \"x\", \"lstrip\": true}]", "lstrip"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_tokenizer_json(path, bad[i].normalizer, bad[i].pre, bad[i].extra, bad[i].merges, bad[i].added);
        err[0] = 0;
        int rc = ttt_tokenizer_load_json(path, &tok, err, sizeof err);
        CHECK_MSG(rc == TTT_ERR && !tok && strstr(err, bad[i].want), "case %zu: want \"%s\" in \"%s\"", i,
                  bad[i].want, err);
    }
    write_file(path, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}, \"pre_tokenizer\": "
                     "{\"type\": \"ByteLevel\"}}");
    CHECK(ttt_tokenizer_load_json(path, &tok, err, sizeof err) == TTT_ERR && strstr(err, "model type \"WordPiece\""));
    write_file(path, "{\"model\": ");
    CHECK(ttt_tokenizer_load_json(path, &tok, err, sizeof err) == TTT_ERR && strstr(err, "invalid JSON"));
    CHECK(ttt_tokenizer_load_json("/nonexistent/tokenizer.json", &tok, err, sizeof err) == TTT_ERR &&
          strstr(err, "cannot open /nonexistent/tokenizer.json"));

    /* GPT-2 files: with and without the #version line; bad lines */
    ttt_bpe_merge m[] = {{"a", 1, "b", 1}};
    CHECK(ttt_tokenizer_from_merges(m, 1, &tok, err, sizeof err) == TTT_OK);
    char dir[4200], vocab[4300], merges[4300];
    PATH(dir, "%s/gpt2", tmp);
    CHECK_MSG(ttt_tokenizer_save_gpt2(tok, dir, err, sizeof err) == TTT_OK, "%s", err);
    ttt_tokenizer_free(tok);
    PATH(vocab, "%s/vocab.json", dir);
    PATH(merges, "%s/merges.txt", dir);
    CHECK(ttt_tokenizer_load_gpt2(vocab, merges, &tok, err, sizeof err) == TTT_OK);
    CHECK(tok && ttt_tokenizer_merge_count(tok) == 1 && ttt_tokenizer_piece_id(tok, "ab", 2) == 256);
    ttt_tokenizer_free(tok);
    write_file(merges, "a b\n\n");
    CHECK(ttt_tokenizer_load_gpt2(vocab, merges, &tok, err, sizeof err) == TTT_OK);
    ttt_tokenizer_free(tok);
    write_file(merges, "#version: 0.2\na b c\n");
    CHECK(ttt_tokenizer_load_gpt2(vocab, merges, &tok, err, sizeof err) == TTT_ERR && strstr(err, "merges.txt:2"));
    write_file(merges, "b a\n");
    CHECK(ttt_tokenizer_load_gpt2(vocab, merges, &tok, err, sizeof err) == TTT_ERR &&
          strstr(err, "merged token is not in the vocabulary"));
    write_file(vocab, "{\"a\": 0}");
    CHECK(ttt_tokenizer_load_gpt2(vocab, merges, &tok, err, sizeof err) == TTT_ERR && strstr(err, "no token for byte"));
#endif
}

/* ---- training on tinyshakespeare, save, reload; throughput ----------------------------------- */

static void test_shakespeare(const char *tmp) {
    char corpus[4200], vocab[4200], merges[4200], err[512];
    PATH(corpus, "%s/tinyshakespeare/input.txt", data_dir);
    size_t len;
    char *text = have_data_file(corpus) ? read_whole(corpus, &len) : NULL;
    CHECK_MSG(text, "cannot read %s", corpus);
    if (!text) return;
    const char *special[] = {"<|endoftext|>"};
    ttt_bpe_train_config cfg = {2000, special, 1, 0};
    const char *paths[] = {corpus};
    ttt_tokenizer *tok = NULL;
    double t0 = now_s();
    int rc = ttt_tokenizer_train_files(paths, 1, &cfg, &tok, err, sizeof err);
    double dt = now_s() - t0;
    CHECK_MSG(rc == TTT_OK, "%s", err);
    if (tok) {
        printf("trained on tinyshakespeare (%zu bytes): %zu merges in %.2f s\n", len, ttt_tokenizer_merge_count(tok), dt);
        CHECK(ttt_tokenizer_vocab_size(tok) == 2000 && ttt_tokenizer_merge_count(tok) == 2000 - 257);
        ttt_token_ids ids = roundtrip(tok, text, len);
        printf("  encodes the corpus in %zu tokens (%.2f bytes/token)\n", ids.n, (double)len / (double)ids.n);
        CHECK((double)len / (double)ids.n > 2.5);
        char dir[4300];
        PATH(dir, "%s/shakespeare", tmp);
#ifdef TTT_HAVE_JSONC
        CHECK_MSG(ttt_tokenizer_save_gpt2(tok, dir, err, sizeof err) == TTT_OK, "%s", err);
        PATH(vocab, "%s/vocab.json", dir);
        PATH(merges, "%s/merges.txt", dir);
        ttt_tokenizer *back = NULL;
        CHECK_MSG(ttt_tokenizer_load_gpt2(vocab, merges, &back, err, sizeof err) == TTT_OK, "%s", err);
        if (back) {
            CHECK(ttt_tokenizer_add_special(back, "<|endoftext|>", NULL, err, sizeof err) == TTT_OK);
            CHECK(ttt_tokenizer_vocab_size(back) == 2000 && ttt_tokenizer_is_special(back, 1999));
            ttt_token_ids ids2 = roundtrip(back, text, len);
            CHECK(ids2.n == ids.n && !memcmp(ids2.ids, ids.ids, ids.n * sizeof *ids.ids));
            ttt_token_ids_free(&ids2);
            ttt_tokenizer_free(back);
        }
        DIR *d = opendir(dir);  /* the atomic writes left no temporary files */
        int tmpfiles = 0;
        for (struct dirent *e; d && (e = readdir(d));) tmpfiles += strstr(e->d_name, ".tmp") != NULL;
        if (d) closedir(d);
        CHECK(d && tmpfiles == 0);
#else
        (void)vocab;
        (void)merges;
        (void)dir;
#endif
        ttt_token_ids_free(&ids);
        ttt_tokenizer_free(tok);
    }

    /* GPT-2 encode throughput on the corpus (informational; docs/tokenizer.md) */
#ifdef TTT_HAVE_JSONC
    PATH(vocab, "%s/gpt2-tokenizer/vocab.json", data_dir);
    PATH(merges, "%s/gpt2-tokenizer/merges.txt", data_dir);
    rc = ttt_tokenizer_load_gpt2(vocab, merges, &tok, err, sizeof err);
    CHECK_MSG(rc == TTT_OK, "%s", err);
    if (rc == TTT_OK) {
        ttt_token_ids ids = {0};
        t0 = now_s();
        CHECK(ttt_tokenizer_encode(tok, text, len, &ids, err, sizeof err) == TTT_OK);
        dt = now_s() - t0;
        printf("GPT-2 encode of tinyshakespeare: %zu tokens, %.1f ms, %.1f MB/s (cold cache)\n", ids.n, dt * 1e3,
               (double)len / dt / 1e6);
        CHECK(ids.n == 338025);  /* the tokenizers library's count for this file */
        ttt_token_ids_free(&ids);
        ttt_tokenizer_free(tok);
    }
#endif
    free(text);
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        for (struct dirent *e; (e = readdir(d));) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4400];
            PATH(p, "%s/%s", path, e->d_name);
            remove_tree(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        remove(path);
    }
}

int main(void) {
    find_paths();
    char tmp[] = "/tmp/ttt_tokenizer_test_XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_pretokenize();
    test_small();
    test_train_small();
    test_loaders(tmp);
    test_reference();
    test_shakespeare(tmp);
    remove_tree(tmp);
    TEST_MAIN_END();
}
