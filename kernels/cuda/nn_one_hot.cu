/* nn_one_hot.cu: out [.., n] (int64, zeroed by the op) gets 1 at each label
** (int64, in [0, n): checked by the op), one thread per label. */
#include "nn_common.cuh"

static __global__ void one_hot_set(int64_t *out, const int64_t *labels, int64_t nl, int64_t n) {
  NN_FOR(i, nl) out[i * n + labels[i]] = 1;
}

extern "C" int cuda_kernel_one_hot(const fdm_kview *out, const fdm_kview *labels, int64_t n) {
  int64_t nl = fdm_kview_numel(labels);
  if (nl <= 0 || n <= 0) return 0;
  one_hot_set<<<nn_blocks(nl), NN_THREADS, 0, fdm_cuda_stream()>>>((int64_t *)out->data,
                                                                   (const int64_t *)labels->data, nl, n);
  NN_LAUNCHED("one_hot");
  return 0;
}
