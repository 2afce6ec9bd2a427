/* ttt/gguf.h: reading GGUF files (llama.cpp's model format, version 3) and
 * dequantizing their tensors to f32. docs/gguf.md describes the subset read.
 *
 * A file is a header (magic "GGUF", version, tensor count, key/value count), the
 * key/value metadata (typed scalars, strings, arrays of one scalar or string
 * type), the tensor infos (name, dims, ggml type, offset), padding to the
 * alignment, then the data section. Everything is little-endian.
 *
 * ttt_gguf_open maps the file and validates all of it before returning: every
 * count and length against the bytes that remain (so a huge count is refused
 * before anything is allocated), value and tensor types, string lengths, the
 * alignment, each tensor's dims, its size (overflow-checked) and its offset
 * (aligned, inside the data section). A bad file gives TTT_ERR and a message in
 * err naming the file, the field and the byte offset. Nothing exits.
 *
 * The returned values point into the mapping: valid until ttt_gguf_close. */
#ifndef TTT_GGUF_H
#define TTT_GGUF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata value types (GGUF's numbering). */
typedef enum {
    TTT_GGUF_U8 = 0, TTT_GGUF_I8 = 1, TTT_GGUF_U16 = 2, TTT_GGUF_I16 = 3, TTT_GGUF_U32 = 4, TTT_GGUF_I32 = 5,
    TTT_GGUF_F32 = 6, TTT_GGUF_BOOL = 7, TTT_GGUF_STRING = 8, TTT_GGUF_ARRAY = 9, TTT_GGUF_U64 = 10,
    TTT_GGUF_I64 = 11, TTT_GGUF_F64 = 12
} ttt_gguf_vtype;

/* Tensor types (ggml's numbering) that ttt dequantizes. Other known ggml types
 * open (their sizes are known) but ttt_gguf_dequantize refuses them by name. */
enum {
    TTT_GGML_F32 = 0, TTT_GGML_F16 = 1, TTT_GGML_Q4_0 = 2, TTT_GGML_Q4_1 = 3, TTT_GGML_Q8_0 = 8,
    TTT_GGML_Q4_K = 12, TTT_GGML_Q5_K = 13, TTT_GGML_Q6_K = 14, TTT_GGML_BF16 = 30
};

typedef struct {
    const char *key;          /* NUL-terminated copy */
    ttt_gguf_vtype type;
    ttt_gguf_vtype elem_type; /* arrays: the elements' type (never ARRAY: nested arrays are refused) */
    uint64_t n;               /* arrays: element count; 1 otherwise */
    const uint8_t *data;      /* the value (strings: its u64 length, then the bytes); arrays: the first element */
    const uint8_t **strs;     /* string arrays: where each element (its u64 length) starts; else NULL */
} ttt_gguf_kv;

typedef struct {
    const char *name;         /* NUL-terminated copy */
    int ndim;                 /* 1..4 */
    int64_t ne[4];            /* ggml order: ne[0] is the fastest-varying (a row); unused dims are 1 */
    uint32_t type;            /* ggml type */
    uint64_t offset;          /* from the start of the data section */
    uint64_t nbytes;
    const uint8_t *data;
} ttt_gguf_tensor;

typedef struct ttt_gguf {
    uint32_t version;
    uint64_t alignment;
    uint64_t n_kv, n_tensors;
    ttt_gguf_kv *kv;
    ttt_gguf_tensor *tensors;
    const uint8_t *base;      /* the whole file */
    size_t size;
    uint64_t data_offset;     /* where the data section starts */
    int mapped;               /* 1: base is an mmap of the file */
    char path[512];
} ttt_gguf;

/* Opens and validates PATH (mmap'ed read-only). */
int ttt_gguf_open(const char *path, ttt_gguf **out, char *err, size_t err_len);
/* The same over bytes in memory (not copied: they must outlive the result);
 * name is used in messages. */
int ttt_gguf_open_memory(const void *data, size_t size, const char *name, ttt_gguf **out, char *err,
                         size_t err_len);
void ttt_gguf_close(ttt_gguf *g); /* NULL ok */

/* ---- metadata ---- */
const ttt_gguf_kv *ttt_gguf_find(const ttt_gguf *g, const char *key); /* NULL if absent */
/* A scalar of any integer type (or bool) as int64 / as double (any numeric type).
 * TTT_ERR with a message when absent, of another type, or out of range. */
int ttt_gguf_get_int(const ttt_gguf *g, const char *key, int64_t *out, char *err, size_t err_len);
int ttt_gguf_get_float(const ttt_gguf *g, const char *key, double *out, char *err, size_t err_len);
/* A string value: pointer into the file and its length (not NUL-terminated). */
int ttt_gguf_get_str(const ttt_gguf *g, const char *key, const char **s, size_t *len, char *err, size_t err_len);
/* Element i of a string array / of a numeric array (as int64 or double). */
const char *ttt_gguf_arr_str(const ttt_gguf_kv *kv, uint64_t i, size_t *len);
int64_t ttt_gguf_arr_int(const ttt_gguf_kv *kv, uint64_t i);
double ttt_gguf_arr_float(const ttt_gguf_kv *kv, uint64_t i);
const char *ttt_gguf_vtype_name(ttt_gguf_vtype t);

/* ---- tensors ---- */
const ttt_gguf_tensor *ttt_gguf_tensor_find(const ttt_gguf *g, const char *name); /* NULL if absent */
int64_t ttt_gguf_tensor_numel(const ttt_gguf_tensor *t);
const char *ttt_ggml_type_name(uint32_t type); /* "Q4_K", ...; NULL for a type ttt does not know */
/* Block size (elements) and bytes per block of a known ggml type; TTT_ERR if unknown. */
int ttt_ggml_type_size(uint32_t type, int64_t *block, int64_t *bytes);
/* n elements of type from src (src_bytes long, checked) into dst as f32:
 * F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K. n must be a multiple
 * of the type's block size. */
int ttt_gguf_dequantize(uint32_t type, const void *src, size_t src_bytes, int64_t n, float *dst, char *err,
                        size_t err_len);
/* A tensor dequantized into dst (ttt_gguf_tensor_numel floats). */
int ttt_gguf_tensor_f32(const ttt_gguf_tensor *t, float *dst, char *err, size_t err_len);
/* IEEE half to float (exact: subnormals, infinities and NaN kept). */
float ttt_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif
