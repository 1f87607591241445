/* core_optim.cu: the fused Adam/AdamW step of kernels/cpu/optim.c (torch.optim
** 1.13's order of float operations), one pass over each parameter; the bias
** corrections are computed on the host exactly as the CPU does. */
#include "cuda_iter.cuh"

static __global__ void adam_k(int64_t n, float b1, float b2, float eps, float wd, float decay, float step_size,
                              float bc2_sqrt, int decoupled, int maximize, float *p, const float *g, float *m,
                              float *v, float *vmax) {
  CI_FOR(i, n) {
    float gi = maximize ? -g[i] : g[i];
    float pi = p[i];
    if (wd != 0.0f) {
      if (decoupled) pi *= decay;
      else gi = gi + wd * pi;
    }
    float mi = m[i] * b1 + (1.0f - b1) * gi;
    float vi = v[i] * b2 + (1.0f - b2) * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    float vs = vi;
    if (vmax) { vs = vmax[i] > vi ? vmax[i] : vi; vmax[i] = vs; }
    float denom = sqrtf(vs) / bc2_sqrt + eps;
    p[i] = pi + (-step_size) * (mi / denom);
  }
}

extern "C" int cuda_kernel_adam(const fdm_adam_params *a, const fdm_kview *p, const fdm_kview *g, const fdm_kview *m,
                                const fdm_kview *v, const fdm_kview *vmax) {
  int64_t n = fdm_kview_numel(p);
  if (n == 0) return 0;
  const float bc1 = 1.0f - (float)pow(a->beta1, (double)a->step);
  const float bc2 = 1.0f - (float)pow(a->beta2, (double)a->step);
  const float step_size = a->lr / bc1, bc2_sqrt = sqrtf(bc2);
  const float decay = 1.0f - a->lr * a->weight_decay;
  adam_k<<<fdm_cuda_blocks(n, 256), 256, 0, fdm_cuda_stream()>>>(
      n, a->beta1, a->beta2, a->eps, a->weight_decay, decay, step_size, bc2_sqrt, a->decoupled, a->maximize,
      (float *)p->data, (const float *)g->data, (float *)m->data, (float *)v->data,
      vmax ? (float *)vmax->data : (float *)NULL);
  return fdm_cuda_launched("adam");
}
