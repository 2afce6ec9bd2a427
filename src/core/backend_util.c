/* Helpers shared by every backend: bf16 conversion, the backend error slot and
 * the registry of compiled-in backends. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ttt/backend.h"

static _Thread_local char backend_msg[512];

void ttt_backend_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(backend_msg, sizeof backend_msg, fmt, ap);
    va_end(ap);
}

const char *ttt_backend_last_error(void) { return backend_msg; }

uint16_t ttt_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x40); /* keep NaN a NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                   /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float ttt_bf16_to_f32(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

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
