/* one_hot.c: the one_hot scatter (the op has checked the labels' range). */
#include "cpu_kernels.h"

int cpu_kernel_one_hot(const fdm_kview *out, const fdm_kview *labels, int64_t n) {
  int64_t *po = out->data;
  const int64_t *pl = labels->data;
  int64_t nl = fdm_kview_numel(labels);
  for (int64_t i = 0; i < nl; i++) po[i * n + pl[i]] = 1;
  return 0;
}
