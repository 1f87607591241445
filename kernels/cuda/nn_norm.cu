/*
** nn_norm.cu: batch norm (with the fused exact-erf GELU of the UNets'
** Conv -> BN -> GELU), group norm and layer norm, forward and backward, with
** the semantics of kernels/cpu/norm.c: statistics in double over values
** shifted by a per-slice pivot (the slice's first element), biased variance
** for normalising, the UNBIASED variance and momentum for the running
** statistics, eval mode on the running statistics (save_mean/save_invstd
** still filled), batch statistics when there are no running statistics.
**
** Batch norm reduces each channel over N*S elements spread over the whole
** tensor, so it runs in three launches: partial sums of (split, channel)
** blocks into the plugin's scratch, a per-channel finalize (statistics,
** running update, or the backward's per-channel coefficients), and an
** elementwise pass. The fused batch_norm_gelu backward recomputes
** gy * gelu'(pre) in both the reduction and the elementwise pass instead of
** storing it (the slot's work buffer is not needed).
** Group and layer norm reduce contiguous slices: one block per slice
** computes the statistics and writes the output in the same launch;
** group_norm_act also scales, shifts and activates there.
*/
#include "nn_common.cuh"

#define BN_THREADS 256
#define BN_MIN_PER_BLOCK 8192  /* elements of one channel per reduction block, at least */
#define BN_MAX_SPLITS 64

/* walks the elements i = lo + threadIdx.x, += blockDim.x, of channel c in x [N, C, S]
** (i < N*S) as (n, r) without a division per element: a = (n*C + c)*S + r */
struct bn_walk {
  int64_t n, r, S, C;
  int c;
  /* S_ >= 1 whenever an element is walked (tot = N*S > 0) */
  __device__ bn_walk(int64_t i, int64_t S_, int C_, int c_)
      : n(S_ > 0 ? i / S_ : 0), r(S_ > 0 ? i - (i / S_) * S_ : 0), S(S_), C(C_), c(c_) {}
  __device__ int64_t at() const { return (n * C + c) * S + r; }
  __device__ void next(int step) {
    r += step;
    while (r >= S) { r -= S; n++; }
  }
};

static int bn_splits(int64_t per_channel) {
  int64_t s = per_channel / BN_MIN_PER_BLOCK;
  if (s < 1) s = 1;
  if (s > BN_MAX_SPLITS) s = BN_MAX_SPLITS;
  return (int)s;
}

static __device__ __forceinline__ float bn_grad_in(const float *gy, const float *pre, int64_t a) {
  return pre ? gy[a] * nn_gelu_grad(pre[a]) : gy[a];
}

/* ---- forward: partial shifted sums (k = the channel's first element) ---- */
static __global__ void bn_partial_stats(const float *x, int C, int64_t S, int64_t tot, int splits, double *part) {
  __shared__ double sh[64];
  int c = blockIdx.x, j = blockIdx.y;
  int64_t chunk = (tot + splits - 1) / splits, lo = (int64_t)j * chunk, hi = lo + chunk < tot ? lo + chunk : tot;
  double k = tot ? (double)x[(int64_t)c * S] : 0.0, s1 = 0.0, s2 = 0.0;
  bn_walk w(lo + threadIdx.x, S, C, c);
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x, w.next(blockDim.x)) {
    double d = (double)x[w.at()] - k;
    s1 += d;
    s2 += d * d;
  }
  nn_block_sum2(s1, s2, sh);
  if (threadIdx.x == 0) {
    part[((int64_t)c * splits + j) * 2] = s1;
    part[((int64_t)c * splits + j) * 2 + 1] = s2;
  }
}

static __global__ void bn_finalize_stats(const float *x, int C, int64_t S, int64_t n, int splits,
                                         const double *part, float *rm, float *rv, int training, float momentum,
                                         float eps, float *save_mean, float *save_invstd) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double k = n ? (double)x[(int64_t)c * S] : 0.0, s1 = 0.0, s2 = 0.0;
  for (int j = 0; j < splits; j++) {
    s1 += part[((int64_t)c * splits + j) * 2];
    s2 += part[((int64_t)c * splits + j) * 2 + 1];
  }
  double m = n ? s1 / n : 0.0, var = n ? s2 / n - m * m : 0.0;
  if (var < 0) var = 0;
  double mean = k + m;
  save_mean[c] = (float)mean;
  save_invstd[c] = (float)(1.0 / sqrt(var + eps));
  if (training && rm) rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mean);
  if (training && rv) {
    double unbiased = n > 1 ? var * n / (n - 1) : var;
    rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * unbiased);
  }
}

static __global__ void bn_eval_stats(int C, const float *rm, const float *rv, float eps, float *save_mean,
                                     float *save_invstd) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  save_mean[c] = rm[c];
  save_invstd[c] = (float)(1.0 / sqrt((double)rv[c] + eps));
}

/* y = (x - mean) * w * invstd + b; with pre: pre = that, y = gelu(pre) */
template <typename I>
static __global__ void bn_apply(const float *x, const float *w, const float *b, const float *mean,
                                const float *invstd, I C, I S, I total, float *pre, float *y) {
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
    int c = (int)((i / S) % C);
    float a = (w ? w[c] : 1.0f) * invstd[c], sh = b ? b[c] : 0.0f;
    float v = (x[i] - mean[c]) * a + sh;
    if (pre) {
      pre[i] = v;
      y[i] = nn_gelu(v);
    } else {
      y[i] = v;
    }
  }
}

/* the same, one block per row (n, c) of S >= 32 elements: no division per element */
static __global__ void bn_apply_rows(const float *x, const float *w, const float *b, const float *mean,
                                     const float *invstd, int C, int64_t S, float *pre, float *y) {
  int64_t row = blockIdx.x, off = row * S;
  int c = (int)(row % C);
  float a = (w ? w[c] : 1.0f) * invstd[c], sh = b ? b[c] : 0.0f, m = mean[c];
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
    float v = (x[off + s] - m) * a + sh;
    if (pre) {
      pre[off + s] = v;
      y[off + s] = nn_gelu(v);
    } else {
      y[off + s] = v;
    }
  }
}

/* ---- backward: partial (sum g, sum g*(x - mean)) per (split, channel) ---- */
static __global__ void bn_partial_grad(const float *x, const float *gy, const float *pre, const float *mean, int C,
                                       int64_t S, int64_t tot, int splits, double *part) {
  __shared__ double sh[64];
  int c = blockIdx.x, j = blockIdx.y;
  int64_t chunk = (tot + splits - 1) / splits, lo = (int64_t)j * chunk, hi = lo + chunk < tot ? lo + chunk : tot;
  double m = mean[c], sg = 0.0, sgx = 0.0;
  bn_walk w(lo + threadIdx.x, S, C, c);
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x, w.next(blockDim.x)) {
    int64_t a = w.at();
    double g = bn_grad_in(gy, pre, a);
    sg += g;
    sgx += g * ((double)x[a] - m);
  }
  nn_block_sum2(sg, sgx, sh);
  if (threadIdx.x == 0) {
    part[((int64_t)c * splits + j) * 2] = sg;
    part[((int64_t)c * splits + j) * 2 + 1] = sgx;
  }
}

/* gweight, gbias and coef[c] = {fa, fb, fc, mean}: gx = fa*g + fb*(x - mean) + fc */
static __global__ void bn_finalize_grad(int C, int64_t n, int splits, const double *part, const float *w,
                                        const float *save_mean, const float *save_invstd, int training,
                                        float *gweight, float *gbias, float *coef) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double sg = 0.0, sgx = 0.0, invstd = save_invstd[c];
  if (part)
    for (int j = 0; j < splits; j++) {
      sg += part[((int64_t)c * splits + j) * 2];
      sgx += part[((int64_t)c * splits + j) * 2 + 1];
    }
  if (gweight) gweight[c] = (float)(sgx * invstd);
  if (gbias) gbias[c] = (float)sg;
  double k = (w ? w[c] : 1.0) * invstd, gb = 0.0, gc = 0.0;
  if (training && n > 0) {
    gb = -k * sgx * invstd * invstd / n;
    gc = -k * sg / n;
  }
  coef[4 * c] = (float)k;
  coef[4 * c + 1] = (float)gb;
  coef[4 * c + 2] = (float)gc;
  coef[4 * c + 3] = save_mean[c];
}

template <typename I>
static __global__ void bn_apply_grad(const float *x, const float *gy, const float *pre, const float *coef, I C, I S,
                                     I total, float *gx) {
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (I)gridDim.x * blockDim.x) {
    int c = (int)((i / S) % C);
    const float *k = coef + 4 * c;
    gx[i] = k[0] * bn_grad_in(gy, pre, (int64_t)i) + k[1] * (x[i] - k[3]) + k[2];
  }
}

static __global__ void bn_apply_grad_rows(const float *x, const float *gy, const float *pre, const float *coef, int C,
                                         int64_t S, float *gx) {
  int64_t row = blockIdx.x, off = row * S;
  const float *k = coef + 4 * (int)(row % C);
  float ka = k[0], kb = k[1], kc = k[2], km = k[3];
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x)
    gx[off + s] = ka * bn_grad_in(gy, pre, off + s) + kb * (x[off + s] - km) + kc;
}

/* one block per row when rows are long enough, else the flat grid-stride kernels */
#define BN_ROW_MIN 32
static int row_threads_for(int64_t S) { return S >= 512 ? 256 : 128; }

static unsigned grid_for(int64_t total) { return nn_blocks(total); }

static int bn_forward(const char *op, const fdm_batch_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                      const fdm_kview *bias, const fdm_kview *rm, const fdm_kview *rv, const fdm_kview *pre,
                      const fdm_kview *y, const fdm_kview *save_mean, const fdm_kview *save_invstd) {
  cudaStream_t st = fdm_cuda_stream();
  int C = p->C;
  int64_t S = p->S, n = (int64_t)p->N * S, total = n * C;
  if (C <= 0) return 0;
  float *sm = nn_f(save_mean), *si = nn_f(save_invstd);
  if (!p->training && rm && rv) {
    bn_eval_stats<<<(C + 255) / 256, 256, 0, st>>>(C, nn_f(rm), nn_f(rv), p->eps, sm, si);
    NN_LAUNCHED(op);
  } else {
    int splits = bn_splits(n);
    double *part = (double *)fdm_cuda_scratch((size_t)C * splits * 2 * sizeof(double));
    if (!part) return -1;
    dim3 grid(C, splits);
    bn_partial_stats<<<grid, BN_THREADS, 0, st>>>(nn_f(x), C, S, n, splits, part);
    NN_LAUNCHED(op);
    bn_finalize_stats<<<(C + 255) / 256, 256, 0, st>>>(nn_f(x), C, S, n, splits, part, nn_f(rm), nn_f(rv),
                                                        p->training, p->momentum, p->eps, sm, si);
    NN_LAUNCHED(op);
  }
  if (total <= 0) return 0;
  if (S >= BN_ROW_MIN)
    bn_apply_rows<<<(unsigned)(total / S), row_threads_for(S), 0, st>>>(nn_f(x), nn_f(weight), nn_f(bias), sm, si, C,
                                                                        S, nn_f(pre), nn_f(y));
  else if (total < INT32_MAX)
    bn_apply<uint32_t><<<grid_for(total), NN_THREADS, 0, st>>>(nn_f(x), nn_f(weight), nn_f(bias), sm, si,
                                                              (uint32_t)C, (uint32_t)S, (uint32_t)total,
                                                              nn_f(pre), nn_f(y));
  else
    bn_apply<int64_t><<<grid_for(total), NN_THREADS, 0, st>>>(nn_f(x), nn_f(weight), nn_f(bias), sm, si, C, S,
                                                             total, nn_f(pre), nn_f(y));
  NN_LAUNCHED(op);
  return 0;
}

/* pre: batch_norm_gelu's saved pre-activation (g = gy * gelu'(pre)), else NULL */
static int bn_backward(const char *op, const fdm_batch_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                       const fdm_kview *save_mean, const fdm_kview *save_invstd, const fdm_kview *pre,
                       const fdm_kview *gy, const fdm_kview *gx, const fdm_kview *gweight, const fdm_kview *gbias) {
  cudaStream_t st = fdm_cuda_stream();
  int C = p->C;
  int64_t S = p->S, n = (int64_t)p->N * S, total = n * C;
  if (C <= 0) return 0;
  int need_sums = p->training || gweight || gbias;
  int splits = need_sums ? bn_splits(n) : 0;
  size_t part_bytes = (size_t)C * splits * 2 * sizeof(double);
  char *scratch = (char *)fdm_cuda_scratch(part_bytes + (size_t)C * 4 * sizeof(float));
  if (!scratch) return -1;
  double *part = need_sums ? (double *)scratch : (double *)0;
  float *coef = (float *)(scratch + part_bytes);
  const float *ppre = nn_f(pre);
  if (need_sums) {
    dim3 grid(C, splits);
    bn_partial_grad<<<grid, BN_THREADS, 0, st>>>(nn_f(x), nn_f(gy), ppre, nn_f(save_mean), C, S, n, splits,
                                                 part);
    NN_LAUNCHED(op);
  }
  bn_finalize_grad<<<(C + 255) / 256, 256, 0, st>>>(C, n, splits, part, nn_f(weight), nn_f(save_mean),
                                                     nn_f(save_invstd), p->training, nn_f(gweight), nn_f(gbias),
                                                     coef);
  NN_LAUNCHED(op);
  if (!gx || total <= 0) return 0;
  if (S >= BN_ROW_MIN)
    bn_apply_grad_rows<<<(unsigned)(total / S), row_threads_for(S), 0, st>>>(nn_f(x), nn_f(gy), ppre, coef, C, S,
                                                                             nn_f(gx));
  else if (total < INT32_MAX)
    bn_apply_grad<uint32_t><<<grid_for(total), NN_THREADS, 0, st>>>(nn_f(x), nn_f(gy), ppre, coef, (uint32_t)C,
                                                                   (uint32_t)S, (uint32_t)total, nn_f(gx));
  else
    bn_apply_grad<int64_t><<<grid_for(total), NN_THREADS, 0, st>>>(nn_f(x), nn_f(gy), ppre, coef, C, S, total,
                                                                  nn_f(gx));
  NN_LAUNCHED(op);
  return 0;
}

extern "C" int cuda_kernel_batch_norm_forward(const fdm_batch_norm_params *p, const fdm_kview *x,
                                              const fdm_kview *weight, const fdm_kview *bias,
                                              const fdm_kview *running_mean, const fdm_kview *running_var,
                                              const fdm_kview *y, const fdm_kview *save_mean,
                                              const fdm_kview *save_invstd) {
  return bn_forward("batch_norm", p, x, weight, bias, running_mean, running_var, NULL, y, save_mean, save_invstd);
}

extern "C" int cuda_kernel_batch_norm_gelu_forward(const fdm_batch_norm_params *p, const fdm_kview *x,
                                                   const fdm_kview *weight, const fdm_kview *bias,
                                                   const fdm_kview *running_mean, const fdm_kview *running_var,
                                                   const fdm_kview *pre, const fdm_kview *y,
                                                   const fdm_kview *save_mean, const fdm_kview *save_invstd) {
  return bn_forward("batch_norm_gelu", p, x, weight, bias, running_mean, running_var, pre, y, save_mean,
                    save_invstd);
}

extern "C" int cuda_kernel_batch_norm_backward(const fdm_batch_norm_params *p, const fdm_kview *x,
                                               const fdm_kview *weight, const fdm_kview *save_mean,
                                               const fdm_kview *save_invstd, const fdm_kview *gy,
                                               const fdm_kview *gx, const fdm_kview *gweight,
                                               const fdm_kview *gbias) {
  return bn_backward("batch_norm", p, x, weight, save_mean, save_invstd, NULL, gy, gx, gweight, gbias);
}

extern "C" int cuda_kernel_batch_norm_gelu_backward(const fdm_batch_norm_params *p, const fdm_kview *x,
                                                    const fdm_kview *weight, const fdm_kview *save_mean,
                                                    const fdm_kview *save_invstd, const fdm_kview *pre,
                                                    const fdm_kview *gy, const fdm_kview *work,
                                                    const fdm_kview *gx, const fdm_kview *gweight,
                                                    const fdm_kview *gbias) {
  (void)work;   /* gy * gelu'(pre) is recomputed where it is needed */
  return bn_backward("batch_norm_gelu", p, x, weight, save_mean, save_invstd, pre, gy, gx, gweight, gbias);
}

/* ---------------------------------------------------------------- group / layer norm */

/* the mean and 1/sqrt(biased variance + eps) of the slice's L values, by the whole block, into stat[0..1]
** (shared; every thread sees them on return) */
static __device__ void slice_stats(const float *xb, int64_t L, float eps, double *sh, float *stat) {
  double k = L ? (double)xb[0] : 0.0, s1 = 0.0, s2 = 0.0;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
    double d = (double)xb[i] - k;
    s1 += d;
    s2 += d * d;
  }
  nn_block_sum2(s1, s2, sh);
  if (threadIdx.x == 0) {
    double m = L ? s1 / L : 0.0, var = L ? s2 / L - m * m : 0.0;
    if (var < 0) var = 0;
    stat[0] = (float)(k + m);
    stat[1] = (float)(1.0 / sqrt(var + eps));
  }
  __syncthreads();
}

/* one block per slice of L contiguous elements (group norm: (n, g), Cg
** channels of S; layer norm: a row, Cg = 1 with S = D and per-element
** affine): statistics, then the normalised output */
static __global__ void gn_forward(const float *x, const float *w, const float *b, int G, int Cg, int64_t S,
                                  int layer, float eps, float *y, float *mean, float *rstd) {
  __shared__ double sh[64];
  __shared__ float stat[2];
  int64_t ng = blockIdx.x, L = (int64_t)Cg * S;
  const float *xb = x + ng * L;
  float *yb = y + ng * L;
  slice_stats(xb, L, eps, sh, stat);
  float fm = stat[0], fr = stat[1];
  if (threadIdx.x == 0) {
    mean[ng] = fm;
    rstd[ng] = fr;
  }
  int g = (int)(ng % G);
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
    int64_t c = layer ? i : g * Cg + i / S;
    if (layer)
      yb[i] = (xb[i] - fm) * fr * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    else
      yb[i] = (xb[i] - fm) * ((w ? w[c] : 1.0f) * fr) + (b ? b[c] : 0.0f);
  }
}

/* group_norm_act: one block per (n, g) slice as gn_forward, then y = act(gn(x) * scale + shift) with
** scale/shift per (n, c) */
static __global__ void gn_act_forward(const float *x, const float *w, const float *b, const float *scale,
                                      const float *shift, int C, int G, int Cg, int64_t S, fdm_act act, float eps,
                                      float *y) {
  __shared__ double sh[64];
  __shared__ float stat[2];
  int64_t ng = blockIdx.x, L = (int64_t)Cg * S, n = ng / G;
  const float *xb = x + ng * L;
  float *yb = y + ng * L;
  slice_stats(xb, L, eps, sh, stat);
  float fm = stat[0], fr = stat[1];
  int g = (int)(ng % G);
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
    int64_t c = g * Cg + i / S, nc = n * C + c;
    float h = (xb[i] - fm) * ((w ? w[c] : 1.0f) * fr) + (b ? b[c] : 0.0f);
    yb[i] = nn_act(act, h * (scale ? scale[nc] : 1.0f) + (shift ? shift[nc] : 0.0f));
  }
}

/* gx of one slice: gh = g*w, gx = r*w*g + fb*(x - mu) + fc, fb = -r^3 sum(gh (x-mu))/L, fc = -r sum(gh)/L */
static __global__ void gn_backward_data(const float *x, const float *w, const float *mean, const float *rstd,
                                        const float *gy, int G, int Cg, int64_t S, int layer, float *gx) {
  __shared__ double sh[64];
  int64_t ng = blockIdx.x, L = (int64_t)Cg * S;
  const float *xb = x + ng * L, *gb = gy + ng * L;
  float *ob = gx + ng * L;
  int g = (int)(ng % G);
  double mu = mean[ng], r = rstd[ng], s1 = 0.0, s2 = 0.0;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
    int64_t c = layer ? i : g * Cg + i / S;
    double gh = (double)gb[i] * (w ? (double)w[c] : 1.0);
    s1 += gh;
    s2 += gh * ((double)xb[i] - mu);
  }
  nn_block_sum2(s1, s2, sh);
  float fb = L ? (float)(-r * r * r * s2 / L) : 0.0f, fc = L ? (float)(-r * s1 / L) : 0.0f;
  float fm = (float)mu, fr = (float)r;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
    int64_t c = layer ? i : g * Cg + i / S;
    float fa = layer ? fr * (w ? w[c] : 1.0f) : (float)(r * (w ? (double)w[c] : 1.0));
    ob[i] = fa * gb[i] + fb * (xb[i] - fm) + fc;
  }
}

/* group norm gweight/gbias: one block per channel over its N planes */
static __global__ void gn_backward_affine(const float *x, const float *mean, const float *rstd, const float *gy,
                                          int N, int C, int G, int64_t S, float *gw, float *gb) {
  __shared__ double sh[64];
  int c = blockIdx.x, Cg = C / G;
  double sw = 0.0, sb = 0.0;
  int64_t tot = (int64_t)N * S;
  for (int64_t i = threadIdx.x; i < tot; i += blockDim.x) {
    int64_t n = i / S, s = i - n * S, ng = n * G + c / Cg, off = (n * C + c) * S + s;
    double g = gy[off];
    sb += g;
    sw += g * ((double)x[off] - (double)mean[ng]) * (double)rstd[ng];
  }
  nn_block_sum2(sw, sb, sh);
  if (threadIdx.x == 0) {
    if (gw) gw[c] = (float)sw;
    if (gb) gb[c] = (float)sb;
  }
}

/* layer norm gweight/gbias: 32 columns per block, 8 row lanes over the M rows */
static __global__ void ln_backward_affine(const float *x, const float *mean, const float *rstd, const float *gy,
                                          int M, int D, float *gw, float *gb) {
  __shared__ double pw[8][33], pb[8][33];
  int d = blockIdx.x * 32 + threadIdx.x;
  double sw = 0.0, sb = 0.0;
  if (d < D)
    for (int m = threadIdx.y; m < M; m += 8) {
      int64_t off = (int64_t)m * D + d;
      double g = gy[off];
      sw += g * ((double)x[off] - (double)mean[m]) * (double)rstd[m];
      sb += g;
    }
  pw[threadIdx.y][threadIdx.x] = sw;
  pb[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && d < D) {
    for (int r = 1; r < 8; r++) { sw += pw[r][threadIdx.x]; sb += pb[r][threadIdx.x]; }
    if (gw) gw[d] = (float)sw;
    if (gb) gb[d] = (float)sb;
  }
}

static int slice_threads(int64_t L) {
  int t = 32;
  while (t < 512 && t < L) t *= 2;
  return t;
}

extern "C" int cuda_kernel_group_norm_forward(const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                              const fdm_kview *bias, const fdm_kview *y, const fdm_kview *mean,
                                              const fdm_kview *rstd) {
  if (p->G <= 0) return fdm_cuda_seterror("group_norm: %d groups", p->G);
  int64_t blocks = (int64_t)p->N * p->G, L = (int64_t)(p->C / p->G) * p->S;
  if (blocks <= 0) return 0;
  gn_forward<<<(unsigned)blocks, slice_threads(L), 0, fdm_cuda_stream()>>>(
      nn_f(x), nn_f(weight), nn_f(bias), p->G, p->C / p->G, p->S, 0, p->eps, nn_f(y), nn_f(mean), nn_f(rstd));
  NN_LAUNCHED("group_norm");
  return 0;
}

extern "C" int cuda_kernel_group_norm_act_forward(const fdm_norm_params *p, fdm_act act, const fdm_kview *x,
                                                  const fdm_kview *weight, const fdm_kview *bias,
                                                  const fdm_kview *scale, const fdm_kview *shift,
                                                  const fdm_kview *y) {
  if (p->G <= 0) return fdm_cuda_seterror("group_norm_act: %d groups", p->G);
  int64_t blocks = (int64_t)p->N * p->G, L = (int64_t)(p->C / p->G) * p->S;
  if (blocks <= 0) return 0;
  gn_act_forward<<<(unsigned)blocks, slice_threads(L), 0, fdm_cuda_stream()>>>(
      nn_f(x), nn_f(weight), nn_f(bias), nn_f(scale), nn_f(shift), p->C, p->G, p->C / p->G, p->S, act, p->eps,
      nn_f(y));
  NN_LAUNCHED("group_norm_act");
  return 0;
}

extern "C" int cuda_kernel_group_norm_backward(const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                               const fdm_kview *mean, const fdm_kview *rstd, const fdm_kview *gy,
                                               const fdm_kview *gx, const fdm_kview *gweight,
                                               const fdm_kview *gbias) {
  if (p->G <= 0) return fdm_cuda_seterror("group_norm: %d groups", p->G);
  cudaStream_t st = fdm_cuda_stream();
  int64_t blocks = (int64_t)p->N * p->G, L = (int64_t)(p->C / p->G) * p->S;
  if (gx && blocks > 0) {
    gn_backward_data<<<(unsigned)blocks, slice_threads(L), 0, st>>>(nn_f(x), nn_f(weight), nn_f(mean), nn_f(rstd),
                                                                    nn_f(gy), p->G, p->C / p->G, p->S, 0, nn_f(gx));
    NN_LAUNCHED("group_norm");
  }
  if ((gweight || gbias) && p->C > 0) {
    gn_backward_affine<<<p->C, NN_THREADS, 0, st>>>(nn_f(x), nn_f(mean), nn_f(rstd), nn_f(gy), p->N, p->C, p->G,
                                                    p->S, nn_f(gweight), nn_f(gbias));
    NN_LAUNCHED("group_norm");
  }
  return 0;
}

/* layer norm: p->N rows of p->S elements */
extern "C" int cuda_kernel_layer_norm_forward(const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                              const fdm_kview *bias, const fdm_kview *y, const fdm_kview *mean,
                                              const fdm_kview *rstd) {
  if (p->N <= 0) return 0;
  gn_forward<<<(unsigned)p->N, slice_threads(p->S), 0, fdm_cuda_stream()>>>(
      nn_f(x), nn_f(weight), nn_f(bias), 1, 1, p->S, 1, p->eps, nn_f(y), nn_f(mean), nn_f(rstd));
  NN_LAUNCHED("layer_norm");
  return 0;
}

extern "C" int cuda_kernel_layer_norm_backward(const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                               const fdm_kview *mean, const fdm_kview *rstd, const fdm_kview *gy,
                                               const fdm_kview *gx, const fdm_kview *gweight,
                                               const fdm_kview *gbias) {
  cudaStream_t st = fdm_cuda_stream();
  if (gx && p->N > 0) {
    gn_backward_data<<<(unsigned)p->N, slice_threads(p->S), 0, st>>>(nn_f(x), nn_f(weight), nn_f(mean), nn_f(rstd),
                                                                     nn_f(gy), 1, 1, p->S, 1, nn_f(gx));
    NN_LAUNCHED("layer_norm");
  }
  if ((gweight || gbias) && p->S > 0) {
    dim3 blk(32, 8);
    ln_backward_affine<<<(unsigned)((p->S + 31) / 32), blk, 0, st>>>(nn_f(x), nn_f(mean), nn_f(rstd), nn_f(gy),
                                                                     p->N, p->S, nn_f(gweight), nn_f(gbias));
    NN_LAUNCHED("layer_norm");
  }
  return 0;
}
