/* The fused chunkwise Gated DeltaNet core on the GPU (backend.h: gdn_chunk_fwd, gdn_chunk_bwd).
 * Not written yet: both entries decline, and ttt_gated_delta_chunked composes the core of the
 * generic kernels. */
#include "cuda_internal.h"

int ttt__cu_gdn_chunk_fwd(ttt_backend_state *, ttt_tensor *, ttt_tensor *, ttt_tensor *, const ttt_tensor *,
                          const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *,
                          const ttt_tensor *, int64_t) {
    return TTT_BACKEND_DECLINED;
}

int ttt__cu_gdn_chunk_bwd(ttt_backend_state *, ttt_tensor *, ttt_tensor *, ttt_tensor *, ttt_tensor *, ttt_tensor *,
                          ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *,
                          const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, int64_t) {
    return TTT_BACKEND_DECLINED;
}
