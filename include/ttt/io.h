/* ttt/io.h: reading data files.
 *
 * IDX is the MNIST / Fashion-MNIST format: a big-endian header (two zero bytes,
 * a type byte, a dimension count, then one uint32 per dimension) followed by
 * the data in row-major order. Files may be gzipped or plain (zlib reads both).
 * Only unsigned-byte data (type 0x08) is supported, which is what MNIST-style
 * images and labels use.
 *
 * These functions do not use a ttt_ctx: they return TTT_OK / TTT_ERR and write
 * a message naming the file into err (err may be NULL). They never exit. */
#ifndef TTT_IO_H
#define TTT_IO_H

#include <stddef.h>
#include <stdint.h>

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where the Debian package dataset-fashion-mnist installs the four files
 * train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
 * t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz. */
#define TTT_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* An unsigned-byte IDX array: dims[0..ndim-1] (all > 0), data holds their
 * product bytes in row-major order (malloc'ed; free with ttt_idx_free). */
typedef struct {
    int32_t ndim;       /* 1..4 */
    int64_t dims[4];
    uint8_t *data;
} ttt_idx;

/* Reads PATH (gzipped or plain) into *out. On error *out is left empty
 * ({0}, safe to ttt_idx_free) and err says why: "cannot open PATH: ...",
 * "PATH: bad magic ...", "PATH: truncated: expected N bytes of data, got M", ...
 * Bytes after the data are ignored. */
int ttt_idx_load(const char *path, ttt_idx *out, char *err, size_t err_len);
void ttt_idx_free(ttt_idx *idx);             /* frees data, zeroes *idx; NULL ok */
int64_t ttt_idx_count(const ttt_idx *idx);  /* total elements (product of dims) */

/* Loads Fashion-MNIST's training (train != 0, 60,000 examples) or test split
 * (10,000) from DIR (NULL: TTT_FASHION_MNIST_DIR): images [N,28,28] and labels
 * [N] with values 0..9. On error both are left empty. A missing file gives
 * "cannot open PATH: No such file or directory"; telling the user how to get
 * the files is the caller's job. */
int ttt_fashion_mnist_load(const char *dir, int train, ttt_idx *images, ttt_idx *labels, char *err,
                           size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
