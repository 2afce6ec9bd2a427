/* fuzz/fuzz.h: what the fuzz targets share. Each target (fuzz/TARGET.c) defines
 * LLVMFuzzerTestOneInput; it is linked either with libFuzzer (TTT_FUZZ=ON, clang)
 * or with fuzz/replay.c, which feeds it the files of the seed corpus and the
 * regression inputs in the normal build (gcc included), so CI replays every
 * input that ever crashed a loader.
 *
 * Most loaders take a path: a target writes the input to a file in its own
 * temporary folder (made once, removed at exit) and loads that. */
#ifndef TTT_FUZZ_H
#define TTT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir_buf[256];

static inline void fuzz_dir_remove(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir_buf);
    if (fuzz_dir_buf[0] && system(cmd) != 0) fprintf(stderr, "fuzz: cannot remove %s\n", fuzz_dir_buf);
}

/* The target's temporary folder ($TMPDIR or /tmp), made on the first call. */
static inline const char *fuzz_dir(void) {
    if (!fuzz_dir_buf[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_dir_buf, sizeof fuzz_dir_buf, "%s/ttt_fuzz_XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_dir_buf)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_buf;
}

/* FOLDER/name into buf. */
static inline const char *fuzz_path(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", fuzz_dir(), name);
    return buf;
}

/* PATH <- data[0..size); aborts on failure (a broken harness, not a finding). */
static inline void fuzz_write(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* A NUL-terminated copy (malloc'd) of data, for string parsers. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* Splits data at the first occurrence of sep: [data, a_len) and the rest after sep
 * (b, b_len). Without sep, everything is a and b is empty. */
static inline void fuzz_split(const uint8_t *data, size_t size, const char *sep, size_t *a_len, const uint8_t **b,
                       size_t *b_len) {
    const size_t sl = strlen(sep);
    for (size_t i = 0; i + sl <= size; i++)
        if (!memcmp(data + i, sep, sl)) {
            *a_len = i, *b = data + i + sl, *b_len = size - i - sl;
            return;
        }
    *a_len = size, *b = data + size, *b_len = 0;
}

/* TTT_FUZZ_VERBOSE=1: print why an input was refused (to check that seeds load). */
static inline void fuzz_note(const char *what, const char *msg) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("TTT_FUZZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, "%s: %s\n", what, msg && *msg ? msg : "ok");
}

#endif
