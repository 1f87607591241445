/*
** linear.c: y = x w^T + b and its gradients through OpenBLAS sgemm.
** A float16/bfloat16 weight is converted to float32 LINEAR_BLOCK output rows
** at a time (a bounded scratch instead of a float32 copy of the whole
** matrix); each block is one sgemm into the matching columns of y (forward)
** or one more term of the sum over output features (data gradient).
** Under autocast the operands are rounded first (cpu_autocast.h).
*/
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include "cpu_kernels.h"
#include "cpu_nn.h"
#include "cpu_autocast.h"

#define LINEAR_BLOCK 256   /* weight rows converted per sgemm */

#define WIDEN_CHUNK ((int64_t)1 << 16)   /* values per thread's turn: large weights widen in parallel */

void cpu_weights_to_float(const fdm_kview *w, int64_t first, int64_t n, float *dst) {
  if (w->dtype != FDM_FLOAT16 && w->dtype != FDM_BFLOAT16) {
    memcpy(dst, (const float *)w->data + first, (size_t)n * sizeof(float));
    return;
  }
  const uint16_t *h = (const uint16_t *)w->data + first;
  int half = w->dtype == FDM_FLOAT16;
  int64_t chunks = (n + WIDEN_CHUNK - 1) / WIDEN_CHUNK;
  #pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; c++) {
    int64_t i = c * WIDEN_CHUNK, k = n - i < WIDEN_CHUNK ? n - i : WIDEN_CHUNK;
    if (half) fdm_half_to_float_n(h + i, dst + i, (size_t)k);
    else fdm_bf16_to_float_n(h + i, dst + i, (size_t)k);
  }
}

static int is_half(const fdm_kview *w) { return w->dtype == FDM_FLOAT16 || w->dtype == FDM_BFLOAT16; }

static float *block_scratch(int64_t rows, int64_t IN) {
  int64_t n = rows * IN;
  float *s = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  if (!s) fdm_seterror("linear: out of memory converting a half-precision weight block (%lld floats)",
                       (long long)(rows * IN));
  return s;
}

/* y [M, OUT] (+)= x w^T, with w converted block by block when half */
static int linear_product(int64_t M, int64_t IN, int64_t OUT, const float *x, const fdm_kview *w,
                          float beta, float *y) {
  if (!is_half(w)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)OUT, (int)IN, 1.0f, x, (int)IN,
                w->data, (int)IN, beta, y, (int)OUT);
    return 0;
  }
  int64_t rows = OUT < LINEAR_BLOCK ? OUT : LINEAR_BLOCK;
  float *wf = block_scratch(rows, IN);
  if (!wf) return -1;
  for (int64_t o0 = 0; o0 < OUT; o0 += rows) {
    int64_t nb = OUT - o0 < rows ? OUT - o0 : rows;
    cpu_weights_to_float(w, o0 * IN, nb * IN, wf);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)nb, (int)IN, 1.0f, x, (int)IN, wf,
                (int)IN, beta, y + o0, (int)OUT);
  }
  free(wf);
  return 0;
}

int cpu_kernel_linear_forward(fdm_dtype autocast, int64_t M, int64_t IN, int64_t OUT, const fdm_kview *x,
                              const fdm_kview *w, const fdm_kview *b, const fdm_kview *y) {
  if (autocast != FDM_FLOAT32) {
    const fdm_kview *ops[2] = {x, w};
    cpu_rounded r[2];
    if (cpu_round_operands("linear", autocast, 2, ops, r)) return -1;
    int rc = cpu_kernel_linear_forward(FDM_FLOAT32, M, IN, OUT, &r[0].v, &r[1].v, b, y);
    cpu_rounded_free(2, r);
    return rc;
  }
  float *py = y->data;
  if (!M || !OUT) return 0;
  if (b) {
    const float *pb = b->data;
    for (int64_t m = 0; m < M; m++) memcpy(py + m * OUT, pb, OUT * sizeof(float));
  }
  if (IN) return linear_product(M, IN, OUT, x->data, w, b ? 1.0f : 0.0f, py);
  if (!b) memset(py, 0, M * OUT * sizeof(float));
  return 0;
}

/* gx [M, IN] = gy [M, OUT] w [OUT, IN]: a sum over blocks of output features when w is half */
static int linear_data_grad(int64_t M, int64_t IN, int64_t OUT, const float *gy, const fdm_kview *w, float *gx) {
  if (!OUT) { memset(gx, 0, M * IN * sizeof(float)); return 0; }
  if (!is_half(w)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)IN, (int)OUT, 1.0f, gy, (int)OUT,
                w->data, (int)IN, 0.0f, gx, (int)IN);
    return 0;
  }
  int64_t rows = OUT < LINEAR_BLOCK ? OUT : LINEAR_BLOCK;
  float *wf = block_scratch(rows, IN);
  if (!wf) return -1;
  for (int64_t o0 = 0; o0 < OUT; o0 += rows) {
    int64_t nb = OUT - o0 < rows ? OUT - o0 : rows;
    cpu_weights_to_float(w, o0 * IN, nb * IN, wf);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)IN, (int)nb, 1.0f, gy + o0, (int)OUT,
                wf, (int)IN, o0 ? 1.0f : 0.0f, gx, (int)IN);
  }
  free(wf);
  return 0;
}

/* gb [OUT] = column sums of gy [M, OUT], accumulated in double */
static void bias_grad(int64_t M, int64_t OUT, const float *gy, float *gb) {
  for (int64_t o = 0; o < OUT; o++) {
    double s = 0;
    for (int64_t m = 0; m < M; m++) s += gy[m * OUT + o];
    gb[o] = (float)s;
  }
}

int cpu_kernel_linear_backward(fdm_dtype autocast, int64_t M, int64_t IN, int64_t OUT, const fdm_kview *x,
                               const fdm_kview *w, const fdm_kview *gy, const fdm_kview *gx,
                               const fdm_kview *gw, const fdm_kview *gb) {
  if (autocast != FDM_FLOAT32) {
    /* the products on rounded operands (x only for gw, w only for gx); the bias
    ** gradient from the float32 gy */
    const fdm_kview *ops[3] = {gw ? x : NULL, gx ? w : NULL, gy};
    cpu_rounded r[3];
    if (cpu_round_operands("linear", autocast, 3, ops, r)) return -1;
    int rc = cpu_kernel_linear_backward(FDM_FLOAT32, M, IN, OUT, cpu_rounded_view(&r[0]), cpu_rounded_view(&r[1]),
                                        &r[2].v, gx, gw, NULL);
    cpu_rounded_free(3, r);
    return rc ? rc : cpu_kernel_linear_backward(FDM_FLOAT32, M, IN, OUT, x, w, gy, NULL, NULL, gb);
  }
  const float *pg = gy->data;
  if (gx && M && IN && linear_data_grad(M, IN, OUT, pg, w, gx->data)) return -1;
  if (gw && OUT && IN) {
    if (M) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OUT, (int)IN, (int)M, 1.0f, pg, (int)OUT,
                       x->data, (int)IN, 0.0f, gw->data, (int)IN);
    else memset(gw->data, 0, OUT * IN * sizeof(float));
  }
  if (gb) bias_grad(M, OUT, pg, gb->data);
  return 0;
}
