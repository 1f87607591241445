/* optim.c: fused Adam/AdamW. The float operations follow torch.optim's
** order (mul_ then add_, addcmul_, sqrt / bc2_sqrt + eps, addcdiv_) so the
** results match PyTorch; one pass instead of ten over each parameter. */
#include <math.h>
#include "cpu_optim.h"
#include "cpu_kernels.h"

void cpu_adam_step(int64_t n, const cpu_adam_params *a, float *p, const float *g, float *m,
                   float *v, float *vmax) {
  const float b1 = a->beta1, b2 = a->beta2, lr = a->lr, wd = a->weight_decay, eps = a->eps;
  const float bc1 = 1.0f - (float)pow(b1, (double)a->step);
  const float bc2 = 1.0f - (float)pow(b2, (double)a->step);
  const float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2);
  const float decay = 1.0f - lr * wd;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) {
    float gi = a->maximize ? -g[i] : g[i];
    float pi = p[i];
    if (wd != 0.0f) {
      if (a->decoupled) pi *= decay;
      else gi = gi + wd * pi;
    }
    float mi = m[i] * b1 + (1.0f - b1) * gi;
    float vi = v[i] * b2 + (1.0f - b2) * (gi * gi);
    m[i] = mi; v[i] = vi;
    float vs = vi;
    if (vmax) { vs = vmax[i] > vi ? vmax[i] : vi; vmax[i] = vs; }
    float denom = sqrtf(vs) / bc2_sqrt + eps;
    p[i] = pi + (-step_size) * (mi / denom);
  }
}

int cpu_kernel_adam(const fdm_adam_params *a, const fdm_kview *p, const fdm_kview *g, const fdm_kview *m,
                    const fdm_kview *v, const fdm_kview *vmax) {
  cpu_adam_step(fdm_kview_numel(p), a, p->data, g->data, m->data, v->data, vmax ? (float *)vmax->data : NULL);
  return 0;
}

int cpu_kernel_adam_multi(const fdm_adam_params *a, int n, const fdm_kview *p, const fdm_kview *g,
                          const fdm_kview *m, const fdm_kview *v, const fdm_kview *vmax) {
  for (int i = 0; i < n; i++)
    if (cpu_kernel_adam(a, &p[i], &g[i], &m[i], &v[i], vmax ? &vmax[i] : NULL)) return -1;
  return 0;
}

/* lr and step read from (host) memory, then exactly adam_multi */
int cpu_kernel_adam_multi_at(const fdm_adam_params *a, const fdm_kview *lr, const fdm_kview *step, int n,
                             const fdm_kview *p, const fdm_kview *g, const fdm_kview *m, const fdm_kview *v,
                             const fdm_kview *vmax) {
  fdm_adam_params at = *a;
  at.lr = *(const float *)lr->data;
  at.step = *(const int64_t *)step->data;
  return cpu_kernel_adam_multi(&at, n, p, g, m, v, vmax);
}
