/* Fuzz target: token shards (src/data/shards.c, docs/shards.md). The input is a
 * whole shard file: open (header and document table), verify (hash and token
 * range), then every accessor a trainer uses on an opened shard: documents,
 * reads and batches. */
#include "fuzz.h"
#include "ttt/shards.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[300], err[512];
    fuzz_path(path, sizeof path, "in.shard");
    fuzz_write(path, data, size);
    ttt_shard *s = NULL;
    err[0] = 0;
    if (ttt_shard_open(path, &s, err, sizeof err) != 0) {
        fuzz_note("open", err);
        if (s || !err[0]) abort();
        return 0;
    }
    const int verified = ttt_shard_verify(s, err, sizeof err) == 0;
    fuzz_note("verify", verified ? "ok" : err);
    const int64_t n = ttt_shard_n_tokens(s), docs = ttt_shard_n_docs(s), vocab = ttt_shard_vocab(s);
    int32_t buf[64];
    for (int64_t d = 0; d < docs && d < 8; d++) {
        int64_t start, len;
        if (ttt_shard_doc(s, d, &start, &len, err, sizeof err) != 0) abort(); /* in range: must work */
        if (start < 0 || len < 0 || start + len > n) abort();
        if (ttt_shard_read(s, start, len < 64 ? len : 64, buf, err, sizeof err) != 0) abort();
    }
    int64_t st0, len0;
    if (ttt_shard_doc(s, docs, &st0, &len0, err, sizeof err) == 0) abort(); /* out of range: refused */
    (void)ttt_shard_read(s, n - 1, 2, buf, err, sizeof err);
    int32_t ids[2 * 8], tg[2 * 8];
    if (ttt_shard_batch(s, 7, 3, 2, 8, ids, tg, err, sizeof err) == 0 && verified)
        for (int i = 0; i < 16; i++)
            if (ids[i] < 0 || ids[i] >= vocab || tg[i] < 0 || tg[i] >= vocab) abort();
    ttt_shard_close(s);
    return 0;
}
