/* The fused chunkwise SSD / linear-attention core (backend.h: ssd_chunk_fwd, ssd_chunk_bwd) on the GPU: not
 * written yet. Every TTT_KERNEL_LIST entry has a CUDA definition (cuda_backend.cu installs them all), so these
 * two decline every call, having written nothing; composed/ssd.c then leaves ttt_ssd_chunked and
 * ttt_linear_attention_chunked to their composed chunkwise forms of generic kernels, as before the CPU had the
 * fused op. The forward declining everything means no node is recorded, so the backward is never reached; it
 * declines as well, which the op reports as an error rather than computing anything. */
#include "cuda_internal.h"

int ttt__cu_ssd_chunk_fwd(ttt_backend_state *self, ttt_tensor *o, ttt_tensor *s_out, ttt_tensor *states,
                          const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v, const ttt_tensor *g,
                          const ttt_tensor *s0, int64_t chunk) {
    (void)self, (void)o, (void)s_out, (void)states, (void)q, (void)k, (void)v, (void)g, (void)s0, (void)chunk;
    return TTT_BACKEND_DECLINED;
}

int ttt__cu_ssd_chunk_bwd(ttt_backend_state *self, ttt_tensor *dq, ttt_tensor *dk, ttt_tensor *dv, ttt_tensor *dg,
                          ttt_tensor *ds0, const ttt_tensor *q, const ttt_tensor *k, const ttt_tensor *v,
                          const ttt_tensor *g, const ttt_tensor *states, const ttt_tensor *dout,
                          const ttt_tensor *ds_out, int64_t chunk) {
    (void)self, (void)dq, (void)dk, (void)dv, (void)dg, (void)ds0, (void)q, (void)k, (void)v, (void)g, (void)states,
        (void)dout, (void)ds_out, (void)chunk;
    return TTT_BACKEND_DECLINED;
}
