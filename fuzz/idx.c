/* Fuzz target: IDX files (src/io/idx.c), plain or gzipped (zlib reads both;
 * the seeds hold both kinds, fuzz/make_seeds.c). A load that succeeds must
 * hold as many bytes as its dimensions say. */
#include "fuzz.h"
#include "ttt/io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[300], err[512];
    fuzz_path(path, sizeof path, "in.idx");
    fuzz_write(path, data, size);
    ttt_idx idx;
    err[0] = 0;
    if (ttt_idx_load(path, &idx, err, sizeof err) == 0) {
        int64_t n = ttt_idx_count(&idx);
        if (idx.ndim < 1 || idx.ndim > 4 || n < 1 || !idx.data) abort();
        volatile uint8_t sum = 0;
        for (int64_t i = 0; i < n; i++) sum += idx.data[i]; /* every byte is there */
        (void)sum;
        fuzz_note("idx", "ok");
    } else if (fuzz_note("idx", err), !err[0] || idx.data) {
        abort(); /* a refusal says why and leaves the result empty */
    }
    ttt_idx_free(&idx);
    return 0;
}
