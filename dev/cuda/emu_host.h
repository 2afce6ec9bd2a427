/* What cuda_internal.h gives the kernels, for the host types the emulator tests run them on (f32, f64):
 * THREADS, Acc<T>, ld(), st<T>(), st_f<T>() and GRID_LOOP. Include after emu.h, before the kernels' headers. */
#ifndef TTT_EMU_HOST_H
#define TTT_EMU_HOST_H

enum { THREADS = 256 };
template <typename T> struct Acc { typedef T type; };
static inline float ld(float v) { return v; }
static inline double ld(double v) { return v; }
template <typename T> inline T st(double v) { return (T)v; }
template <typename T> inline T st_f(typename Acc<T>::type v) { return (T)v; }
#define GRID_LOOP(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

#endif
