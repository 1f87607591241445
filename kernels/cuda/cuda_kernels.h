/*
** cuda_kernels.h: the CUDA backend's entries of the kernel table and the
** services every .cu file of kernels/cuda shares (kernels/cuda/cuda_backend.cu).
**
** Each slot <name> of FDM_ALL_KERNELS (fdm_kernels.h) is filled with
** cuda_kernel_<name>. They are declared weak here: a kernel defined in some
** .cu file of kernels/cuda fills its slot, one nobody wrote leaves the slot
** NULL, and the op then fails with "not implemented on device 'cuda'" (no
** silent fallback to the CPU). Define a kernel as
**     extern "C" int cuda_kernel_<slot>(...) { ... }
** with this header included; it returns 0, or -1 after fdm_cuda_seterror().
**
** The services the kernels share (stream, handles, scratch, errors) are in
** cuda_common.h.
*/
#ifndef FDM_CUDA_KERNELS_H
#define FDM_CUDA_KERNELS_H
#include "cuda_common.h"

extern "C" {
#define FDM_CUDA_KERNEL_DECL(name, params) int cuda_kernel_##name params __attribute__((weak, visibility("hidden")));
FDM_ALL_KERNELS(FDM_CUDA_KERNEL_DECL)
#undef FDM_CUDA_KERNEL_DECL
}

/* a grid for n elements handled by a grid-stride loop of `threads` per block */
static inline unsigned fdm_cuda_blocks(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 16) b = 65535LL * 16;
  return (unsigned)b;
}
#endif
