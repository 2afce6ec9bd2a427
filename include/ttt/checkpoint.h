/* ttt/checkpoint.h: tensors to and from safetensors files.
 *
 * Format: the Hugging Face safetensors layout (8-byte little-endian header
 * length, a JSON header mapping each name to {dtype, shape, data_offsets} plus an
 * optional "__metadata__" object of string values, then the raw little-endian
 * data). dtypes: F32, F64, BF16, I32.
 *
 * Writes are atomic: the file is written to PATH.tmp, fsync'ed, renamed over
 * PATH and the directory fsync'ed, so a killed run leaves either the old or the
 * new file, never a torn one.
 *
 * Checksums: the writer stores each tensor's checksum (64 bits of its bytes as
 * stored) in the metadata under "ttt.checksum.<name>"; the reader verifies the
 * tensors it loads against them, so a damaged file is refused naming the
 * tensor. Files without them (from other writers) load unchecked. The prefix
 * is reserved: a caller's metadata key starting with it is refused, and the
 * checksums are left out of the metadata JSON handed back. */
#ifndef TTT_CHECKPOINT_H
#define TTT_CHECKPOINT_H

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *name;
    ttt_tensor *tensor;
} ttt_named_tensor;

/* Save n tensors (any device; copied to the host). metadata: NULL or a
 * NULL-terminated list of key, value, key, value, ... strings. */
int ttt_save_safetensors(ttt_ctx *ctx, const char *path, int n, const ttt_named_tensor *tensors,
                         const char *const *metadata);

/* Load into existing tensors by name: every listed name must be in the file
 * with the same shape; dtypes are converted. Errors name the file and the
 * tensor. metadata_json: if not NULL, receives the "__metadata__" object as a
 * malloc'd JSON string (free() it), or NULL when the file has none. */
int ttt_load_safetensors(ttt_ctx *ctx, const char *path, int n, const ttt_named_tensor *tensors,
                         char **metadata_json);

/* Look up one string value in a metadata JSON object (as returned above);
 * copies it into buf and returns TTT_OK, or TTT_ERR if absent. */
int ttt_metadata_get(const char *metadata_json, const char *key, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
