/*
** norm.c: batch, group and layer normalisation (PyTorch semantics).
** Statistics are accumulated in double (as ATen does on CPU) over values
** shifted by a per-slice pivot, so E[x^2]-E[x]^2 does not cancel even when
** |mean| >> std; the elementwise passes then run in float as (x - mean)*a + b.
*/
#include <math.h>
#include "cpu_nn.h"
#include "cpu_kernels.h"

#define PAR_MIN 32768 /* elements below which threading costs more than it saves */
#define GELU_SPAN 4096

/* sum and sum of squares of (x[i] - k) over n contiguous floats */
static inline void cpu_shifted_sums(const float *x, int64_t n, double k, double *s1, double *s2) {
  double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < n; i++) {
    double d = (double)x[i] - k;
    a += d;
    b += d * d;
  }
  *s1 += a;
  *s2 += b;
}

/* ---------------------------------------------------------------- batch norm */

/* Fill save_mean/save_invstd (and the running stats) for x [N, C, S].
** Without running stats there is nothing to evaluate with, so batch
** statistics are used in eval too (PyTorch's track_running_stats=False). */
static void cpu_bn_stats(int N, int C, int S, const float *x, float *running_mean,
                         float *running_var, int training, float momentum, float eps,
                         float *save_mean, float *save_invstd) {
  if (!training && running_mean && running_var) {
    for (int c = 0; c < C; c++) {
      save_mean[c] = running_mean[c];
      save_invstd[c] = (float)(1.0 / sqrt((double)running_var[c] + eps));
    }
    return;
  }
  int64_t n = (int64_t)N * S, total = n * C;
#pragma omp parallel for schedule(static) if (total >= PAR_MIN)
  for (int c = 0; c < C; c++) {
    double k = n ? x[(int64_t)c * S] : 0, s1 = 0, s2 = 0;
    for (int i = 0; i < N; i++) cpu_shifted_sums(x + ((int64_t)i * C + c) * S, S, k, &s1, &s2);
    double m = n ? s1 / n : 0;
    double var = n ? s2 / n - m * m : 0;
    if (var < 0) var = 0;
    double mean = k + m;
    save_mean[c] = (float)mean;
    save_invstd[c] = (float)(1.0 / sqrt(var + eps));
    if (training && running_mean)
      running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean);
    if (training && running_var) {
      double unbiased = n > 1 ? var * n / (n - 1) : var;
      running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * unbiased);
    }
  }
}

/* per-channel y = (x - mean)*scale + bias; subtracting the mean first (rather
** than folding it into the shift) keeps precision when |mean| >> std */
static inline void cpu_bn_affine(int c, const float *weight, const float *bias,
                                 const float *invstd, float *scale, float *shift) {
  *scale = (weight ? weight[c] : 1.0f) * invstd[c];
  *shift = bias ? bias[c] : 0.0f;
}

void cpu_batch_norm_forward(int N, int C, int S, const float *x, const float *weight,
                            const float *bias, float *running_mean, float *running_var,
                            int training, float momentum, float eps, float *y,
                            float *save_mean, float *save_invstd) {
  cpu_bn_stats(N, C, S, x, running_mean, running_var, training, momentum, eps, save_mean,
               save_invstd);
  int64_t rows = (int64_t)N * C;
#pragma omp parallel for schedule(static) if (rows * S >= PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    int c = (int)(r % C);
    float a, b, m = save_mean[c];
    cpu_bn_affine(c, weight, bias, save_invstd, &a, &b);
    const float *xr = x + r * S;
    float *yr = y + r * S;
#pragma omp simd
    for (int s = 0; s < S; s++) yr[s] = (xr[s] - m) * a + b;
  }
}

void cpu_batch_norm_gelu_forward(int N, int C, int S, const float *x, const float *weight,
                                 const float *bias, float *running_mean, float *running_var,
                                 int training, float momentum, float eps, float *pre, float *y,
                                 float *save_mean, float *save_invstd) {
  cpu_bn_stats(N, C, S, x, running_mean, running_var, training, momentum, eps, save_mean,
               save_invstd);
  /* blocks of whole rows, ~GELU_SPAN elements each: the GELU runs on pre while
  ** it is still in L1, and small S does not cost one call per row */
  int64_t rows = (int64_t)N * C, rb = S >= GELU_SPAN ? 1 : GELU_SPAN / (S > 0 ? S : 1);
  int64_t blocks = (rows + rb - 1) / rb;
#pragma omp parallel for schedule(static) if (rows * S >= PAR_MIN)
  for (int64_t bi = 0; bi < blocks; bi++) {
    int64_t r0 = bi * rb, r1 = r0 + rb < rows ? r0 + rb : rows;
    for (int64_t r = r0; r < r1; r++) {
      int c = (int)(r % C);
      float a, b, m = save_mean[c];
      cpu_bn_affine(c, weight, bias, save_invstd, &a, &b);
      const float *xr = x + r * S;
      float *pr = pre + r * S;
#pragma omp simd
      for (int s = 0; s < S; s++) pr[s] = (xr[s] - m) * a + b;
    }
    /* chunks stay below PAR_MIN, so cpu_gelu_forward does not nest threads */
    for (int64_t o = r0 * S, end = r1 * S; o < end; o += GELU_SPAN)
      cpu_gelu_forward(end - o < GELU_SPAN ? end - o : GELU_SPAN, pre + o, y + o);
  }
}

void cpu_batch_norm_backward(int N, int C, int S, const float *x, const float *weight,
                             const float *save_mean, const float *save_invstd, int training,
                             const float *gy, float *gx, float *gweight, float *gbias) {
  int64_t n = (int64_t)N * S, total = n * C;
  int need_sums = training || gweight || gbias;
#pragma omp parallel for schedule(static) if (total >= PAR_MIN)
  for (int c = 0; c < C; c++) {
    double mean = save_mean[c], invstd = save_invstd[c];
    double sg = 0, sgx = 0; /* sum gy, sum gy*(x-mean) */
    if (need_sums) {
      for (int i = 0; i < N; i++) {
        const float *xr = x + ((int64_t)i * C + c) * S, *gr = gy + ((int64_t)i * C + c) * S;
        double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (int s = 0; s < S; s++) {
          a += gr[s];
          b += (double)gr[s] * ((double)xr[s] - mean);
        }
        sg += a;
        sgx += b;
      }
    }
    if (gweight) gweight[c] = (float)(sgx * invstd);
    if (gbias) gbias[c] = (float)sg;
    if (!gx) continue;
    /* gx = k*(gy - mean(gy) - xhat*mean(gy*xhat)) = ga*gy + gb*(x-mean) + gc,
    ** k = w*invstd; eval has constant stats, so only the first term remains */
    double k = (weight ? weight[c] : 1.0) * invstd, gb = 0, gc = 0;
    if (training && n > 0) {
      gb = -k * sgx * invstd * invstd / n;
      gc = -k * sg / n;
    }
    float fa = (float)k, fb = (float)gb, fc = (float)gc, fm = (float)mean;
    for (int i = 0; i < N; i++) {
      int64_t off = ((int64_t)i * C + c) * S;
      const float *xr = x + off, *gr = gy + off;
      float *o = gx + off;
#pragma omp simd
      for (int s = 0; s < S; s++) o[s] = fa * gr[s] + fb * (xr[s] - fm) + fc;
    }
  }
}

/* ---------------------------------------------------------------- group norm */

/* mean and 1/sqrt(biased variance + eps) of the L values at xb */
static void slice_stats(const float *xb, int64_t L, float eps, float *mean, float *rstd) {
  double k = L ? xb[0] : 0, s1 = 0, s2 = 0;
  cpu_shifted_sums(xb, L, k, &s1, &s2);
  double m = L ? s1 / L : 0, var = L ? s2 / L - m * m : 0;
  if (var < 0) var = 0;
  *mean = (float)(k + m);
  *rstd = (float)(1.0 / sqrt(var + eps));
}

/* group norm over (n, g) slices; then, for group_norm_act, y * scale + shift per (n, c) and the activation
** in the same pass over the slice (the four ops in one: they are memory-bound on large maps, DeepFloyd IF's
** ResNet blocks). mean/rstd: NULL or [N*G]. The composite's formulas; roundings may differ by FMA contraction
** and libmvec's expf. */
static void group_norm_slices(int N, int C, int S, int G, fdm_act act, const float *x, const float *weight,
                              const float *bias, const float *scale, const float *shift, float eps, float *y,
                              float *mean, float *rstd) {
  if (G <= 0) return; /* the caller checks shapes; just never divide by zero */
  int Cg = C / G;
  int64_t L = (int64_t)Cg * S, blocks = (int64_t)N * G;
#pragma omp parallel for schedule(static) if (blocks * L >= PAR_MIN)
  for (int64_t ng = 0; ng < blocks; ng++) {
    const float *xb = x + ng * L;
    float fm, fr;
    slice_stats(xb, L, eps, &fm, &fr);
    if (mean) mean[ng] = fm;
    if (rstd) rstd[ng] = fr;
    int64_t n = ng / G;
    int g = (int)(ng % G);
    for (int j = 0; j < Cg; j++) {
      int c = g * Cg + j;
      float a = (weight ? weight[c] : 1.0f) * fr, b = bias ? bias[c] : 0.0f;
      const float *xr = xb + (int64_t)j * S;
      float *yr = y + ng * L + (int64_t)j * S;
      if (!scale && !shift) {
#pragma omp simd
        for (int s = 0; s < S; s++) yr[s] = (xr[s] - fm) * a + b;
      } else {
        float sc = scale ? scale[n * C + c] : 1.0f, sh = shift ? shift[n * C + c] : 0.0f;
#pragma omp simd
        for (int s = 0; s < S; s++) yr[s] = ((xr[s] - fm) * a + b) * sc + sh;
      }
      cpu_act_inplace(act, S, yr);
    }
  }
}

void cpu_group_norm_forward(int N, int C, int S, int G, const float *x, const float *weight,
                            const float *bias, float eps, float *y, float *mean, float *rstd) {
  group_norm_slices(N, C, S, G, FDM_ACT_NONE, x, weight, bias, NULL, NULL, eps, y, mean, rstd);
}

void cpu_group_norm_act_forward(int N, int C, int S, int G, fdm_act act, const float *x, const float *weight,
                                const float *bias, const float *scale, const float *shift, float eps, float *y) {
  group_norm_slices(N, C, S, G, act, x, weight, bias, scale, shift, eps, y, NULL, NULL);
}

void cpu_group_norm_backward(int N, int C, int S, int G, const float *x, const float *weight,
                             const float *mean, const float *rstd, const float *gy,
                             float *gx, float *gweight, float *gbias) {
  if (G <= 0) return;
  int Cg = C / G;
  int64_t L = (int64_t)Cg * S, blocks = (int64_t)N * G;
  if (gx) {
    /* gx = r*(gh - mean(gh) - xhat*mean(gh*xhat)), gh = gy*w, per (n, group) */
#pragma omp parallel for schedule(static) if (blocks * L >= PAR_MIN)
    for (int64_t ng = 0; ng < blocks; ng++) {
      int g = (int)(ng % G);
      double mu = mean[ng], r = rstd[ng], sh = 0, shx = 0; /* sum gh, sum gh*(x-mu) */
      for (int j = 0; j < Cg; j++) {
        const float *xr = x + ng * L + (int64_t)j * S, *gr = gy + ng * L + (int64_t)j * S;
        double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (int s = 0; s < S; s++) {
          a += gr[s];
          b += (double)gr[s] * ((double)xr[s] - mu);
        }
        double w = weight ? weight[g * Cg + j] : 1.0;
        sh += w * a;
        shx += w * b;
      }
      /* gx = r*w*gy + fb*(x-mu) + fc */
      float fb = L ? (float)(-r * r * r * shx / L) : 0.0f, fc = L ? (float)(-r * sh / L) : 0.0f;
      float fm = (float)mu;
      for (int j = 0; j < Cg; j++) {
        float fa = (float)(r * (weight ? weight[g * Cg + j] : 1.0));
        int64_t off = ng * L + (int64_t)j * S;
        const float *xr = x + off, *gr = gy + off;
        float *o = gx + off;
#pragma omp simd
        for (int s = 0; s < S; s++) o[s] = fa * gr[s] + fb * (xr[s] - fm) + fc;
      }
    }
  }
  if (gweight || gbias) {
    /* a separate pass per channel keeps the reduction over N race-free */
#pragma omp parallel for schedule(static) if ((int64_t)N * C * S >= PAR_MIN)
    for (int c = 0; c < C; c++) {
      double sw = 0, sb = 0;
      for (int i = 0; i < N; i++) {
        int64_t ng = (int64_t)i * G + c / Cg, off = ((int64_t)i * C + c) * S;
        const float *xr = x + off, *gr = gy + off;
        double mu = mean[ng], a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (int s = 0; s < S; s++) {
          a += gr[s];
          b += (double)gr[s] * ((double)xr[s] - mu);
        }
        sb += a;
        sw += b * rstd[ng];
      }
      if (gweight) gweight[c] = (float)sw;
      if (gbias) gbias[c] = (float)sb;
    }
  }
}

/* ---------------------------------------------------------------- layer norm */

void cpu_layer_norm_forward(int M, int D, const float *x, const float *weight,
                            const float *bias, float eps, float *y, float *mean, float *rstd) {
#pragma omp parallel for schedule(static) if ((int64_t)M * D >= PAR_MIN)
  for (int m = 0; m < M; m++) {
    const float *xr = x + (int64_t)m * D;
    float *yr = y + (int64_t)m * D;
    double k = D ? xr[0] : 0, s1 = 0, s2 = 0;
    cpu_shifted_sums(xr, D, k, &s1, &s2);
    double mu = D ? s1 / D : 0, var = D ? s2 / D - mu * mu : 0;
    if (var < 0) var = 0;
    float fm = (float)(k + mu), fr = (float)(1.0 / sqrt(var + eps));
    mean[m] = fm;
    rstd[m] = fr;
    if (weight || bias) {
      for (int d = 0; d < D; d++)
        yr[d] = (xr[d] - fm) * fr * (weight ? weight[d] : 1.0f) + (bias ? bias[d] : 0.0f);
    } else {
#pragma omp simd
      for (int d = 0; d < D; d++) yr[d] = (xr[d] - fm) * fr;
    }
  }
}

#define LN_COLS 256 /* column block for the gweight/gbias reduction over rows */

void cpu_layer_norm_backward(int M, int D, const float *x, const float *weight,
                             const float *mean, const float *rstd, const float *gy,
                             float *gx, float *gweight, float *gbias) {
  if (gx) {
#pragma omp parallel for schedule(static) if ((int64_t)M * D >= PAR_MIN)
    for (int m = 0; m < M; m++) {
      const float *xr = x + (int64_t)m * D, *gr = gy + (int64_t)m * D;
      float *o = gx + (int64_t)m * D;
      double mu = mean[m], r = rstd[m], sh = 0, shx = 0; /* sum gh, sum gh*(x-mu) */
#pragma omp simd reduction(+ : sh, shx)
      for (int d = 0; d < D; d++) {
        double gh = (double)gr[d] * (weight ? weight[d] : 1.0f);
        sh += gh;
        shx += gh * ((double)xr[d] - mu);
      }
      /* gx = r*w*gy + fb*(x-mu) + fc */
      float fr = (float)r, fm = (float)mu, fb = D ? (float)(-r * r * r * shx / D) : 0.0f;
      float fc = D ? (float)(-r * sh / D) : 0.0f;
      if (weight) {
#pragma omp simd
        for (int d = 0; d < D; d++) o[d] = fr * weight[d] * gr[d] + fb * (xr[d] - fm) + fc;
      } else {
#pragma omp simd
        for (int d = 0; d < D; d++) o[d] = fr * gr[d] + fb * (xr[d] - fm) + fc;
      }
    }
  }
  if (gweight || gbias) {
    int nb = (D + LN_COLS - 1) / LN_COLS;
#pragma omp parallel for schedule(static) if ((int64_t)M * D >= PAR_MIN)
    for (int bi = 0; bi < nb; bi++) {
      int d0 = bi * LN_COLS, w = D - d0 < LN_COLS ? D - d0 : LN_COLS;
      double sw[LN_COLS] = {0}, sb[LN_COLS] = {0};
      for (int m = 0; m < M; m++) {
        const float *xr = x + (int64_t)m * D + d0, *gr = gy + (int64_t)m * D + d0;
        double mu = mean[m], r = rstd[m];
#pragma omp simd
        for (int j = 0; j < w; j++) {
          sw[j] += (double)gr[j] * ((double)xr[j] - mu) * r;
          sb[j] += gr[j];
        }
      }
      for (int j = 0; j < w; j++) {
        if (gweight) gweight[d0 + j] = (float)sw[j];
        if (gbias) gbias[d0 + j] = (float)sb[j];
      }
    }
  }
}

/* ---- kernel-table entries (cpu_kernels.h) ---- */

#define VDATA(v) ((v) ? (float *)(v)->data : NULL)

int cpu_kernel_batch_norm_forward(const fdm_batch_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                  const fdm_kview *bias, const fdm_kview *running_mean,
                                  const fdm_kview *running_var, const fdm_kview *y, const fdm_kview *save_mean,
                                  const fdm_kview *save_invstd) {
  cpu_batch_norm_forward(p->N, p->C, p->S, x->data, VDATA(weight), VDATA(bias), VDATA(running_mean),
                         VDATA(running_var), p->training, p->momentum, p->eps, y->data, save_mean->data,
                         save_invstd->data);
  return 0;
}

int cpu_kernel_batch_norm_gelu_forward(const fdm_batch_norm_params *p, const fdm_kview *x,
                                       const fdm_kview *weight, const fdm_kview *bias,
                                       const fdm_kview *running_mean, const fdm_kview *running_var,
                                       const fdm_kview *pre, const fdm_kview *y, const fdm_kview *save_mean,
                                       const fdm_kview *save_invstd) {
  cpu_batch_norm_gelu_forward(p->N, p->C, p->S, x->data, VDATA(weight), VDATA(bias), VDATA(running_mean),
                              VDATA(running_var), p->training, p->momentum, p->eps, pre->data, y->data,
                              save_mean->data, save_invstd->data);
  return 0;
}

int cpu_kernel_batch_norm_backward(const fdm_batch_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                   const fdm_kview *save_mean, const fdm_kview *save_invstd, const fdm_kview *gy,
                                   const fdm_kview *gx, const fdm_kview *gweight, const fdm_kview *gbias) {
  cpu_batch_norm_backward(p->N, p->C, p->S, x->data, VDATA(weight), save_mean->data, save_invstd->data,
                          p->training, gy->data, VDATA(gx), VDATA(gweight), VDATA(gbias));
  return 0;
}

int cpu_kernel_batch_norm_gelu_backward(const fdm_batch_norm_params *p, const fdm_kview *x,
                                        const fdm_kview *weight, const fdm_kview *save_mean,
                                        const fdm_kview *save_invstd, const fdm_kview *pre, const fdm_kview *gy,
                                        const fdm_kview *work, const fdm_kview *gx, const fdm_kview *gweight,
                                        const fdm_kview *gbias) {
  cpu_gelu_backward(fdm_kview_numel(x), pre->data, gy->data, work->data);
  cpu_batch_norm_backward(p->N, p->C, p->S, x->data, VDATA(weight), save_mean->data, save_invstd->data,
                          p->training, work->data, VDATA(gx), VDATA(gweight), VDATA(gbias));
  return 0;
}

int cpu_kernel_group_norm_forward(const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                  const fdm_kview *bias, const fdm_kview *y, const fdm_kview *mean,
                                  const fdm_kview *rstd) {
  cpu_group_norm_forward(p->N, p->C, p->S, p->G, x->data, VDATA(weight), VDATA(bias), p->eps, y->data,
                         mean->data, rstd->data);
  return 0;
}

int cpu_kernel_group_norm_act_forward(const fdm_norm_params *p, fdm_act act, const fdm_kview *x,
                                      const fdm_kview *weight, const fdm_kview *bias, const fdm_kview *scale,
                                      const fdm_kview *shift, const fdm_kview *y) {
  cpu_group_norm_act_forward(p->N, p->C, p->S, p->G, act, x->data, VDATA(weight), VDATA(bias), VDATA(scale),
                             VDATA(shift), p->eps, y->data);
  return 0;
}

int cpu_kernel_group_norm_backward(const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                   const fdm_kview *mean, const fdm_kview *rstd, const fdm_kview *gy,
                                   const fdm_kview *gx, const fdm_kview *gweight, const fdm_kview *gbias) {
  cpu_group_norm_backward(p->N, p->C, p->S, p->G, x->data, VDATA(weight), mean->data, rstd->data, gy->data,
                          VDATA(gx), VDATA(gweight), VDATA(gbias));
  return 0;
}

/* layer norm: N rows of S elements */
int cpu_kernel_layer_norm_forward(const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                  const fdm_kview *bias, const fdm_kview *y, const fdm_kview *mean,
                                  const fdm_kview *rstd) {
  cpu_layer_norm_forward(p->N, p->S, x->data, VDATA(weight), VDATA(bias), p->eps, y->data, mean->data,
                         rstd->data);
  return 0;
}

int cpu_kernel_layer_norm_backward(const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight,
                                   const fdm_kview *mean, const fdm_kview *rstd, const fdm_kview *gy,
                                   const fdm_kview *gx, const fdm_kview *gweight, const fdm_kview *gbias) {
  cpu_layer_norm_backward(p->N, p->S, x->data, VDATA(weight), mean->data, rstd->data, gy->data, VDATA(gx),
                          VDATA(gweight), VDATA(gbias));
  return 0;
}
