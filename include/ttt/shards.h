/* ttt/shards.h: token shards, the training and evaluation data of the language
 * models. A shard is one file of tokenized documents; the format is documented
 * in docs/shards.md:
 *
 *   offset  size            field
 *   0       8               magic "TTTSHARD"
 *   8       4  u32          version (1)
 *   12      4  u32          token width in bytes: 2 (uint16) or 4 (uint32)
 *   16      8  u64          vocabulary size (every token < it)
 *   24      8  u64          number of tokens N
 *   32      8  u64          number of documents M
 *   40      8  u64          FNV-1a 64 hash of the document table and tokens
 *   48      16              reserved, zero
 *   64      8 (M + 1)       u64 document starts (token indices, first 0, last N)
 *   ...     width N         tokens
 * all little-endian. Writers choose width 2 when the vocabulary fits (<= 65536).
 *
 * Writes are atomic (PATH.tmp, fsync, rename, fsync of the directory). The
 * reader maps the file and checks magic, version, width, sizes against the file
 * length, the document table's order, and (ttt_shard_verify) the hash and that
 * every token is below the vocabulary size. Errors are returned with a message
 * naming the file and the problem; nothing here exits. */
#ifndef TTT_SHARDS_H
#define TTT_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ttt_shard ttt_shard;

/* Open and validate the header and document table (cheap: the tokens are
 * mapped, not read). TTT_OK / TTT_ERR with a message in err. */
int ttt_shard_open(const char *path, ttt_shard **out, char *err, size_t err_len);
/* Full check: hash and token range (reads every token). */
int ttt_shard_verify(const ttt_shard *s, char *err, size_t err_len);
void ttt_shard_close(ttt_shard *s); /* NULL ok */

int64_t ttt_shard_n_tokens(const ttt_shard *s);
int64_t ttt_shard_n_docs(const ttt_shard *s);
int64_t ttt_shard_vocab(const ttt_shard *s);
int ttt_shard_width(const ttt_shard *s); /* bytes a token: 2 or 4 */
/* Document i: its first token index and length. */
int ttt_shard_doc(const ttt_shard *s, int64_t i, int64_t *start, int64_t *len, char *err, size_t err_len);
/* Copy tokens [start, start + n) as int32. */
int ttt_shard_read(const ttt_shard *s, int64_t start, int64_t n, int32_t *out, char *err, size_t err_len);

/* Training batches: batch random windows of T + 1 consecutive tokens (they may
 * cross document boundaries, which carry the end-of-text token the preparer
 * inserted); ids = window[0:T], targets = window[1:T+1], each [batch * T].
 * A pure function of (seed, step): resuming at a step reproduces the batches
 * bit for bit. */
int ttt_shard_batch(const ttt_shard *s, uint64_t seed, int64_t step, int64_t batch, int64_t T, int32_t *ids,
                    int32_t *targets, char *err, size_t err_len);

typedef struct ttt_shard_writer ttt_shard_writer;
/* Start PATH.tmp; vocab decides the token width. */
int ttt_shard_writer_open(const char *path, int64_t vocab, ttt_shard_writer **out, char *err, size_t err_len);
/* Append one document (every id in [0, vocab)). */
int ttt_shard_writer_add(ttt_shard_writer *w, const int32_t *ids, int64_t n, char *err, size_t err_len);
/* Finish: write the table and header, fsync, rename over PATH. Frees w either way. */
int ttt_shard_writer_close(ttt_shard_writer *w, char *err, size_t err_len);
/* Drop PATH.tmp and free w (NULL ok). */
void ttt_shard_writer_abort(ttt_shard_writer *w);

#ifdef __cplusplus
}
#endif
#endif
