/* core_optim.cu: the fused Adam/AdamW step of kernels/cpu/optim.c (torch.optim
** 1.13's order of float operations), one pass over each parameter, and the
** multi-tensor form (adam_multi: up to 24 parameters per launch); the bias
** corrections are computed on the host exactly as the CPU does, or for
** adam_multi_at (CUDA graphs) by one device thread from lr and step in
** device memory. */
#include "cuda_iter.cuh"

struct adam_consts {
  float b1, b2, eps, wd, decay, step_size, bc2_sqrt;
  int decoupled, maximize;
};

static __device__ __forceinline__ void adam_one(const adam_consts &c, int64_t i, float *p, const float *g, float *m,
                                                float *v, float *vmax) {
  float gi = c.maximize ? -g[i] : g[i];
  float pi = p[i];
  if (c.wd != 0.0f) {
    if (c.decoupled) pi *= c.decay;
    else gi = gi + c.wd * pi;
  }
  float mi = m[i] * c.b1 + (1.0f - c.b1) * gi;
  float vi = v[i] * c.b2 + (1.0f - c.b2) * (gi * gi);
  m[i] = mi;
  v[i] = vi;
  float vs = vi;
  if (vmax) { vs = vmax[i] > vi ? vmax[i] : vi; vmax[i] = vs; }
  float denom = sqrtf(vs) / c.bc2_sqrt + c.eps;
  p[i] = pi + (-c.step_size) * (mi / denom);
}

static __global__ void adam_k(adam_consts c, int64_t n, float *p, const float *g, float *m, float *v, float *vmax) {
  CI_FOR(i, n) adam_one(c, i, p, g, m, v, vmax);
}

/* up to AM_CHUNK parameters per launch, their pointers in the kernel's
** arguments (no upload, no synchronisation); blockIdx.y picks the tensor */
#define AM_CHUNK 24
struct adam_chunk {
  int64_t numel[AM_CHUNK];
  float *p[AM_CHUNK], *m[AM_CHUNK], *v[AM_CHUNK], *vmax[AM_CHUNK];
  const float *g[AM_CHUNK];
};

/* the constants are the launch's argument c, or with cp non-NULL read from
** device memory (adam_multi_at: computed there by consts_at_k) */
static __global__ void adam_multi_k(adam_consts c, const adam_consts *cp, adam_chunk ch) {
  const adam_consts cc = cp ? *cp : c;
  int k = blockIdx.y;
  int64_t n = ch.numel[k];
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    adam_one(cc, i, ch.p[k], ch.g[k], ch.m[k], ch.v[k], ch.vmax[k]);
}

/* the bias corrections exactly as kernels/cpu/optim.c, for a learning rate
** and step given on the host or read on the device */
static __host__ __device__ adam_consts consts_for(const fdm_adam_params &a, float lr, int64_t step) {
  adam_consts c;
  const float b1 = a.beta1, b2 = a.beta2;
  const float bc1 = 1.0f - (float)pow((double)b1, (double)step);
  const float bc2 = 1.0f - (float)pow((double)b2, (double)step);
  c.b1 = b1; c.b2 = b2; c.eps = a.eps; c.wd = a.weight_decay;
  c.step_size = lr / bc1;
  c.bc2_sqrt = sqrtf(bc2);
  c.decay = 1.0f - lr * a.weight_decay;
  c.decoupled = a.decoupled;
  c.maximize = a.maximize;
  return c;
}

static adam_consts consts_of(const fdm_adam_params *a) { return consts_for(*a, a->lr, a->step); }

static __global__ void consts_at_k(fdm_adam_params a, const float *lr, const int64_t *step, adam_consts *out) {
  *out = consts_for(a, *lr, *step);
}

extern "C" int cuda_kernel_adam(const fdm_adam_params *a, const fdm_kview *p, const fdm_kview *g, const fdm_kview *m,
                                const fdm_kview *v, const fdm_kview *vmax) {
  int64_t n = fdm_kview_numel(p);
  if (n == 0) return 0;
  adam_k<<<fdm_cuda_blocks(n, 256), 256, 0, fdm_cuda_stream()>>>(
      consts_of(a), n, (float *)p->data, (const float *)g->data, (float *)m->data, (float *)v->data,
      vmax ? (float *)vmax->data : (float *)NULL);
  return fdm_cuda_launched("adam");
}

/* one launch per AM_CHUNK parameters; cp as adam_multi_k's */
static int adam_chunks(adam_consts c, const adam_consts *cp, int n, const fdm_kview *p, const fdm_kview *g,
                       const fdm_kview *m, const fdm_kview *v, const fdm_kview *vmax) {
  for (int first = 0; first < n; first += AM_CHUNK) {
    adam_chunk ch;
    int cnt = n - first < AM_CHUNK ? n - first : AM_CHUNK;
    int64_t most = 0;
    for (int k = 0; k < cnt; k++) {
      int i = first + k;
      ch.numel[k] = fdm_kview_numel(&p[i]);
      ch.p[k] = (float *)p[i].data; ch.g[k] = (const float *)g[i].data;
      ch.m[k] = (float *)m[i].data; ch.v[k] = (float *)v[i].data;
      ch.vmax[k] = vmax ? (float *)vmax[i].data : (float *)NULL;
      if (ch.numel[k] > most) most = ch.numel[k];
    }
    if (most == 0) continue;
    unsigned bx = fdm_cuda_blocks(most, 256);
    if (bx > 1024) bx = 1024;
    adam_multi_k<<<dim3(bx, (unsigned)cnt), 256, 0, fdm_cuda_stream()>>>(c, cp, ch);
    if (fdm_cuda_launched("adam")) return -1;
  }
  return 0;
}

extern "C" int cuda_kernel_adam_multi(const fdm_adam_params *a, int n, const fdm_kview *p, const fdm_kview *g,
                                      const fdm_kview *m, const fdm_kview *v, const fdm_kview *vmax) {
  return adam_chunks(consts_of(a), NULL, n, p, g, m, v, vmax);
}

/* the constants are computed on the device from lr and step into a scratch
** block, released once the launches are queued (the stream orders its reuse) */
extern "C" int cuda_kernel_adam_multi_at(const fdm_adam_params *a, const fdm_kview *lr, const fdm_kview *step, int n,
                                         const fdm_kview *p, const fdm_kview *g, const fdm_kview *m,
                                         const fdm_kview *v, const fdm_kview *vmax) {
  adam_consts *cp = (adam_consts *)fdm_cuda_scratch_alloc(sizeof(adam_consts), "adam");
  if (!cp) return -1;
  consts_at_k<<<1, 1, 0, fdm_cuda_stream()>>>(*a, (const float *)lr->data, (const int64_t *)step->data, cp);
  int rc = fdm_cuda_launched("adam");
  if (!rc) rc = adam_chunks(adam_consts{}, cp, n, p, g, m, v, vmax);
  fdm_cuda_scratch_release(cp, sizeof(adam_consts));
  return rc;
}
