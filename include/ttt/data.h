/* ttt/data.h: turning datasets into engine tensors.
 *
 * Vision: a batch of uint8 images [N,H,W] (an IDX array, see io.h) becomes
 * token tensors for a ViT-style model, as step temporaries in the context's
 * arena (they die at the next ttt_step_reset). Pixel values are scaled to
 * [0,1] and normalised with Fashion-MNIST's statistics,
 *     x = (p/255 - TTT_FASHION_MNIST_MEAN) / TTT_FASHION_MNIST_STD,
 * computed in double and rounded once to the requested dtype.
 * Errors are recorded in the context (ttt_error) like every op. */
#ifndef TTT_DATA_H
#define TTT_DATA_H

#include "ttt/io.h"
#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TTT_FASHION_MNIST_MEAN 0.2860
#define TTT_FASHION_MNIST_STD 0.3530

/* Tokens for images[indices[0..batch-1]] (indices NULL: images 0..batch-1).
 *   upsample U >= 1 (0 means 1): each image is first enlarged to (H*U)x(W*U)
 *     by nearest neighbour;
 *   patch P >= 1: the (enlarged) image is cut into non-overlapping PxP patches
 *     in row-major patch order, each flattened row-major:
 *     [batch, (H*U/P)*(W*U/P), P*P]; P must divide H*U and W*U.
 *   patch 0: one token per pixel with one feature, [batch, (H*U)*(W*U), 1]
 *     (the same as P = 1); e.g. 28x28 with U = 2 gives 3,136 tokens.
 * dt: TTT_F32 normally; TTT_F64 and TTT_BF16 also work. */
ttt_tensor *ttt_vision_tokens(ttt_ctx *ctx, const ttt_idx *images, const int64_t *indices, int64_t batch,
                              int patch, int upsample, ttt_dtype dt);

/* Labels labels[indices[0..batch-1]] (indices NULL: 0..batch-1) as an I32
 * tensor [batch]; labels must be a 1-d IDX array. */
ttt_tensor *ttt_vision_labels(ttt_ctx *ctx, const ttt_idx *labels, const int64_t *indices, int64_t batch);

#ifdef __cplusplus
}
#endif
#endif
