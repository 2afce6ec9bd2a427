/* Byte-level BPE tokenizer (GPT-2 style): vocabulary and merge tables,
 * pre-tokenization, encoding, decoding, GPT-2 / tokenizer.json loading and
 * saving. See include/ttt/tokenizer.h. Training is in bpe_train.c; the
 * Unicode class tables are generated into bpe_unicode.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>

#include "../core/engine_private.h"
#include "strmap.h"
#include "ttt/fileio.h"
#include "ttt/gguf.h"
#include "ttt/tokenizer.h"

#ifdef TTT_HAVE_JSONC
#include <json-c/json.h>
#endif

/* Generated tables (src/data/bpe_unicode.c). */
int ttt__unicode_class(uint32_t cp);
const char *ttt__unicode_version(void);

enum { U_OTHER = 0, U_L = 1, U_N = 2, U_S = 3 };
enum { CACHE_MAX_WORD = 128, CACHE_MAX_ENTRIES = 1 << 17 };
enum { F_PRESENT = 1, F_SPECIAL = 2, F_ADDED = 4 };


static int oom(char *err, size_t err_len, const char *what) {
    return ttt__errbuf(err, err_len, "%s: out of memory", what);
}


/* ---- GPT-2's byte <-> unicode map ------------------------------------------------------ */

/* Bytes 33..126, 161..172, 174..255 map to themselves; the other 68 bytes to
 * U+0100.. in byte order. All code points are below 324 (U+0143). */
static uint16_t byte_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint16_t)b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) n++;
    return (uint16_t)(256 + n);
}

typedef struct {
    uint8_t piece[256][2]; /* UTF-8 of each byte's code point */
    uint8_t piece_len[256];
    int16_t cp_byte[324];  /* inverse; -1 for code points no byte maps to */
} byte_map;

static void byte_map_init(byte_map *m) {
    for (int i = 0; i < 324; i++) m->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint16_t cp = byte_cp(b);
        m->cp_byte[cp] = (int16_t)b;
        if (cp < 0x80) {
            m->piece[b][0] = (uint8_t)cp;
            m->piece_len[b] = 1;
        } else {
            m->piece[b][0] = (uint8_t)(0xC0 | (cp >> 6));
            m->piece[b][1] = (uint8_t)(0x80 | (cp & 0x3F));
            m->piece_len[b] = 2;
        }
    }
}

/* ---- UTF-8 and pre-tokenization --------------------------------------------------------- */

/* The code point at s[i] (i < n) and its length; invalid UTF-8 (bad lead or
 * continuation byte, overlong form, surrogate, > U+10FFFF, cut off) gives
 * UINT32_MAX with length 1. */
static uint32_t utf8_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint8_t b = s[i];
    *len = 1;
    if (b < 0x80) return b;
    uint32_t cp;
    size_t need;
    if (b >= 0xC2 && b <= 0xDF) cp = b & 0x1Fu, need = 1;
    else if (b >= 0xE0 && b <= 0xEF) cp = b & 0x0Fu, need = 2;
    else if (b >= 0xF0 && b <= 0xF4) cp = b & 0x07u, need = 3;
    else return UINT32_MAX;
    if (n - i <= need) return UINT32_MAX;
    for (size_t k = 1; k <= need; k++) {
        uint8_t c = s[i + k];
        if ((c & 0xC0) != 0x80) return UINT32_MAX;
        cp = (cp << 6) | (c & 0x3Fu);
    }
    if ((need == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
        return UINT32_MAX;
    *len = need + 1;
    return cp;
}

static inline int class_at(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint8_t b = s[i];
    if (b < 0x80) {
        *len = 1;
        if ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') return U_L;
        if (b >= '0' && b <= '9') return U_N;
        if (b == ' ' || (b >= 9 && b <= 13)) return U_S;
        return U_OTHER;
    }
    uint32_t cp = utf8_at(s, n, i, len);
    return cp == UINT32_MAX ? U_OTHER : ttt__unicode_class(cp);
}

/* One match of 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * at i, with the regex's leftmost-alternative and backtracking semantics. */
size_t ttt_gpt2_pretoken_end(const char *text, size_t n, size_t i) {
    const uint8_t *s = (const uint8_t *)text;
    if (i >= n) return n;
    if (s[i] == '\'' && i + 1 < n) {
        uint8_t c = s[i + 1];
        if (c == 's' || c == 't' || c == 'm' || c == 'd') return i + 2;
        if (i + 2 < n) {
            uint8_t d = s[i + 2];
            if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l')) return i + 3;
        }
    }
    size_t len, start = i;
    int cls = class_at(s, n, i, &len);
    if (s[i] == ' ' && i + 1 < n) {     /* " ?X+": a space then a run of one class */
        size_t l1;
        int c1 = class_at(s, n, i + 1, &l1);
        if (c1 != U_S) {
            cls = c1;
            len = 1 + l1;
        }
    }
    i += len;
    if (cls != U_S) {                   /* \p{L}+, \p{N}+ or [^\s\p{L}\p{N}]+ */
        while (i < n && class_at(s, n, i, &len) == cls) i += len;
        return i;
    }
    /* \s+(?!\S): the whole run if it ends the text, else all but its last
     * character (which then starts the next pre-token, e.g. " word"); a
     * single whitespace character before a non-space is \s+ alone. */
    size_t last = start;
    while (i < n && class_at(s, n, i, &len) == U_S) {
        last = i;
        i += len;
    }
    if (i == n) return n;
    return last > start ? last : i;
}

const char *ttt_tokenizer_unicode_version(void) { return ttt__unicode_version(); }

/* ---- hash maps ------------------------------------------------------------------------ */

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t key; /* UINT64_MAX: empty */
    int32_t rank, id;
} pm_slot;

typedef struct {
    pm_slot *s;
    size_t mask, n;
} pairmap;

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }
static size_t pair_hash(uint64_t k) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 20); }

static const pm_slot *pm_find(const pairmap *m, int32_t a, int32_t b) {
    uint64_t k = pair_key(a, b);
    for (size_t i = pair_hash(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->s[i].key == k) return &m->s[i];
        if (m->s[i].key == UINT64_MAX) return NULL;
    }
}

static int pm_init(pairmap *m, size_t expect) {
    size_t cap = 1024;
    while (cap < expect * 2) cap *= 2;
    m->s = malloc(cap * sizeof *m->s);
    if (!m->s) return TTT_ERR;
    for (size_t i = 0; i < cap; i++) m->s[i].key = UINT64_MAX;
    m->mask = cap - 1;
    m->n = 0;
    return TTT_OK;
}

/* Sets (a, b) -> (rank, id), replacing an earlier entry for the same pair
 * (as the tokenizers library does when merges repeat a pair). */
static int pm_put(pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->mask + 1) {
        pairmap big;
        if (pm_init(&big, (m->mask + 1))) return TTT_ERR;
        for (size_t i = 0; i <= m->mask; i++) {
            if (m->s[i].key == UINT64_MAX) continue;
            size_t j = pair_hash(m->s[i].key) & big.mask;
            while (big.s[j].key != UINT64_MAX) j = (j + 1) & big.mask;
            big.s[j] = m->s[i];
            big.n++;
        }
        free(m->s);
        *m = big;
    }
    uint64_t k = pair_key(a, b);
    size_t i = pair_hash(k) & m->mask;
    while (m->s[i].key != UINT64_MAX && m->s[i].key != k) i = (i + 1) & m->mask;
    if (m->s[i].key == UINT64_MAX) m->n++;
    m->s[i] = (pm_slot){k, rank, id};
    return TTT_OK;
}

/* ---- the tokenizer --------------------------------------------------------------------- */

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    int normalized; /* tokenizer.json's flag: matched in the second pass */
} added_token;

typedef struct {
    int32_t rank, pos, id;
} heap_item;

struct ttt_tokenizer {
    byte_map bm;
    strmap vocab;         /* piece -> id */
    int32_t n_ids;        /* 1 + largest id */
    size_t ids_cap;
    int32_t *piece_entry; /* per id: index into vocab's entries, or -1 */
    uint8_t *flags;       /* per id: F_* */
    size_t *dec_off;      /* per id: the decoded bytes in dec */
    uint32_t *dec_len;
    char *dec;
    size_t dec_n, dec_cap;
    int32_t byte_id[256];
    pairmap merges;
    int32_t *merge_a, *merge_b; /* in rank order */
    size_t n_merges, merges_cap;
    added_token *added;   /* sorted by length, longest first */
    int n_added;
    uint8_t added_first[256]; /* bit p: some added token of pass p starts with this byte */
    int add_prefix_space, ignore_merges;
    int missing_bytes; /* some byte has no token (byte_id -1): such bytes are dropped when encoding */
    int split_digits; /* each \p{N} code point is its own pre-token first (SmolLM2: Digits(individual_digits)) */
    /* encode scratch and cache */
    strmap cache;         /* pre-token bytes -> offset * 256 + count in cache_ids */
    int32_t *cache_ids;
    size_t cache_n, cache_cap;
    int32_t *sym, *prev, *next;
    size_t sym_cap;
    heap_item *heap;
    size_t heap_cap;
    char *buf;            /* prefix-space and piece building */
    size_t buf_cap;
};

static ttt_tokenizer *tok_new(void) {
    ttt_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    byte_map_init(&t->bm);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    if (pm_init(&t->merges, 1024)) {
        free(t);
        return NULL;
    }
    return t;
}

void ttt_tokenizer_free(ttt_tokenizer *t) {
    if (!t) return;
    sm_free(&t->vocab);
    sm_free(&t->cache);
    free(t->piece_entry);
    free(t->flags);
    free(t->dec_off);
    free(t->dec_len);
    free(t->dec);
    free(t->merges.s);
    free(t->merge_a);
    free(t->merge_b);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->cache_ids);
    free(t->sym);
    free(t->prev);
    free(t->next);
    free(t->heap);
    free(t->buf);
    free(t);
}

void ttt_token_ids_free(ttt_token_ids *ids) {
    if (!ids) return;
    free(ids->ids);
    memset(ids, 0, sizeof *ids);
}

static int ids_push(ttt_token_ids *o, int32_t id) {
    if (o->n == o->cap && ttt__grow((void **)&o->ids, &o->cap, o->n + 1, sizeof *o->ids)) return TTT_ERR;
    o->ids[o->n++] = id;
    return TTT_OK;
}

static int ensure_ids(ttt_tokenizer *t, size_t n) {
    if (n <= t->ids_cap) return TTT_OK;
    size_t c = t->ids_cap ? t->ids_cap : 512;
    while (c < n) c *= 2;
    int32_t *pe = realloc(t->piece_entry, c * sizeof *pe);
    if (pe) t->piece_entry = pe;
    uint8_t *fl = realloc(t->flags, c);
    if (fl) t->flags = fl;
    size_t *off = realloc(t->dec_off, c * sizeof *off);
    if (off) t->dec_off = off;
    uint32_t *len = realloc(t->dec_len, c * sizeof *len);
    if (len) t->dec_len = len;
    if (!pe || !fl || !off || !len) return TTT_ERR;
    for (size_t i = t->ids_cap; i < c; i++) {
        pe[i] = -1;
        fl[i] = 0;
        off[i] = 0;
        len[i] = 0;
    }
    t->ids_cap = c;
    return TTT_OK;
}

/* The bytes a piece stands for: each code point through the inverse byte
 * map, or the piece's own UTF-8 bytes when some code point is not in the map
 * (what the tokenizers library's ByteLevel decoder does). */
static int decode_piece(const ttt_tokenizer *t, const char *piece, size_t len, char *out, size_t *out_len) {
    const uint8_t *s = (const uint8_t *)piece;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        size_t l;
        uint32_t cp = utf8_at(s, len, i, &l);
        if (cp >= 324 || t->bm.cp_byte[cp] < 0) {
            memcpy(out, piece, len);
            *out_len = len;
            return 0;
        }
        out[k++] = (char)t->bm.cp_byte[cp];
        i += l;
    }
    *out_len = k;
    return 1;
}

/* Adds vocabulary entry PIECE -> ID. */
static int add_piece(ttt_tokenizer *t, const char *piece, size_t len, int32_t id, const char *where, char *err,
                     size_t err_len) {
    if (id < 0)
        return ttt__errbuf(err, err_len, "%s: token \"%.*s\" has a negative id %d", where, (int)(len > 60 ? 60 : len),
                    piece, id);
    if (len == 0) return ttt__errbuf(err, err_len, "%s: empty token (id %d)", where, id);
    uint64_t h = hash_bytes(piece, len);
    if (sm_find(&t->vocab, piece, len, h) >= 0)
        return ttt__errbuf(err, err_len, "%s: token \"%.*s\" appears twice", where, (int)(len > 60 ? 60 : len), piece);
    if (ensure_ids(t, (size_t)id + 1)) return oom(err, err_len, where);
    if (t->piece_entry[id] >= 0) {
        size_t ol = t->vocab.e[t->piece_entry[id]].len;
        return ttt__errbuf(err, err_len, "%s: id %d is used by both \"%.*s\" and \"%.*s\"", where, id,
                    (int)(ol > 60 ? 60 : ol), sm_key(&t->vocab, (size_t)t->piece_entry[id]),
                    (int)(len > 60 ? 60 : len), piece);
    }
    int64_t e = sm_add(&t->vocab, piece, len, h, id);
    if (e < 0 || ttt__grow((void **)&t->dec, &t->dec_cap, t->dec_n + len, 1)) return oom(err, err_len, where);
    size_t dl;
    decode_piece(t, piece, len, t->dec + t->dec_n, &dl);
    t->piece_entry[id] = (int32_t)e;
    t->flags[id] = F_PRESENT;
    t->dec_off[id] = t->dec_n;
    t->dec_len[id] = (uint32_t)dl;
    t->dec_n += dl;
    if (id >= t->n_ids) t->n_ids = id + 1;
    return TTT_OK;
}

/* After the vocabulary: the 256 single-byte pieces must all be there, unless
 * allow_missing (GGUF vocabularies such as SmolLM2's lack a few control bytes:
 * like the tokenizers library without an unknown token, encoding drops them). */
static int finish_vocab_ex(ttt_tokenizer *t, int allow_missing, const char *where, char *err, size_t err_len) {
    for (int b = 0; b < 256; b++) {
        int64_t e = sm_find(&t->vocab, t->bm.piece[b], t->bm.piece_len[b],
                            hash_bytes(t->bm.piece[b], t->bm.piece_len[b]));
        if (e < 0 && allow_missing) {
            t->byte_id[b] = -1;
            t->missing_bytes = 1;
            continue;
        }
        if (e < 0)
            return ttt__errbuf(err, err_len,
                        "%s: the vocabulary has no token for byte 0x%02x (piece \"%.*s\"); byte-level BPE needs "
                        "all 256",
                        where, b, (int)t->bm.piece_len[b], (const char *)t->bm.piece[b]);
        t->byte_id[b] = (int32_t)t->vocab.e[e].val;
    }
    return TTT_OK;
}

static int finish_vocab(ttt_tokenizer *t, const char *where, char *err, size_t err_len) {
    return finish_vocab_ex(t, 0, where, err, err_len);
}

/* Appends merge LEFT + RIGHT (pieces) at the next rank. With add_result the
 * concatenation joins the vocabulary (next id) when absent; otherwise it
 * must be there. */
static int add_merge(ttt_tokenizer *t, const char *l, size_t ll, const char *r, size_t rl, int add_result,
                     const char *where, char *err, size_t err_len) {
    int64_t ea = sm_find(&t->vocab, l, ll, hash_bytes(l, ll));
    int64_t eb = sm_find(&t->vocab, r, rl, hash_bytes(r, rl));
    if (ea < 0 || eb < 0)
        return ttt__errbuf(err, err_len, "%s: merge %zu (\"%.*s\" \"%.*s\"): \"%.*s\" is not in the vocabulary", where,
                    t->n_merges + 1, (int)ll, l, (int)rl, r, ea < 0 ? (int)ll : (int)rl, ea < 0 ? l : r);
    if (ttt__grow((void **)&t->buf, &t->buf_cap, ll + rl, 1)) return oom(err, err_len, where);
    memcpy(t->buf, l, ll);
    memcpy(t->buf + ll, r, rl);
    int64_t ec = sm_find(&t->vocab, t->buf, ll + rl, hash_bytes(t->buf, ll + rl));
    int32_t id;
    if (ec >= 0) id = (int32_t)t->vocab.e[ec].val;
    else if (!add_result)
        return ttt__errbuf(err, err_len, "%s: merge %zu (\"%.*s\" \"%.*s\"): the merged token is not in the vocabulary",
                    where, t->n_merges + 1, (int)ll, l, (int)rl, r);
    else {
        if (t->n_ids == INT32_MAX) return ttt__errbuf(err, err_len, "%s: too many tokens", where);
        id = t->n_ids;
        if (add_piece(t, t->buf, ll + rl, id, where, err, err_len)) return TTT_ERR;
    }
    if (t->n_merges >= INT32_MAX) return ttt__errbuf(err, err_len, "%s: too many merges", where);
    size_t cap = t->merges_cap;
    if (ttt__grow((void **)&t->merge_a, &cap, t->n_merges + 1, sizeof *t->merge_a)) return oom(err, err_len, where);
    cap = t->merges_cap;
    if (ttt__grow((void **)&t->merge_b, &cap, t->n_merges + 1, sizeof *t->merge_b)) return oom(err, err_len, where);
    t->merges_cap = cap;
    int32_t a = (int32_t)t->vocab.e[ea].val, b = (int32_t)t->vocab.e[eb].val;
    t->merge_a[t->n_merges] = a;
    t->merge_b[t->n_merges] = b;
    if (pm_put(&t->merges, a, b, (int32_t)t->n_merges, id)) return oom(err, err_len, where);
    t->n_merges++;
    return TTT_OK;
}

static int cmp_added(const void *x, const void *y) {
    const added_token *a = x, *b = y;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Registers an added token (content matched atomically). ID < 0: the piece's
 * id if CONTENT is in the vocabulary, else the next id. */
static int add_added(ttt_tokenizer *t, const char *content, size_t len, int32_t id, int special, int normalized,
                     int32_t *out_id, const char *where, char *err, size_t err_len) {
    if (len == 0) return ttt__errbuf(err, err_len, "%s: an added token is empty", where);
    int64_t e = sm_find(&t->vocab, content, len, hash_bytes(content, len));
    if (id < 0) id = e >= 0 ? (int32_t)t->vocab.e[e].val : t->n_ids;
    if (e >= 0 && t->vocab.e[e].val != id)
        return ttt__errbuf(err, err_len, "%s: added token \"%.*s\" has id %d but the vocabulary gives it id %lld", where,
                    (int)len, content, id, (long long)t->vocab.e[e].val);
    if (e < 0) {
        if (id < t->n_ids && t->piece_entry[id] >= 0)
            return ttt__errbuf(err, err_len, "%s: added token \"%.*s\" has id %d, which is the vocabulary's \"%.*s\"", where,
                        (int)len, content, id, (int)t->vocab.e[t->piece_entry[id]].len,
                        sm_key(&t->vocab, (size_t)t->piece_entry[id]));
        if (add_piece(t, content, len, id, where, err, err_len)) return TTT_ERR;
    }
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id == id) { /* already added: update the flags */
            if (special) t->flags[id] |= F_SPECIAL;
            if (out_id) *out_id = id;
            return TTT_OK;
        }
    added_token *a = realloc(t->added, (size_t)(t->n_added + 1) * sizeof *a);
    if (!a) return oom(err, err_len, where);
    t->added = a;
    char *c = malloc(len + 1);
    if (!c) return oom(err, err_len, where);
    memcpy(c, content, len);
    c[len] = 0;
    t->added[t->n_added++] = (added_token){c, len, id, normalized ? 1 : 0};
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added);
    t->added_first[(uint8_t)content[0]] |= (uint8_t)(1u << (normalized ? 1 : 0));
    t->flags[id] |= F_ADDED | (special ? F_SPECIAL : 0);
    if (out_id) *out_id = id;
    return TTT_OK;
}

int ttt_tokenizer_add_special(ttt_tokenizer *t, const char *content, int32_t *id, char *err, size_t err_len) {
    if (!t || !content) return ttt__errbuf(err, err_len, "tokenizer add_special: NULL argument");
    return add_added(t, content, strlen(content), -1, 1, 0, id, "tokenizer add_special", err, err_len);
}

int ttt_tokenizer_from_merges(const ttt_bpe_merge *merges, size_t n, ttt_tokenizer **out, char *err,
                              size_t err_len) {
    const char *where = "tokenizer from_merges";
    *out = NULL;
    ttt_tokenizer *t = tok_new();
    if (!t) return oom(err, err_len, where);
    /* ids 0..255: bytes in the order of their pieces' code points (GPT-2's) */
    int32_t id = 0;
    for (int cp = 0; cp < 324; cp++) {
        int b = t->bm.cp_byte[cp];
        if (b < 0) continue;
        if (add_piece(t, (const char *)t->bm.piece[b], t->bm.piece_len[b], id++, where, err, err_len)) goto bad;
    }
    if (finish_vocab(t, where, err, err_len)) goto bad;
    char *l = NULL, *r = NULL;
    size_t lcap = 0, rcap = 0;
    for (size_t i = 0; i < n; i++) {
        const ttt_bpe_merge *m = &merges[i];
        if (!m->left_len || !m->right_len) {
            ttt__errbuf(err, err_len, "%s: merge %zu has an empty side", where, i + 1);
            goto bad2;
        }
        if (ttt__grow((void **)&l, &lcap, 2 * m->left_len, 1) || ttt__grow((void **)&r, &rcap, 2 * m->right_len, 1)) {
            oom(err, err_len, where);
            goto bad2;
        }
        size_t ll = 0, rl = 0;
        for (size_t k = 0; k < m->left_len; k++) {
            uint8_t b = ((const uint8_t *)m->left)[k];
            memcpy(l + ll, t->bm.piece[b], t->bm.piece_len[b]);
            ll += t->bm.piece_len[b];
        }
        for (size_t k = 0; k < m->right_len; k++) {
            uint8_t b = ((const uint8_t *)m->right)[k];
            memcpy(r + rl, t->bm.piece[b], t->bm.piece_len[b]);
            rl += t->bm.piece_len[b];
        }
        if (add_merge(t, l, ll, r, rl, 1, where, err, err_len)) goto bad2;
    }
    free(l);
    free(r);
    *out = t;
    return TTT_OK;
bad2:
    free(l);
    free(r);
bad:
    ttt_tokenizer_free(t);
    return TTT_ERR;
}

/* ---- queries ------------------------------------------------------------------------ */

int32_t ttt_tokenizer_vocab_size(const ttt_tokenizer *t) { return t ? t->n_ids : 0; }
size_t ttt_tokenizer_merge_count(const ttt_tokenizer *t) { return t ? t->n_merges : 0; }

const char *ttt_tokenizer_piece(const ttt_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_ids || t->piece_entry[id] < 0) return NULL;
    if (len) *len = t->vocab.e[t->piece_entry[id]].len;
    return sm_key(&t->vocab, (size_t)t->piece_entry[id]);
}

int32_t ttt_tokenizer_piece_id(const ttt_tokenizer *t, const char *piece, size_t len) {
    if (!t || !piece) return -1;
    int64_t e = sm_find(&t->vocab, piece, len, hash_bytes(piece, len));
    return e < 0 ? -1 : (int32_t)t->vocab.e[e].val;
}

int ttt_tokenizer_is_special(const ttt_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_ids && (t->flags[id] & F_SPECIAL);
}

/* ---- encoding -------------------------------------------------------------------------- */

static int heap_less(heap_item a, heap_item b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(heap_item *h, size_t *n, heap_item x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(x, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static heap_item heap_pop(heap_item *h, size_t *n) {
    heap_item top = h[0], x = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = x;
    return top;
}

/* BPE over one pre-token w[0..n): one symbol per byte, then merges by rank,
 * leftmost first among equal ranks (a min-heap of (rank, position) with stale
 * entries skipped, as in the tokenizers library). Appends the ids. */
static int bpe_word(ttt_tokenizer *t, const uint8_t *w, size_t n, ttt_token_ids *out) {
    if (t->missing_bytes) { /* drop the bytes without a token; their neighbours become adjacent */
        size_t k = 0;
        while (k < n && t->byte_id[w[k]] >= 0) k++;
        if (k < n) {
            uint8_t *f = malloc(n);
            if (!f) return TTT_ERR;
            size_t m = 0;
            for (size_t i = 0; i < n; i++)
                if (t->byte_id[w[i]] >= 0) f[m++] = w[i];
            const int rc = m ? bpe_word(t, f, m, out) : TTT_OK;
            free(f);
            return rc;
        }
    }
    if (n == 1) return ids_push(out, t->byte_id[w[0]]);
    uint64_t h = 0;
    if (n <= CACHE_MAX_WORD) {
        h = hash_bytes(w, n);
        int64_t e = sm_find(&t->cache, w, n, h);
        if (e >= 0) {
            int64_t v = t->cache.e[e].val;
            size_t off = (size_t)(v >> 8), cnt = (size_t)(v & 255);
            if (out->n + cnt > out->cap && ttt__grow((void **)&out->ids, &out->cap, out->n + cnt, sizeof *out->ids))
                return TTT_ERR;
            memcpy(out->ids + out->n, t->cache_ids + off, cnt * sizeof *out->ids);
            out->n += cnt;
            return TTT_OK;
        }
    }
    size_t start = out->n;
    if (t->ignore_merges) { /* the whole pre-token, if it is a token */
        size_t pl = 0;
        if (ttt__grow((void **)&t->buf, &t->buf_cap, 2 * n, 1)) return TTT_ERR;
        for (size_t i = 0; i < n; i++) {
            memcpy(t->buf + pl, t->bm.piece[w[i]], t->bm.piece_len[w[i]]);
            pl += t->bm.piece_len[w[i]];
        }
        int64_t e = sm_find(&t->vocab, t->buf, pl, hash_bytes(t->buf, pl));
        if (e >= 0) {
            if (ids_push(out, (int32_t)t->vocab.e[e].val)) return TTT_ERR;
            goto cache;
        }
    }
    if (n > t->sym_cap) {
        size_t c = t->sym_cap;
        if (ttt__grow((void **)&t->sym, &c, n, sizeof *t->sym)) return TTT_ERR;
        c = t->sym_cap;
        if (ttt__grow((void **)&t->prev, &c, n, sizeof *t->prev)) return TTT_ERR;
        c = t->sym_cap;
        if (ttt__grow((void **)&t->next, &c, n, sizeof *t->next)) return TTT_ERR;
        t->sym_cap = c;
    }
    if (ttt__grow((void **)&t->heap, &t->heap_cap, 2 * n, sizeof *t->heap)) return TTT_ERR;
    int32_t *sym = t->sym, *prev = t->prev, *next = t->next;
    heap_item *heap = t->heap;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[w[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const pm_slot *m = pm_find(&t->merges, sym[i], sym[i + 1]);
        if (m) heap_push(heap, &hn, (heap_item){m->rank, (int32_t)i, m->id});
    }
    /* removed symbols get sym = -1; each merge removes one symbol and pushes at
     * most two entries, so the heap never holds more than 2n. */
    while (hn) {
        heap_item top = heap_pop(heap, &hn);
        int32_t p = top.pos;
        if (sym[p] < 0 || next[p] < 0) continue;
        int32_t q = next[p];
        const pm_slot *m = pm_find(&t->merges, sym[p], sym[q]);
        if (!m || m->id != top.id) continue;
        sym[p] = top.id;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        if (prev[p] >= 0 && (m = pm_find(&t->merges, sym[prev[p]], sym[p])))
            heap_push(heap, &hn, (heap_item){m->rank, prev[p], m->id});
        if (next[p] >= 0 && (m = pm_find(&t->merges, sym[p], sym[next[p]])))
            heap_push(heap, &hn, (heap_item){m->rank, p, m->id});
    }
    for (int32_t i = 0; i >= 0; i = next[i])
        if (ids_push(out, sym[i])) return TTT_ERR;
cache:
    if (n <= CACHE_MAX_WORD) {
        size_t cnt = out->n - start;
        if (t->cache.n >= CACHE_MAX_ENTRIES) {
            sm_clear(&t->cache);
            t->cache_n = 0;
        }
        if (ttt__grow((void **)&t->cache_ids, &t->cache_cap, t->cache_n + cnt, sizeof *t->cache_ids)) return TTT_ERR;
        memcpy(t->cache_ids + t->cache_n, out->ids + start, cnt * sizeof *out->ids);
        if (sm_add(&t->cache, w, n, h, (int64_t)t->cache_n << 8 | (int64_t)cnt) < 0) return TTT_ERR;
        t->cache_n += cnt;
    }
    return TTT_OK;
}

/* GPT-2 pre-tokens of s[0..n), each through BPE. */
static int encode_gpt2_run(ttt_tokenizer *t, const char *s, size_t n, ttt_token_ids *out) {
    for (size_t i = 0; i < n;) {
        size_t e = ttt_gpt2_pretoken_end(s, n, i);
        if (bpe_word(t, (const uint8_t *)s + i, e - i, out)) return TTT_ERR;
        i = e;
    }
    return TTT_OK;
}

/* A segment without added tokens: (prefix space,) pre-tokens, BPE. */
static int encode_plain(ttt_tokenizer *t, const char *s, size_t n, ttt_token_ids *out) {
    if (n == 0) return TTT_OK;
    if (t->split_digits) { /* every number character alone, the runs between them as GPT-2 pre-tokens */
        const uint8_t *u = (const uint8_t *)s;
        size_t run = 0;
        for (size_t i = 0; i < n;) {
            size_t len;
            if (class_at(u, n, i, &len) != U_N) {
                i += len;
                continue;
            }
            if (encode_gpt2_run(t, s + run, i - run, out) || bpe_word(t, u + i, len, out)) return TTT_ERR;
            i += len;
            run = i;
        }
        return encode_gpt2_run(t, s + run, n - run, out);
    }
    if (t->add_prefix_space && s[0] != ' ') {
        if (ttt__grow((void **)&t->buf, &t->buf_cap, n + 1, 1)) return TTT_ERR;
        char *b = t->buf;  /* bpe_word may use t->buf only under ignore_merges: copy out */
        if (t->ignore_merges) {
            b = malloc(n + 1);
            if (!b) return TTT_ERR;
        }
        b[0] = ' ';
        memcpy(b + 1, s, n);
        int rc = TTT_OK;
        for (size_t i = 0; i < n + 1 && rc == TTT_OK;) {
            size_t e = ttt_gpt2_pretoken_end(b, n + 1, i);
            rc = bpe_word(t, (const uint8_t *)b + i, e - i, out);
            i = e;
        }
        if (b != t->buf) free(b);
        return rc;
    }
    for (size_t i = 0; i < n;) {
        size_t e = ttt_gpt2_pretoken_end(s, n, i);
        if (bpe_word(t, (const uint8_t *)s + i, e - i, out)) return TTT_ERR;
        i = e;
    }
    return TTT_OK;
}

/* Cuts the added tokens of one pass (0: not normalized, 1: normalized) out of
 * s[0..n), leftmost-longest, and encodes the gaps with the next pass. */
static int encode_pass(ttt_tokenizer *t, const char *s, size_t n, int pass, ttt_token_ids *out) {
    size_t gap = 0;
    uint8_t bit = (uint8_t)(1u << pass);
    for (size_t i = 0; i < n;) {
        if (!(t->added_first[(uint8_t)s[i]] & bit)) {
            i++;
            continue;
        }
        const added_token *hit = NULL;
        for (int k = 0; k < t->n_added && !hit; k++) {
            const added_token *a = &t->added[k];
            if (a->normalized == pass && a->len <= n - i && !memcmp(s + i, a->content, a->len)) hit = a;
        }
        if (!hit) {
            i++;
            continue;
        }
        if (pass == 0 ? encode_pass(t, s + gap, i - gap, 1, out) : encode_plain(t, s + gap, i - gap, out))
            return TTT_ERR;
        if (ids_push(out, hit->id)) return TTT_ERR;
        i += hit->len;
        gap = i;
    }
    return pass == 0 ? encode_pass(t, s + gap, n - gap, 1, out) : encode_plain(t, s + gap, n - gap, out);
}

int ttt_tokenizer_encode(ttt_tokenizer *t, const char *text, size_t len, ttt_token_ids *out, char *err,
                         size_t err_len) {
    if (!t || !out || (!text && len)) return ttt__errbuf(err, err_len, "tokenizer encode: NULL argument");
    size_t n0 = out->n;
    int rc = t->n_added ? encode_pass(t, text, len, 0, out) : encode_plain(t, text, len, out);
    if (rc) {
        out->n = n0;
        return oom(err, err_len, "tokenizer encode");
    }
    return TTT_OK;
}

/* ---- decoding ---------------------------------------------------------------------------- */

int ttt_tokenizer_decode(const ttt_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **text,
                         size_t *len, char *err, size_t err_len) {
    *text = NULL;
    if (len) *len = 0;
    if (!t || (!ids && n)) return ttt__errbuf(err, err_len, "tokenizer decode: NULL argument");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->flags[id] & F_PRESENT))
            return ttt__errbuf(err, err_len, "tokenizer decode: ids[%zu] = %d is not in the vocabulary (ids 0..%d)", i, id,
                        t->n_ids - 1);
        if (!(skip_special && (t->flags[id] & F_SPECIAL))) total += t->dec_len[id];
    }
    char *s = malloc(total + 1);
    if (!s) return oom(err, err_len, "tokenizer decode");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && (t->flags[id] & F_SPECIAL)) continue;
        memcpy(s + k, t->dec + t->dec_off[id], t->dec_len[id]);
        k += t->dec_len[id];
    }
    s[k] = 0;
    *text = s;
    if (len) *len = k;
    return TTT_OK;
}

/* ---- GGUF metadata (tokenizer.ggml.*) ------------------------------------------------------ */

int ttt_tokenizer_load_gguf(const ttt_gguf *g, ttt_tokenizer **out, char *err, size_t err_len) {
    if (!out || !g) return ttt__errbuf(err, err_len, "tokenizer load_gguf: NULL argument");
    *out = NULL;
    const char *where = g->path, *s;
    size_t sl;
    if (ttt_gguf_get_str(g, "tokenizer.ggml.model", &s, &sl, err, err_len)) return TTT_ERR;
    if (sl != 4 || memcmp(s, "gpt2", 4))
        return ttt__errbuf(err, err_len, "%s: tokenizer.ggml.model \"%.*s\" is not supported (only gpt2: byte-level "
                           "BPE)", where, (int)(sl > 40 ? 40 : sl), s);
    int split_digits = 0;
    if (ttt_gguf_find(g, "tokenizer.ggml.pre")) {
        if (ttt_gguf_get_str(g, "tokenizer.ggml.pre", &s, &sl, err, err_len)) return TTT_ERR;
        if (sl == 6 && !memcmp(s, "smollm", 6)) split_digits = 1;
        else if (!((sl == 7 && !memcmp(s, "default", 7)) || (sl == 5 && !memcmp(s, "gpt-2", 5)) ||
                   (sl == 4 && !memcmp(s, "gpt2", 4))))
            return ttt__errbuf(err, err_len, "%s: tokenizer.ggml.pre \"%.*s\" is not supported (smollm, gpt-2 or "
                               "default: GPT-2's pre-tokenizer, with digits split for smollm)", where,
                               (int)(sl > 40 ? 40 : sl), s);
    }
    const ttt_gguf_kv *toks = ttt_gguf_find(g, "tokenizer.ggml.tokens"), *merges = ttt_gguf_find(g, "tokenizer.ggml.merges");
    const ttt_gguf_kv *types = ttt_gguf_find(g, "tokenizer.ggml.token_type");
    if (!toks || toks->type != TTT_GGUF_ARRAY || toks->elem_type != TTT_GGUF_STRING || toks->n < 256 ||
        toks->n > INT32_MAX / 2)
        return ttt__errbuf(err, err_len, "%s: tokenizer.ggml.tokens must be an array of 256 to 2^30 strings", where);
    if (!merges || merges->type != TTT_GGUF_ARRAY || merges->elem_type != TTT_GGUF_STRING)
        return ttt__errbuf(err, err_len, "%s: tokenizer.ggml.merges must be an array of strings", where);
    if (types && (types->type != TTT_GGUF_ARRAY || types->elem_type == TTT_GGUF_STRING || types->n != toks->n))
        return ttt__errbuf(err, err_len, "%s: tokenizer.ggml.token_type must be a numeric array, one per token", where);
    ttt_tokenizer *t = tok_new();
    if (!t) return oom(err, err_len, where);
    t->split_digits = split_digits;
    int64_t aps = 0;
    if (ttt_gguf_find(g, "tokenizer.ggml.add_space_prefix") &&
        ttt_gguf_get_int(g, "tokenizer.ggml.add_space_prefix", &aps, err, err_len))
        goto bad;
    if (aps && split_digits) {
        ttt__errbuf(err, err_len, "%s: add_space_prefix with the smollm pre-tokenizer is not supported", where);
        goto bad;
    }
    t->add_prefix_space = aps ? 1 : 0;
    /* ordinary tokens first (control and user-defined ones become added tokens below) */
    for (uint64_t i = 0; i < toks->n; i++) {
        const int64_t ty = types ? ttt_gguf_arr_int(types, i) : 1;
        if (ty == 3 || ty == 4) continue;
        size_t len;
        const char *p = ttt_gguf_arr_str(toks, i, &len);
        if (add_piece(t, p, len, (int32_t)i, where, err, err_len)) goto bad;
    }
    if (finish_vocab_ex(t, 1, where, err, err_len)) goto bad;
    for (uint64_t i = 0; i < merges->n; i++) {
        size_t n;
        const char *m = ttt_gguf_arr_str(merges, i, &n), *sp = memchr(m, ' ', n);
        if (!sp || sp == m || sp == m + n - 1 || memchr(sp + 1, ' ', (size_t)(m + n - sp - 1))) {
            ttt__errbuf(err, err_len, "%s: tokenizer.ggml.merges[%llu] is not \"left right\": %.*s", where,
                        (unsigned long long)i, (int)(n > 60 ? 60 : n), m);
            goto bad;
        }
        if (add_merge(t, m, (size_t)(sp - m), sp + 1, (size_t)(m + n - sp - 1), 0, where, err, err_len)) goto bad;
    }
    for (uint64_t i = 0; types && i < toks->n; i++) {
        const int64_t ty = ttt_gguf_arr_int(types, i);
        if (ty != 3 && ty != 4) continue;
        size_t len;
        const char *p = ttt_gguf_arr_str(toks, i, &len);
        if (add_added(t, p, len, (int32_t)i, ty == 3, 0, NULL, where, err, err_len)) goto bad;
    }
    *out = t;
    return TTT_OK;
bad:
    ttt_tokenizer_free(t);
    return TTT_ERR;
}

/* ---- files (JSON and GPT-2 formats need json-c) ------------------------------------------- */

#ifdef TTT_HAVE_JSONC

/* Reads a whole file into a malloc'd NUL-terminated buffer. */
static int read_file(const char *path, char **data, size_t *len, char *err, size_t err_len) {
    return ttt_read_file(path, data, len, err, err_len);
}

static int parse_json(const char *path, json_object **out, char *err, size_t err_len) {
    char *data;
    size_t len = 0;
    *out = NULL;
    if (read_file(path, &data, &len, err, err_len)) return TTT_ERR;
    if (len > INT32_MAX) {
        free(data);
        return ttt__errbuf(err, err_len, "%s: too large for the JSON parser (%zu bytes)", path, len);
    }
    json_tokener *tk = json_tokener_new();
    if (!tk) {
        free(data);
        return oom(err, err_len, path);
    }
    json_object *o = json_tokener_parse_ex(tk, data, (int)len);
    enum json_tokener_error je = json_tokener_get_error(tk);
    size_t end = json_tokener_get_parse_end(tk);
    json_tokener_free(tk);
    if (!o || je != json_tokener_success) {
        json_object_put(o);
        free(data);
        return ttt__errbuf(err, err_len, "%s: invalid JSON near byte %zu: %s", path, end,
                    je == json_tokener_continue ? "unexpected end of file" : json_tokener_error_desc(je));
    }
    for (size_t i = end; i < len; i++)
        if (!strchr(" \t\r\n", data[i])) {
            json_object_put(o);
            free(data);
            return ttt__errbuf(err, err_len, "%s: invalid JSON: extra data at byte %zu", path, i);
        }
    free(data);
    *out = o;
    return TTT_OK;
}

/* Adds every "piece": id of a JSON object to the vocabulary. */
static int load_vocab_object(ttt_tokenizer *t, json_object *v, const char *where, char *err, size_t err_len) {
    if (!json_object_is_type(v, json_type_object))
        return ttt__errbuf(err, err_len, "%s: the vocabulary is not a JSON object", where);
    int n = json_object_object_length(v);
    /* ids may come in any order; a far-out id would make the per-id tables huge */
    json_object_object_foreach(v, key, val) {
        if (!json_object_is_type(val, json_type_int))
            return ttt__errbuf(err, err_len, "%s: token \"%s\": id is not an integer", where, key);
        int64_t id = json_object_get_int64(val);
        if (id < 0 || id > (int64_t)n * 4 + 4096)
            return ttt__errbuf(err, err_len, "%s: token \"%s\": id %lld is out of range for %d tokens", where, key,
                        (long long)id, n);
        if (add_piece(t, key, strlen(key), (int32_t)id, where, err, err_len)) return TTT_ERR;
    }
    return TTT_OK;
}

int ttt_tokenizer_load_gpt2(const char *vocab_json, const char *merges_txt, ttt_tokenizer **out, char *err,
                            size_t err_len) {
    *out = NULL;
    json_object *root;
    if (parse_json(vocab_json, &root, err, err_len)) return TTT_ERR;
    ttt_tokenizer *t = tok_new();
    char *m = NULL;
    size_t mlen = 0;
    if (!t) {
        json_object_put(root);
        return oom(err, err_len, vocab_json);
    }
    int rc = load_vocab_object(t, root, vocab_json, err, err_len);
    json_object_put(root);
    if (rc || finish_vocab(t, vocab_json, err, err_len) || read_file(merges_txt, &m, &mlen, err, err_len)) goto bad;
    size_t line = 0;
    for (char *p = m, *end = m + mlen; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        line++;
        size_t n = (size_t)(e - p);
        if (n && p[n - 1] == '\r') n--;
        if (n == 0 || (line == 1 && n >= 8 && !memcmp(p, "#version", 8))) {
            p = e + 1;
            continue;
        }
        char *sp = memchr(p, ' ', n);
        if (!sp || sp == p || sp == p + n - 1 || memchr(sp + 1, ' ', (size_t)(p + n - sp - 1))) {
            ttt__errbuf(err, err_len, "%s:%zu: expected \"left right\" (two pieces and one space), got \"%.*s\"", merges_txt,
                 line, (int)(n > 80 ? 80 : n), p);
            goto bad;
        }
        if (add_merge(t, p, (size_t)(sp - p), sp + 1, (size_t)(p + n - sp - 1), 0, merges_txt, err, err_len)) goto bad;
        p = e + 1;
    }
    free(m);
    *out = t;
    return TTT_OK;
bad:
    free(m);
    ttt_tokenizer_free(t);
    return TTT_ERR;
}

/* "null", or the "type" of an object, for messages. */
static const char *json_type_name(json_object *o) {
    json_object *ty;
    if (!o) return "null";
    if (json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, "type", &ty) &&
        json_object_is_type(ty, json_type_string))
        return json_object_get_string(ty);
    return json_type_to_name(json_object_get_type(o));
}

static int is_null(json_object *o) { return !o || json_object_is_type(o, json_type_null); }

static json_object *get(json_object *o, const char *key) {
    json_object *v = NULL;
    if (o && json_object_is_type(o, json_type_object)) json_object_object_get_ex(o, key, &v);
    return v;
}

/* Optional boolean field; def when absent or null. -1 if it is not a boolean. */
static int get_bool(json_object *o, const char *key, int def) {
    json_object *v = get(o, key);
    if (is_null(v)) return def;
    if (!json_object_is_type(v, json_type_boolean)) return -1;
    return json_object_get_boolean(v) ? 1 : 0;
}

static int is_type(json_object *o, const char *type) {
    json_object *ty = get(o, "type");
    return ty && json_object_is_type(ty, json_type_string) && !strcmp(json_object_get_string(ty), type);
}

static int check_tokenizer_json(json_object *root, const char *path, int *add_prefix_space, int *split_digits,
                                char *err, size_t err_len) {
    if (!json_object_is_type(root, json_type_object)) return ttt__errbuf(err, err_len, "%s: not a JSON object", path);
    if (!is_null(get(root, "truncation")))
        return ttt__errbuf(err, err_len, "%s: unsupported: truncation is set (ttt encodes whole texts)", path);
    if (!is_null(get(root, "padding")))
        return ttt__errbuf(err, err_len, "%s: unsupported: padding is set (ttt encodes one text at a time)", path);
    json_object *nz = get(root, "normalizer");
    if (!is_null(nz))
        return ttt__errbuf(err, err_len, "%s: unsupported normalizer \"%s\" (only null, as in GPT-2)", path,
                    json_type_name(nz));
    json_object *pt = get(root, "pre_tokenizer");
    *split_digits = 0;
    if (pt && is_type(pt, "Sequence")) { /* SmolLM2's: Digits(individual_digits) then ByteLevel */
        json_object *seq = get(pt, "pretokenizers");
        json_object *d = seq && json_object_is_type(seq, json_type_array) && json_object_array_length(seq) == 2
                             ? json_object_array_get_idx(seq, 0) : NULL;
        if (!d || !is_type(d, "Digits") || get_bool(d, "individual_digits", 0) != 1)
            return ttt__errbuf(err, err_len, "%s: unsupported pre_tokenizer \"Sequence\" (of a Sequence, only [Digits "
                               "with individual_digits true, ByteLevel])", path);
        *split_digits = 1;
        pt = json_object_array_get_idx(seq, 1);
    }
    if (!pt || !is_type(pt, "ByteLevel"))
        return ttt__errbuf(err, err_len, "%s: unsupported pre_tokenizer \"%s\" (only ByteLevel, GPT-2's, or "
                           "[Digits, ByteLevel])", path, json_type_name(pt));
    int ur = get_bool(pt, "use_regex", 1), aps = get_bool(pt, "add_prefix_space", 1);
    if (ur != 1)
        return ttt__errbuf(err, err_len, "%s: unsupported: ByteLevel pre_tokenizer with use_regex %s (only true)", path,
                    ur == 0 ? "false" : "not a boolean");
    if (aps < 0) return ttt__errbuf(err, err_len, "%s: pre_tokenizer add_prefix_space is not a boolean", path);
    *add_prefix_space = aps;
    if (aps && *split_digits)
        return ttt__errbuf(err, err_len, "%s: unsupported: Digits with a ByteLevel add_prefix_space true", path);
    json_object *pp = get(root, "post_processor");
    if (!is_null(pp) && !is_type(pp, "ByteLevel"))
        return ttt__errbuf(err, err_len, "%s: unsupported post_processor \"%s\" (only null or ByteLevel)", path,
                    json_type_name(pp));
    json_object *dec = get(root, "decoder");
    if (!is_null(dec) && !is_type(dec, "ByteLevel"))
        return ttt__errbuf(err, err_len, "%s: unsupported decoder \"%s\" (only null or ByteLevel)", path,
                    json_type_name(dec));
    json_object *model = get(root, "model");
    if (!model || !json_object_is_type(model, json_type_object))
        return ttt__errbuf(err, err_len, "%s: no \"model\" object", path);
    json_object *ty = get(model, "type");
    if (ty && !is_type(model, "BPE"))
        return ttt__errbuf(err, err_len, "%s: unsupported model type \"%s\" (only BPE)", path, json_type_name(model));
    if (!get(model, "vocab") || !get(model, "merges"))
        return ttt__errbuf(err, err_len, "%s: the model has no \"vocab\" and \"merges\" (not a BPE model)", path);
    json_object *dr = get(model, "dropout");
    if (!is_null(dr) && !((json_object_is_type(dr, json_type_double) || json_object_is_type(dr, json_type_int)) &&
                          json_object_get_double(dr) == 0.0))
        return ttt__errbuf(err, err_len, "%s: unsupported: BPE dropout %s (encoding would be random)", path,
                    json_object_get_string(dr));
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        json_object *a = get(model, affix[i]);
        if (!is_null(a) && !(json_object_is_type(a, json_type_string) && !*json_object_get_string(a)))
            return ttt__errbuf(err, err_len, "%s: unsupported: BPE %s \"%s\" (only null)", path, affix[i],
                        json_object_get_string(a));
    }
    if (get_bool(model, "byte_fallback", 0) != 0)
        return ttt__errbuf(err, err_len, "%s: unsupported: BPE byte_fallback true (only false)", path);
    return TTT_OK;
}

int ttt_tokenizer_load_json(const char *path, ttt_tokenizer **out, char *err, size_t err_len) {
    *out = NULL;
    json_object *root;
    if (parse_json(path, &root, err, err_len)) return TTT_ERR;
    ttt_tokenizer *t = tok_new();
    if (!t) {
        json_object_put(root);
        return oom(err, err_len, path);
    }
    int aps = 0, digits = 0;
    if (check_tokenizer_json(root, path, &aps, &digits, err, err_len)) goto bad;
    t->add_prefix_space = aps;
    t->split_digits = digits;
    json_object *model = get(root, "model");
    int im = get_bool(model, "ignore_merges", 0);
    if (im < 0) {
        ttt__errbuf(err, err_len, "%s: model ignore_merges is not a boolean", path);
        goto bad;
    }
    t->ignore_merges = im;
    if (load_vocab_object(t, get(model, "vocab"), path, err, err_len) || finish_vocab_ex(t, 1, path, err, err_len))
        goto bad;
    json_object *merges = get(model, "merges");
    if (!json_object_is_type(merges, json_type_array)) {
        ttt__errbuf(err, err_len, "%s: model merges is not an array", path);
        goto bad;
    }
    size_t nm = json_object_array_length(merges);
    for (size_t i = 0; i < nm; i++) {
        json_object *m = json_object_array_get_idx(merges, i);
        const char *l = NULL, *r = NULL;
        size_t ll = 0, rl = 0;
        if (json_object_is_type(m, json_type_string)) { /* "left right" */
            const char *s = json_object_get_string(m);
            size_t n = (size_t)json_object_get_string_len(m);
            const char *sp = memchr(s, ' ', n);
            if (sp && sp != s && sp != s + n - 1 && !memchr(sp + 1, ' ', (size_t)(s + n - sp - 1))) {
                l = s, ll = (size_t)(sp - s), r = sp + 1, rl = (size_t)(s + n - sp - 1);
            }
        } else if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2) { /* ["l", "r"] */
            json_object *a = json_object_array_get_idx(m, 0), *b = json_object_array_get_idx(m, 1);
            if (json_object_is_type(a, json_type_string) && json_object_is_type(b, json_type_string)) {
                l = json_object_get_string(a), ll = (size_t)json_object_get_string_len(a);
                r = json_object_get_string(b), rl = (size_t)json_object_get_string_len(b);
            }
        }
        if (!l || !ll || !rl) {
            ttt__errbuf(err, err_len, "%s: merges[%zu] is neither \"left right\" nor [\"left\", \"right\"]: %.80s", path, i,
                 json_object_to_json_string(m));
            goto bad;
        }
        if (add_merge(t, l, ll, r, rl, 0, path, err, err_len)) goto bad;
    }
    json_object *added = get(root, "added_tokens");
    if (!is_null(added) && !json_object_is_type(added, json_type_array)) {
        ttt__errbuf(err, err_len, "%s: added_tokens is not an array", path);
        goto bad;
    }
    size_t na = is_null(added) ? 0 : json_object_array_length(added);
    for (size_t i = 0; i < na; i++) {
        json_object *a = json_object_array_get_idx(added, i);
        json_object *id = get(a, "id"), *content = get(a, "content");
        if (!id || !json_object_is_type(id, json_type_int) || !content ||
            !json_object_is_type(content, json_type_string)) {
            ttt__errbuf(err, err_len, "%s: added_tokens[%zu] needs an integer \"id\" and a string \"content\"", path, i);
            goto bad;
        }
        const char *c = json_object_get_string(content);
        const char *flags[] = {"single_word", "lstrip", "rstrip"};
        for (int k = 0; k < 3; k++)
            if (get_bool(a, flags[k], 0) != 0) {
                ttt__errbuf(err, err_len, "%s: added token \"%s\": unsupported %s true (only false)", path, c, flags[k]);
                goto bad;
            }
        int special = get_bool(a, "special", 0), normalized = get_bool(a, "normalized", 1);
        int64_t idv = json_object_get_int64(id);
        if (special < 0 || normalized < 0 || idv < 0 || idv > (int64_t)t->n_ids + 65536) {
            ttt__errbuf(err, err_len, "%s: added token \"%s\": bad id or flags", path, c);
            goto bad;
        }
        if (add_added(t, c, (size_t)json_object_get_string_len(content), (int32_t)idv, special, normalized, NULL,
                      path, err, err_len))
            goto bad;
    }
    json_object_put(root);
    *out = t;
    return TTT_OK;
bad:
    json_object_put(root);
    ttt_tokenizer_free(t);
    return TTT_ERR;
}

#else /* no json-c */

int ttt_tokenizer_load_gpt2(const char *vocab_json, const char *merges_txt, ttt_tokenizer **out, char *err,
                            size_t err_len) {
    (void)merges_txt;
    *out = NULL;
    return ttt__errbuf(err, err_len, "%s: ttt was built without json-c (install libjson-c-dev and rebuild)", vocab_json);
}

int ttt_tokenizer_load_json(const char *path, ttt_tokenizer **out, char *err, size_t err_len) {
    *out = NULL;
    return ttt__errbuf(err, err_len, "%s: ttt was built without json-c (install libjson-c-dev and rebuild)", path);
}

int ttt_tokenizer_save_gpt2(const ttt_tokenizer *t, const char *dir, char *err, size_t err_len) {
    (void)t;
    return ttt__errbuf(err, err_len, "%s: ttt was built without json-c (install libjson-c-dev and rebuild)", dir);
}

#endif

#ifdef TTT_HAVE_JSONC
/* ---- saving ----------------------------------------------------------------------------- */

static int mkdir_p(const char *dir, char *err, size_t err_len) {
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    if (!p) return oom(err, err_len, dir);
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        if (mkdir(p, 0777) && errno != EEXIST) {
            ttt__errbuf(err, err_len, "cannot create directory %s: %s", p, strerror(errno));
            free(p);
            return TTT_ERR;
        }
        p[i] = c;
    }
    free(p);
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) return ttt__errbuf(err, err_len, "%s is not a directory", dir);
    return TTT_OK;
}

int ttt_tokenizer_save_gpt2(const ttt_tokenizer *t, const char *dir, char *err, size_t err_len) {
    if (!t || !dir) return ttt__errbuf(err, err_len, "tokenizer save: NULL argument");
    if (mkdir_p(dir, err, err_len)) return TTT_ERR;
    json_object *v = json_object_new_object();
    if (!v) return oom(err, err_len, "vocab.json");
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (t->piece_entry[id] < 0) continue;
        json_object *jid = json_object_new_int(id);
        if (!jid || json_object_object_add(v, sm_key(&t->vocab, (size_t)t->piece_entry[id]), jid)) {
            json_object_put(jid);
            json_object_put(v);
            return oom(err, err_len, "vocab.json");
        }
    }
    size_t vlen;
    const char *vs =
        json_object_to_json_string_length(v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &vlen);
    if (!vs) {
        json_object_put(v);
        return oom(err, err_len, "vocab.json");
    }
    size_t cap = 64, n = 0;
    char *m = malloc(cap);
    if (!m) {
        json_object_put(v);
        return oom(err, err_len, "merges.txt");
    }
    n = (size_t)snprintf(m, cap, "#version: 0.2\n");
    for (size_t i = 0; i < t->n_merges; i++) {
        const sm_entry *a = &t->vocab.e[t->piece_entry[t->merge_a[i]]], *b = &t->vocab.e[t->piece_entry[t->merge_b[i]]];
        if (ttt__grow((void **)&m, &cap, n + a->len + b->len + 2, 1)) {
            free(m);
            json_object_put(v);
            return oom(err, err_len, "merges.txt");
        }
        memcpy(m + n, t->vocab.pool + a->off, a->len);
        n += a->len;
        m[n++] = ' ';
        memcpy(m + n, t->vocab.pool + b->off, b->len);
        n += b->len;
        m[n++] = '\n';
    }
    /* the two files replaced together: a kill or a full disk never leaves a new vocab.json with old merges */
    const size_t dl = strlen(dir) + 16;
    char *pv = malloc(dl), *pm = malloc(dl);
    int rc = TTT_ERR;
    if (!pv || !pm) rc = oom(err, err_len, dir);
    else {
        snprintf(pv, dl, "%s/vocab.json", dir);
        snprintf(pm, dl, "%s/merges.txt", dir);
        const char *paths[2] = {pv, pm};
        const void *data[2] = {vs, m};
        const size_t lens[2] = {vlen, n};
        rc = ttt_write_files_atomic(2, paths, data, lens, err, err_len);
    }
    free(pv), free(pm), free(m);
    json_object_put(v);
    return rc;
}
#endif

int ttt_tokenizer_files_id(const char *path, char *id, size_t len, char *err, size_t err_len) {
    if (!path || !id || len < 17) return ttt__errbuf(err, err_len, "tokenizer_files_id: need a path and 17 bytes for the id");
    char files[2][4200];
    struct stat st;
    int nf = 1;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(files[0], sizeof files[0], "%s/vocab.json", path);
        snprintf(files[1], sizeof files[1], "%s/merges.txt", path);
        nf = 2;
    } else snprintf(files[0], sizeof files[0], "%s", path);
    uint64_t h = TTT_FNV_SEED;
    for (int i = 0; i < nf; i++) {
        char *data = NULL;
        size_t n = 0;
        if (ttt_read_file(files[i], &data, &n, err, err_len) != TTT_OK) return TTT_ERR;
        h = ttt__fnv1a(h, data, n);
        free(data);
    }
    snprintf(id, len, "%016llx", (unsigned long long)h);
    return TTT_OK;
}
