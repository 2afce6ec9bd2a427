/* The public runtime API (ttt/runtime.h): devices, synchronize and memory
 * statistics for programs, over the backend interface they do not include. */
#include <stdio.h>
#include <string.h>

#include "ttt/runtime.h"
#include "internal.h"

const char *ttt_runtime_error(void) { return ttt_backend_last_error(); }

/* The registry of compiled-in backends. It lives here, above the backends,
 * so that the helpers they use (backend_util.c) depend on none of them. */
const ttt_backend *ttt_backend_for(ttt_device device) {
    switch (device) {
    case TTT_CPU: return ttt_backend_cpu();
#ifdef TTT_HAVE_CUDA
    case TTT_CUDA: return ttt_backend_cuda();
#endif
    default:
        ttt_backend_error("device %d: this build has no backend for it (CUDA needs a build with nvcc)", (int)device);
        return NULL;
    }
}

int ttt_device_count(ttt_device device) {
    if (device != TTT_CPU && device != TTT_CUDA) return 0;
    const ttt_backend *be = ttt_backend_for(device);
    if (!be) return 0;
    return be->device_count ? be->device_count() : 1;
}

int ttt_device_name(ttt_device device, int index, char *buf, size_t len) {
    if (!buf || len == 0) {
        ttt_backend_error("ttt_device_name: no output buffer");
        return TTT_ERR;
    }
    buf[0] = '\0';
    int n = ttt_device_count(device);
    if (index < 0 || index >= n) {
        ttt_backend_error("ttt_device_name: device %d of kind %d does not exist (%d present)", index, (int)device, n);
        return TTT_ERR;
    }
    const ttt_backend *be = ttt_backend_for(device);
    if (be->device_name) return be->device_name(index, buf, len);
    snprintf(buf, len, "%s", be->name);
    return TTT_OK;
}

int ttt_synchronize(ttt_ctx *ctx) {
    if (!ctx) return TTT_ERR;
    if (ctx->be->synchronize && ctx->be->synchronize(ctx->bs) != TTT_OK) return ttt__backend_failed(ctx, "synchronize");
    return TTT_OK;
}

int ttt_ctx_memory_stats(ttt_ctx *ctx, ttt_memory_stats *out) {
    if (!ctx || !out) return TTT_ERR;
    memset(out, 0, sizeof *out);
    if (ctx->be->memory_stats) ctx->be->memory_stats(ctx->bs, &out->reserved, &out->in_use, &out->driver_allocs);
    return TTT_OK;
}
