/* ttt/fileio.h: the library's one atomic file writer and one whole-file reader.
 *
 * An atomic write goes to PATH.tmp, is flushed and fsync'ed, renamed over PATH,
 * and then PATH's directory is fsync'ed, so a process killed at any point
 * leaves either the old file or the new one, never a torn one.
 *
 * These functions use no ttt_ctx: they return TTT_OK / TTT_ERR, write a message
 * naming the file into err (err may be NULL) and leave errno set. */
#ifndef TTT_FILEIO_H
#define TTT_FILEIO_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    FILE *f;    /* write the new contents here */
    char *path; /* malloc'd copies */
    char *tmp;
} ttt_atomic_file;

/* Opens PATH.tmp for writing (binary). On failure *af is empty and needs no abort. */
int ttt_atomic_open(ttt_atomic_file *af, const char *path, char *err, size_t err_len);
/* Flush, fsync, close, rename over the path, fsync the directory. Frees *af
 * either way; on failure the temporary file is removed and PATH is unchanged
 * (a failing directory fsync is reported, but PATH already holds the new file). */
int ttt_atomic_commit(ttt_atomic_file *af, char *err, size_t err_len);
/* Closes and removes the temporary file, frees *af (an empty one is a no-op). */
void ttt_atomic_abort(ttt_atomic_file *af);
/* PATH <- data[0..len) atomically. */
int ttt_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t err_len);
/* Several files replaced together (e.g. a tokenizer's vocab.json and merges.txt): each
 * paths[i] <- data[i][0..lens[i]) (n in 1..16). Every file is written and fsync'ed under its
 * temporary name before the first rename, so a failure (a full disk, a read-only folder)
 * leaves all of them as they were, and a killed process leaves them all old or all new except
 * in the microseconds between the renames. */
int ttt_write_files_atomic(int n, const char *const *paths, const void *const *data, const size_t *lens, char *err,
                           size_t err_len);
/* fsync the directory that holds PATH (file systems that cannot count as success). 0 / -1 with errno. */
int ttt_sync_parent_dir(const char *path);

/* The whole of PATH (a regular file) into *data, malloc'd and NUL-terminated
 * (the NUL is not counted in *len). On failure *data is NULL and err says
 * why: "cannot open PATH: ...", "PATH: is a directory", "PATH: read error: ...". */
int ttt_read_file(const char *path, char **data, size_t *len, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
