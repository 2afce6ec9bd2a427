/* ttt/tokenizer.h: byte-level BPE tokenizers (GPT-2 style).
 *
 * Text is bytes. Encoding:
 *   1. added tokens (e.g. <|endoftext|>) are cut out of the text first and
 *      become their own ids, atomically (leftmost-longest match);
 *   2. each remaining segment is pre-tokenized with GPT-2's regex
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      (implemented over UTF-8 code points with Unicode letter / number /
 *      White_Space tables; bytes that are not valid UTF-8 count as single
 *      punctuation-like characters);
 *   3. each pre-token's bytes start as one symbol per byte and are merged by
 *      BPE: repeatedly the adjacent pair with the lowest merge rank, the
 *      leftmost first on ties -- exactly what the Hugging Face `tokenizers`
 *      library does, so ids match it (tests/test_tokenizer.c checks this
 *      against reference encodings).
 * Vocabulary strings ("pieces") use GPT-2's byte-to-unicode map: each byte is
 * one printable code point (space -> U+0120 'Ġ', newline -> U+010A 'Ċ', ...),
 * as in vocab.json / merges.txt / tokenizer.json. Decoding maps pieces back to
 * bytes, so decode(encode(t)) == t for every byte string t.
 *
 * Errors: functions return TTT_OK / TTT_ERR and write a message naming the
 * file or the problem into err (err may be NULL). They never exit.
 *
 * Threads: encoding updates a per-tokenizer cache and scratch buffers, so one
 * ttt_tokenizer must not encode on two threads at once (use one per thread).
 * Decoding and the queries are read-only. */
#ifndef TTT_TOKENIZER_H
#define TTT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ttt_tokenizer ttt_tokenizer;

/* A growable id array; encode appends to it. Start from {0}; free with
 * ttt_token_ids_free (which zeroes it). */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} ttt_token_ids;
void ttt_token_ids_free(ttt_token_ids *ids);

/* ---- loading ------------------------------------------------------------------------ */

/* GPT-2 files: vocab.json ({"piece": id, ...}) and merges.txt (one "left right"
 * pair of pieces per line in rank order; an optional first line "#version: ..."
 * and empty lines are skipped). Every merge's pieces and their concatenation
 * must be in the vocabulary, and so must the 256 single-byte pieces. No token
 * is special until ttt_tokenizer_add_special names it (GPT-2 users usually add
 * "<|endoftext|>"). Needs json-c (TTT_HAVE_JSONC). */
int ttt_tokenizer_load_gpt2(const char *vocab_json, const char *merges_txt, ttt_tokenizer **out, char *err,
                            size_t err_len);

/* A Hugging Face tokenizer.json of the GPT-2 kind: model.type "BPE" (merges as
 * "a b" strings or ["a", "b"] pairs; ignore_merges honoured) with a ByteLevel
 * pre-tokenizer (use_regex true; add_prefix_space honoured), or a Sequence of
 * Digits (individual_digits true) and that ByteLevel (SmolLM2's); decoder and
 * post_processor null or ByteLevel; no normalizer, truncation or padding;
 * added_tokens without lstrip / rstrip / single_word. Anything else is
 * rejected with a message naming the unsupported field and value. Needs json-c. */
int ttt_tokenizer_load_json(const char *tokenizer_json, ttt_tokenizer **out, char *err, size_t err_len);

/* From a GGUF file's metadata (llama.cpp's tokenizer.ggml.* keys): model "gpt2"
 * (byte-level BPE) with tokens (id order), merges ("left right" pieces) and
 * token_type (3, control: a special added token; 4, user-defined: an added
 * token; others ordinary); pre "smollm" (GPT-2's pre-tokenizer after each
 * \p{N} character is split off alone, as SmolLM2's Digits(individual_digits)),
 * "gpt-2", "default" or absent (GPT-2's). Other models and pre-tokenizers are
 * refused with a message naming them. BOS / EOS / chat template: see llama.h. */
struct ttt_gguf;
int ttt_tokenizer_load_gguf(const struct ttt_gguf *g, ttt_tokenizer **out, char *err, size_t err_len);

/* One merge given as raw bytes (not pieces). */
typedef struct {
    const void *left;
    size_t left_len;
    const void *right;
    size_t right_len;
} ttt_bpe_merge;

/* A tokenizer from merges alone (what training produces): ids 0..255 are the
 * 256 bytes in GPT-2's order (the order of their pieces' code points, so they
 * agree with GPT-2's own vocabulary), then each merge's result in merge order
 * (a result already in the vocabulary keeps its id). */
int ttt_tokenizer_from_merges(const ttt_bpe_merge *merges, size_t n_merges, ttt_tokenizer **out, char *err,
                              size_t err_len);

/* Make CONTENT (NUL-terminated UTF-8, not empty) a special token: matched
 * atomically in the text before pre-tokenization and skipped by decode when
 * asked. If CONTENT is already a piece of the vocabulary it keeps that id,
 * else it gets the next free id. *id (may be NULL) receives the id. */
int ttt_tokenizer_add_special(ttt_tokenizer *tok, const char *content, int32_t *id, char *err, size_t err_len);

void ttt_tokenizer_free(ttt_tokenizer *tok);  /* NULL ok */
/* An id of the tokenizer files at PATH (vocab.json + merges.txt of a folder, or one
 * file such as tokenizer.json): FNV-1a 64 over their bytes, 16 hex digits and a NUL
 * into id (len >= 17). State files record it so a state is never read with another
 * tokenizer. TTT_OK, or TTT_ERR with err naming the file. */
int ttt_tokenizer_files_id(const char *path, char *id, size_t len, char *err, size_t err_len);

/* ---- using -------------------------------------------------------------------------- */

/* Appends the ids of text[0..len) to *out. Fails only when out of memory. */
int ttt_tokenizer_encode(ttt_tokenizer *tok, const char *text, size_t len, ttt_token_ids *out, char *err,
                         size_t err_len);

/* The bytes of ids[0..n) (special tokens left out when skip_special), as a
 * malloc'd buffer *text of *len bytes plus a terminating NUL (free() it).
 * The bytes are not checked to be UTF-8 (a prefix of a multi-byte character
 * decodes to its raw bytes). An id outside the vocabulary is an error. */
int ttt_tokenizer_decode(const ttt_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, char **text,
                         size_t *len, char *err, size_t err_len);

/* Writes DIR/vocab.json and DIR/merges.txt (with a "#version: 0.2" header) in
 * GPT-2's format, creating DIR if needed. Both files are written to FILE.tmp and
 * fsync'ed before either is renamed over FILE (ttt_write_files_atomic), so a
 * killed run or a full disk leaves the old pair or the new one, never a torn
 * file (only a kill in the microseconds between the two renames could mix them).
 * Special tokens are saved as ordinary vocabulary entries (the format has no
 * place for the flag). Needs json-c. */
int ttt_tokenizer_save_gpt2(const ttt_tokenizer *tok, const char *dir, char *err, size_t err_len);

/* ---- queries ------------------------------------------------------------------------- */

int32_t ttt_tokenizer_vocab_size(const ttt_tokenizer *tok); /* 1 + the largest id */
size_t ttt_tokenizer_merge_count(const ttt_tokenizer *tok);
/* The piece of ID (not NUL-terminated; *len its length), or NULL if no token has it. */
const char *ttt_tokenizer_piece(const ttt_tokenizer *tok, int32_t id, size_t *len);
int32_t ttt_tokenizer_piece_id(const ttt_tokenizer *tok, const char *piece, size_t len); /* -1: absent */
int ttt_tokenizer_is_special(const ttt_tokenizer *tok, int32_t id);
const char *ttt_tokenizer_unicode_version(void); /* of the \p{L} / \p{N} tables, e.g. "14.0.0" */

/* GPT-2 pre-tokenization: the end (exclusive byte offset) of the pre-token
 * that starts at text[pos]; pos < len gives an end in (pos, len]. Walking
 * pos = end from 0 splits the text into GPT-2's pre-tokens. */
size_t ttt_gpt2_pretoken_end(const char *text, size_t len, size_t pos);

/* ---- training ------------------------------------------------------------------------- */

typedef struct {
    int32_t vocab_size;                /* total: 256 bytes + merges + special tokens */
    const char *const *special_tokens; /* NUL-terminated; cut out of the corpus, added last */
    int n_special;
    int progress;                      /* 1: progress lines on stderr (about once a second) */
} ttt_bpe_train_config;

/* Learns byte-level BPE merges from texts[0..n) (lens[i] bytes each): the
 * corpus is split at special tokens and pre-tokenized as in encoding; merges
 * are learned over the distinct pre-tokens weighted by their counts, with
 * pair counts updated incrementally after each merge. Each step merges the
 * most frequent pair; ties go to the pair whose (left bytes, right bytes) is
 * lexicographically greatest. Stops at vocab_size, or earlier when no
 * adjacent pair is left. The result is ttt_tokenizer_from_merges(merges) plus
 * the special tokens (ids after the merges'). */
int ttt_tokenizer_train(const char *const *texts, const size_t *lens, int n, const ttt_bpe_train_config *cfg,
                        ttt_tokenizer **out, char *err, size_t err_len);
/* The same over files (each read whole). */
int ttt_tokenizer_train_files(const char *const *paths, int n, const ttt_bpe_train_config *cfg,
                              ttt_tokenizer **out, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
