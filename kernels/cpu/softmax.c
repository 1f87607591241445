/*
** softmax.c: (log-)softmax over the middle axis of [outer, D, inner].
** Stable form: exp(x - max). With inner == 1 each row is contiguous; otherwise
** a block of up to SM_BLK inner positions is processed together so that the
** inner loops run over contiguous memory and vectorise.
*/
#include <math.h>
#include "cpu_nn.h"
#include "cpu_kernels.h"

/* vector expf/logf from glibc's libmvec (see norm.c) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 22))
float cpu_v_expf(float) __asm__("expf") __attribute__((simd("notinbranch"), const, nothrow));
#else
#define cpu_v_expf expf
#endif

#define PAR_MIN 32768
#define SM_BLK 64

/* one contiguous row of length D */
static void cpu_softmax_row(int64_t D, int log, const float *x, float *y) {
  float mx = -INFINITY;
  for (int64_t d = 0; d < D; d++) mx = x[d] > mx ? x[d] : mx;
  if (mx == -INFINITY) mx = 0; /* all -inf: the result is NaN as in PyTorch */
  float sum = 0;
  if (log) {
#pragma omp simd reduction(+ : sum)
    for (int64_t d = 0; d < D; d++) sum += cpu_v_expf(x[d] - mx);
    float lse = mx + logf(sum);
#pragma omp simd
    for (int64_t d = 0; d < D; d++) y[d] = x[d] - lse;
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t d = 0; d < D; d++) {
      float e = cpu_v_expf(x[d] - mx);
      y[d] = e;
      sum += e;
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t d = 0; d < D; d++) y[d] *= inv;
  }
}

/* inner positions [i0, i0+w) of one outer slice; stride between d's is inner */
static void cpu_softmax_block(int64_t D, int64_t inner, int w, int log, const float *x, float *y) {
  float mx[SM_BLK], sum[SM_BLK];
  for (int j = 0; j < w; j++) mx[j] = -INFINITY, sum[j] = 0;
  for (int64_t d = 0; d < D; d++) {
    const float *xr = x + d * inner;
    for (int j = 0; j < w; j++) mx[j] = xr[j] > mx[j] ? xr[j] : mx[j];
  }
  for (int j = 0; j < w; j++)
    if (mx[j] == -INFINITY) mx[j] = 0;
  for (int64_t d = 0; d < D; d++) {
    const float *xr = x + d * inner;
    float *yr = y + d * inner;
#pragma omp simd
    for (int j = 0; j < w; j++) {
      float e = cpu_v_expf(xr[j] - mx[j]);
      if (!log) yr[j] = e;
      sum[j] += e;
    }
  }
  /* log: y = x - (max + log sum); plain: y = e / sum */
  for (int j = 0; j < w; j++) sum[j] = log ? mx[j] + logf(sum[j]) : 1.0f / sum[j];
  for (int64_t d = 0; d < D; d++) {
    const float *xr = x + d * inner;
    float *yr = y + d * inner;
    if (log) {
#pragma omp simd
      for (int j = 0; j < w; j++) yr[j] = xr[j] - sum[j];
    } else {
#pragma omp simd
      for (int j = 0; j < w; j++) yr[j] *= sum[j];
    }
  }
}

void cpu_softmax_forward(int64_t outer, int64_t D, int64_t inner, int log, const float *x, float *y) {
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * D >= PAR_MIN)
    for (int64_t o = 0; o < outer; o++) cpu_softmax_row(D, log, x + o * D, y + o * D);
    return;
  }
  int64_t nb = (inner + SM_BLK - 1) / SM_BLK, tasks = outer * nb;
#pragma omp parallel for schedule(static) if (outer * D * inner >= PAR_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t o = t / nb, i0 = (t % nb) * SM_BLK;
    int w = (int)(inner - i0 < SM_BLK ? inner - i0 : SM_BLK);
    int64_t off = o * D * inner + i0;
    cpu_softmax_block(D, inner, w, log, x + off, y + off);
  }
}

/* softmax: gx = y*(gy - sum(gy*y)); log-softmax: gx = gy - exp(y)*sum(gy) */
void cpu_softmax_backward(int64_t outer, int64_t D, int64_t inner, int log, const float *y,
                          const float *gy, float *gx) {
  if (inner == 1) {
#pragma omp parallel for schedule(static) if (outer * D >= PAR_MIN)
    for (int64_t o = 0; o < outer; o++) {
      const float *yr = y + o * D, *gr = gy + o * D;
      float *orow = gx + o * D, acc = 0;
      if (log) {
#pragma omp simd reduction(+ : acc)
        for (int64_t d = 0; d < D; d++) acc += gr[d];
#pragma omp simd
        for (int64_t d = 0; d < D; d++) orow[d] = gr[d] - cpu_v_expf(yr[d]) * acc;
      } else {
#pragma omp simd reduction(+ : acc)
        for (int64_t d = 0; d < D; d++) acc += gr[d] * yr[d];
#pragma omp simd
        for (int64_t d = 0; d < D; d++) orow[d] = yr[d] * (gr[d] - acc);
      }
    }
    return;
  }
  int64_t nb = (inner + SM_BLK - 1) / SM_BLK, tasks = outer * nb;
#pragma omp parallel for schedule(static) if (outer * D * inner >= PAR_MIN)
  for (int64_t t = 0; t < tasks; t++) {
    int64_t o = t / nb, i0 = (t % nb) * SM_BLK;
    int w = (int)(inner - i0 < SM_BLK ? inner - i0 : SM_BLK);
    int64_t off = o * D * inner + i0;
    const float *yb = y + off, *gb = gy + off;
    float *ob = gx + off;
    float acc[SM_BLK] = {0};
    for (int64_t d = 0; d < D; d++) {
      const float *yr = yb + d * inner, *gr = gb + d * inner;
      if (log) {
        for (int j = 0; j < w; j++) acc[j] += gr[j];
      } else {
        for (int j = 0; j < w; j++) acc[j] += gr[j] * yr[j];
      }
    }
    for (int64_t d = 0; d < D; d++) {
      const float *yr = yb + d * inner, *gr = gb + d * inner;
      float *orow = ob + d * inner;
      if (log) {
#pragma omp simd
        for (int j = 0; j < w; j++) orow[j] = gr[j] - cpu_v_expf(yr[j]) * acc[j];
      } else {
#pragma omp simd
        for (int j = 0; j < w; j++) orow[j] = yr[j] * (gr[j] - acc[j]);
      }
    }
  }
}

/* ---- kernel-table entries (cpu_kernels.h) ---- */

int cpu_kernel_softmax_forward(int64_t outer, int64_t D, int64_t inner, int log, const fdm_kview *x,
                               const fdm_kview *y) {
  cpu_softmax_forward(outer, D, inner, log, x->data, y->data);
  return 0;
}

int cpu_kernel_softmax_backward(int64_t outer, int64_t D, int64_t inner, int log, const fdm_kview *y,
                                const fdm_kview *gy, const fdm_kview *gx) {
  cpu_softmax_backward(outer, D, inner, log, y->data, gy->data, gx->data);
  return 0;
}
