/* gemm.c: batched matrix products on OpenBLAS sgemm. Transposed operands
** are passed as flags, not copied; a half-precision B is widened to float32
** one matrix at a time. Under autocast the operands are rounded first
** (cpu_autocast.h). */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include "cpu_kernels.h"
#include "cpu_nn.h"   /* cpu_weights_to_float */
#include "cpu_autocast.h"

static int gemm_autocast(const fdm_gemm_params *p, const fdm_kview *a, const fdm_kview *b, const fdm_kview *c) {
  const fdm_kview *ops[2] = {a, b};
  cpu_rounded r[2];
  if (cpu_round_operands("matmul", p->autocast, 2, ops, r)) return -1;
  fdm_gemm_params q = *p;
  q.autocast = FDM_FLOAT32;
  int rc = cpu_kernel_gemm(&q, &r[0].v, &r[1].v, c);
  cpu_rounded_free(2, r);
  return rc;
}

int cpu_kernel_gemm(const fdm_gemm_params *p, const fdm_kview *a, const fdm_kview *b, const fdm_kview *c) {
  if (p->autocast != FDM_FLOAT32) return gemm_autocast(p, a, b, c);
  int64_t nb = 1;
  for (int d = 0; d < p->batch_nd; d++) nb *= p->batch_shape[d];
  float *pc = c->data;
  if (p->M == 0 || p->N == 0 || nb == 0) return 0;
  if (p->K == 0) {   /* an empty sum: beta * C */
    for (int64_t k = 0; k < nb * p->M * p->ldc; k++) pc[k] = p->beta == 0 ? 0.0f : pc[k] * p->beta;
    return 0;
  }
  int half_b = b->dtype != FDM_FLOAT32;
  /* the rows x cols block B occupies, as stored (transposed: N x K) */
  int64_t brows = p->trans_b ? p->N : p->K, bcols = p->trans_b ? p->K : p->N;
  float *bbuf = NULL;
  if (half_b) {
    bbuf = malloc((size_t)brows * bcols * sizeof(float));
    if (!bbuf) return fdm_seterror("matmul: out of memory widening a %lldx%lld half-precision matrix",
                                   (long long)brows, (long long)bcols);
  }
  const float *pa = a->data;
  for (int64_t i = 0; i < nb; i++) {
    int64_t oa = 0, ob = 0, r = i;
    for (int d = p->batch_nd - 1; d >= 0; d--) {
      int64_t k = r % p->batch_shape[d];
      r /= p->batch_shape[d];
      oa += k * p->batch_stride_a[d];
      ob += k * p->batch_stride_b[d];
    }
    const float *mb;
    int64_t ldb = p->ldb;
    if (half_b) {
      for (int64_t row = 0; row < brows; row++)
        cpu_weights_to_float(b, ob + row * p->ldb, bcols, bbuf + row * bcols);
      mb = bbuf;
      ldb = bcols;
    } else mb = (const float *)b->data + ob;
    cblas_sgemm(CblasRowMajor, p->trans_a ? CblasTrans : CblasNoTrans, p->trans_b ? CblasTrans : CblasNoTrans,
                (int)p->M, (int)p->N, (int)p->K, p->alpha, pa + oa, (int)p->lda, mb, (int)ldb, p->beta,
                pc + i * p->M * p->ldc, (int)p->ldc);
  }
  free(bbuf);
  return 0;
}
