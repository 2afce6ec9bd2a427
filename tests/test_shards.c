/* Token shards (include/ttt/shards.h): round trips with 2- and 4-byte tokens,
 * deterministic batches, and clear errors for truncated or corrupt files, bad
 * tokens and aborted or interrupted writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ttt/shards.h"

static char dir[] = "/tmp/ttt_test_shards_XXXXXX";

static void path_of(char *buf, size_t n, const char *leaf) { snprintf(buf, n, "%s/%s", dir, leaf); }

static int write_shard(const char *path, int64_t vocab, int n_docs, const int64_t *lens) {
    char err[256];
    ttt_shard_writer *w = NULL;
    if (ttt_shard_writer_open(path, vocab, &w, err, sizeof err)) return -1;
    for (int d = 0; d < n_docs; d++) {
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)(lens[d] ? lens[d] : 1));
        for (int64_t i = 0; i < lens[d]; i++) ids[i] = (int32_t)((d * 1000 + i * 7) % vocab);
        int rc = ttt_shard_writer_add(w, ids, lens[d], err, sizeof err);
        free(ids);
        if (rc) return ttt_shard_writer_abort(w), -1;
    }
    return ttt_shard_writer_close(w, err, sizeof err);
}

static void round_trip(int64_t vocab) {
    char path[256], err[256];
    path_of(path, sizeof path, "rt.bin");
    const int64_t lens[] = {5, 0, 17, 1};
    CHECK(write_shard(path, vocab, 4, lens) == 0);
    ttt_shard *s = NULL;
    CHECK_MSG(ttt_shard_open(path, &s, err, sizeof err) == 0, "%s", err);
    if (!s) return;
    CHECK(ttt_shard_verify(s, err, sizeof err) == 0);
    CHECK(ttt_shard_n_docs(s) == 4 && ttt_shard_n_tokens(s) == 23 && ttt_shard_vocab(s) == vocab);
    int64_t at = 0;
    for (int d = 0; d < 4; d++) {
        int64_t start, len;
        CHECK(ttt_shard_doc(s, d, &start, &len, err, sizeof err) == 0 && start == at && len == lens[d]);
        int32_t got[32];
        CHECK(ttt_shard_read(s, start, len, got, err, sizeof err) == 0);
        for (int64_t i = 0; i < len; i++) CHECK(got[i] == (int32_t)((d * 1000 + i * 7) % vocab));
        at += len;
    }
    int32_t x[4];
    CHECK(ttt_shard_read(s, 20, 4, x, err, sizeof err) != 0 && strstr(err, "out of range"));
    CHECK(ttt_shard_doc(s, 4, &at, &at, err, sizeof err) != 0 && strstr(err, "out of range"));
    ttt_shard_close(s);
}

static void batches(void) {
    char path[256], err[256];
    path_of(path, sizeof path, "b.bin");
    const int64_t lens[] = {300, 200};
    CHECK(write_shard(path, 1000, 2, lens) == 0);
    ttt_shard *s = NULL;
    CHECK(ttt_shard_open(path, &s, err, sizeof err) == 0);
    if (!s) return;
    enum { B = 4, T = 16 };
    int32_t a[B * T], at[B * T], b[B * T], bt[B * T], c[B * T], ct[B * T], all[500];
    CHECK(ttt_shard_batch(s, 7, 3, B, T, a, at, err, sizeof err) == 0);
    CHECK(ttt_shard_batch(s, 7, 3, B, T, b, bt, err, sizeof err) == 0);
    CHECK(ttt_shard_batch(s, 7, 4, B, T, c, ct, err, sizeof err) == 0);
    CHECK(!memcmp(a, b, sizeof a) && !memcmp(at, bt, sizeof at)); /* a pure function of (seed, step) */
    CHECK(memcmp(a, c, sizeof a) != 0);
    ttt_shard_read(s, 0, 500, all, err, sizeof err);
    int shifted = 1, contiguous = 1;
    for (int r = 0; r < B; r++) {
        for (int t = 0; t + 1 < T; t++) shifted &= at[r * T + t] == a[r * T + t + 1];
        int found = 0; /* each row is a window of the token stream */
        for (int p = 0; p + T < 500 && !found; p++) found = !memcmp(all + p, a + r * T, sizeof(int32_t) * T) && all[p + T] == at[r * T + T - 1];
        contiguous &= found;
    }
    CHECK(shifted && contiguous);
    CHECK(ttt_shard_batch(s, 7, 0, 1, 500, a, at, err, sizeof err) != 0 && strstr(err, "too few"));
    CHECK(ttt_shard_batch(s, 7, 0, INT64_MAX / 2, 16, a, at, err, sizeof err) != 0 && strstr(err, "too large"));
    CHECK(ttt_shard_batch(s, 7, -1, 1, 16, a, at, err, sizeof err) != 0);
    ttt_shard_close(s);
    /* window starts cover exactly [0, N - T - 1]: N = 20, T = 16 gives starts 0..3 */
    const int64_t small[] = {20};
    CHECK(write_shard(path, 1000, 1, small) == 0);
    CHECK(ttt_shard_open(path, &s, err, sizeof err) == 0);
    if (!s) return;
    ttt_shard_read(s, 0, 20, all, err, sizeof err);
    int seen[4] = {0}, in_range = 1;
    for (int64_t step = 0; step < 64; step++) {
        CHECK(ttt_shard_batch(s, 1, step, 1, T, a, at, err, sizeof err) == 0);
        int p = 0;
        while (p < 4 && memcmp(all + p, a, sizeof(int32_t) * T)) p++;
        if (p < 4) seen[p] = 1;
        else in_range = 0;
    }
    CHECK(in_range && seen[0] && seen[1] && seen[2] && seen[3]);
    ttt_shard_close(s);
}

/* Documents may be empty; a shard of empty documents opens and verifies. */
static void empty_docs(void) {
    char path[256], err[256];
    path_of(path, sizeof path, "e.bin");
    const int64_t lens[] = {0, 0, 0};
    CHECK(write_shard(path, 50, 3, lens) == 0);
    ttt_shard *s = NULL;
    CHECK_MSG(ttt_shard_open(path, &s, err, sizeof err) == 0, "%s", err);
    CHECK(s && ttt_shard_n_docs(s) == 3 && ttt_shard_n_tokens(s) == 0 && ttt_shard_verify(s, err, sizeof err) == 0);
    int32_t x[2];
    CHECK(s && ttt_shard_batch(s, 1, 0, 1, 1, x, x + 1, err, sizeof err) != 0 && strstr(err, "too few"));
    ttt_shard_close(s);
}

static void corrupt(void) {
    char path[256], bad[256], err[256];
    path_of(path, sizeof path, "c.bin");
    path_of(bad, sizeof bad, "bad.bin");
    const int64_t lens[] = {40, 24};
    CHECK(write_shard(path, 300, 2, lens) == 0);
    FILE *f = fopen(path, "rb");
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    struct {
        size_t at;
        unsigned char v;
        size_t len;
        const char *want;
    } cases[] = {
        {0, 'X', n, "magic"},          {8, 9, n, "version"},         {12, 3, n, "width"},
        {0, 'T', n - 1, "truncated"},  {0, 'T', 30, "shorter than"}, {64 + 8, 200, n, "out of order"},
        {n - 1, 0xff, n, NULL}, /* last token's high byte: 65280+ is >= vocab 300 -> verify */
        {n - 2, 0x01, n, NULL}, /* a token changed but in range -> the hash */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char c[4096];
        memcpy(c, buf, n);
        c[cases[i].at] = cases[i].v;
        f = fopen(bad, "wb");
        fwrite(c, 1, cases[i].len, f);
        fclose(f);
        ttt_shard *s = NULL;
        err[0] = 0;
        int rc = ttt_shard_open(bad, &s, err, sizeof err);
        if (cases[i].want) {
            CHECK_MSG(rc != 0 && strstr(err, cases[i].want) && strstr(err, bad), "case %zu: %s", i, err);
        } else {
            CHECK(rc == 0);
            CHECK_MSG(ttt_shard_verify(s, err, sizeof err) != 0 && (strstr(err, "vocabulary") || strstr(err, "hash")),
                      "case %zu: %s", i, err);
        }
        ttt_shard_close(s);
    }
}

static void writer_errors(void) {
    char path[256], tmp[300], err[256];
    path_of(path, sizeof path, "w.bin");
    const int64_t lens[] = {10};
    CHECK(write_shard(path, 100, 1, lens) == 0);
    ttt_shard_writer *w = NULL;
    CHECK(ttt_shard_writer_open(path, 100, &w, err, sizeof err) == 0);
    int32_t ids[3] = {1, 100, 2};
    CHECK(ttt_shard_writer_add(w, ids, 3, err, sizeof err) != 0 && strstr(err, "outside the vocabulary"));
    ttt_shard_writer_abort(w); /* the existing shard is untouched and no tmp file is left */
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0);
    ttt_shard *s = NULL;
    CHECK(ttt_shard_open(path, &s, err, sizeof err) == 0 && ttt_shard_n_tokens(s) == 10);
    ttt_shard_close(s);
    /* 4-byte tokens for a large vocabulary */
    CHECK(ttt_shard_writer_open(path, 70000, &w, err, sizeof err) == 0);
    int32_t big[2] = {69999, 65536};
    CHECK(ttt_shard_writer_add(w, big, 2, err, sizeof err) == 0 && ttt_shard_writer_close(w, err, sizeof err) == 0);
    CHECK(ttt_shard_open(path, &s, err, sizeof err) == 0);
    int32_t got[2] = {0, 0};
    CHECK(s && ttt_shard_read(s, 0, 2, got, err, sizeof err) == 0 && got[0] == 69999 && got[1] == 65536);
    ttt_shard_close(s);
    CHECK(ttt_shard_open("/nonexistent/x.bin", &s, err, sizeof err) != 0 && strstr(err, "/nonexistent/x.bin"));
    /* an unwritable destination fails at open, before any tokenizing */
    CHECK(ttt_shard_writer_open("/nonexistent/x.bin", 100, &w, err, sizeof err) != 0 && !w &&
          strstr(err, "/nonexistent/x.bin.tmp") && strstr(err, "cannot create"));
}

/* A writer that dies before close (here: a child process that exits without
 * closing) leaves at most PATH.tmp; the shard at PATH keeps its old content,
 * and the next writer replaces the stale tmp file. */
static void interrupted_writer(void) {
    char path[256], tmp[300], err[256];
    path_of(path, sizeof path, "i.bin");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    const int64_t old[] = {12, 3};
    CHECK(write_shard(path, 500, 2, old) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        ttt_shard_writer *w = NULL;
        int32_t ids[4] = {1, 2, 3, 4};
        if (ttt_shard_writer_open(path, 500, &w, err, sizeof err) == 0) ttt_shard_writer_add(w, ids, 4, err, sizeof err);
        _exit(0); /* no close: as if killed */
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status));
    CHECK(access(tmp, F_OK) == 0); /* the dead writer's tmp file */
    ttt_shard *s = NULL;
    CHECK(ttt_shard_open(path, &s, err, sizeof err) == 0 && ttt_shard_n_tokens(s) == 15 && ttt_shard_n_docs(s) == 2 &&
          ttt_shard_verify(s, err, sizeof err) == 0);
    ttt_shard_close(s);
    /* a crash halfway through close leaves a partial tmp file: still harmless */
    FILE *f = fopen(tmp, "wb");
    fputs("TTTSHARD partial", f);
    fclose(f);
    CHECK(ttt_shard_open(path, &s, err, sizeof err) == 0 && ttt_shard_n_tokens(s) == 15);
    ttt_shard_close(s);
    const int64_t fresh[] = {7};
    CHECK(write_shard(path, 500, 1, fresh) == 0);
    CHECK(access(tmp, F_OK) != 0);
    CHECK(ttt_shard_open(path, &s, err, sizeof err) == 0 && ttt_shard_n_tokens(s) == 7 && ttt_shard_verify(s, err, sizeof err) == 0);
    ttt_shard_close(s);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    round_trip(300);
    round_trip(100000);
    batches();
    corrupt();
    writer_errors();
    empty_docs();
    interrupted_writer();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    TEST_MAIN_END();
}
