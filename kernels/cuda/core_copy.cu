/* core_copy.cu: strided copy with dtype conversion (float16/bfloat16 bit for
** bit as runtime/core/dtype.c) and fill, over broadcast views. */
#include "cuda_iter.cuh"

extern "C" int cuda_kernel_copy(const fdm_kview *dst, const fdm_kview *src) {
  const fdm_kview *ops[2] = {dst, src};
  char *pd = (char *)dst->data;
  const char *ps = (const char *)src->data;
  if (dst->dtype == src->dtype) {
    size_t es = ci_dtype_size(dst->dtype);
    cuda_iter<2> it = cuda_iter_make<2>(ops);
    if (it.numel == 0) return 0;
    if (it.nd == 1 && it.st[0][0] == 1 && it.st[1][0] == 1)
      return fdm_cuda_check(cudaMemcpyAsync(pd, ps, it.numel * es, cudaMemcpyDeviceToDevice, fdm_cuda_stream()),
                            "copy");
    switch (es) {
      case 8: return cuda_iter_run<2>("copy", ops, [=] __device__(const int64_t *o) {
          ((uint64_t *)pd)[o[0]] = ((const uint64_t *)ps)[o[1]]; });
      case 4: return cuda_iter_run<2>("copy", ops, [=] __device__(const int64_t *o) {
          ((uint32_t *)pd)[o[0]] = ((const uint32_t *)ps)[o[1]]; });
      case 2: return cuda_iter_run<2>("copy", ops, [=] __device__(const int64_t *o) {
          ((uint16_t *)pd)[o[0]] = ((const uint16_t *)ps)[o[1]]; });
      default: return cuda_iter_run<2>("copy", ops, [=] __device__(const int64_t *o) { pd[o[0]] = ps[o[1]]; });
    }
  }
  fdm_dtype dd = dst->dtype, sd = src->dtype;
  if (dd == FDM_FLOAT32 && sd == FDM_INT64)   /* one rounding, as the CPU's (float)int64 */
    return cuda_iter_run<2>("copy", ops, [=] __device__(const int64_t *o) {
      ((float *)pd)[o[0]] = (float)((const int64_t *)ps)[o[1]]; });
  return cuda_iter_run<2>("copy", ops, [=] __device__(const int64_t *o) { ci_store(pd, dd, o[0], ci_load(ps, sd, o[1])); });
}

extern "C" int cuda_kernel_fill(const fdm_kview *dst, double v) {
  const fdm_kview *ops[1] = {dst};
  void *p = dst->data;
  fdm_dtype dt = dst->dtype;
  if (dt == FDM_FLOAT32) {
    float f = (float)v;
    return cuda_iter_run<1>("fill", ops, [=] __device__(const int64_t *o) { ((float *)p)[o[0]] = f; });
  }
  return cuda_iter_run<1>("fill", ops, [=] __device__(const int64_t *o) { ci_store(p, dt, o[0], v); });
}
