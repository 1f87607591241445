/*
** cuda_autocast.cuh: autocast on the GPU (fdm_kernels_nn.h, "autocast").
** The float32 operands of a product are narrowed to bfloat16 (or float16)
** into scratch by this plugin's own conversion kernel, rounding to nearest
** even bit for bit as runtime/core/dtype.c (so the CPU and the GPU multiply
** the same numbers); cuBLAS then multiplies them on tensor cores with float32
** accumulation (CUBLAS_COMPUTE_32F) and a float32 result, cuDNN with float
** compute (its bfloat16 configuration: images and filter in bfloat16, the
** result too, widened back to float32 by the same conversion kernel).
*/
#ifndef FDM_CUDA_AUTOCAST_CUH
#define FDM_CUDA_AUTOCAST_CUH
#include "cuda_kernels.h"

/* the cuBLAS / cuDNN type of an autocast dtype (FDM_BFLOAT16 or FDM_FLOAT16) */
static inline cudaDataType_t cuda_autocast_blas_type(fdm_dtype d) {
  return d == FDM_FLOAT16 ? CUDA_R_16F : CUDA_R_16BF;
}
static inline cudnnDataType_t cuda_autocast_cudnn_type(fdm_dtype d) {
  return d == FDM_FLOAT16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
}

/* dst[i] = src[i] converted from `from` to `to` (float32, float16, bfloat16),
** i < n, contiguous, on the stream */
int cuda_autocast_convert(const char *op, const void *src, fdm_dtype from, int64_t n, void *dst, fdm_dtype to);

/* a scratch block holding v's extent (its first to its last addressed element,
** so v's strides stay valid over it) narrowed to `to` */
typedef struct {
  void *p;          /* NULL where the source was NULL; the source's own data when it has the dtype already */
  size_t bytes;     /* 0 for a borrowed source */
} cuda_narrowed;
/* out[i] for each of the n views (a NULL in[i] gives an empty out[i]); -1 with
** the error set and nothing held when memory runs out */
int cuda_autocast_operands(const char *op, fdm_dtype to, int n, const fdm_kview *const *in, cuda_narrowed *out);
/* gives the blocks back (right after the work using them is queued: the one
** stream orders their reuse) */
void cuda_autocast_release(int n, cuda_narrowed *r);
#endif
