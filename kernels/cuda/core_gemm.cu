/* core_gemm.cu: batched matrix products on cuBLAS. Row-major C = op(A) op(B)
** is column-major C^T = op(B)^T op(A)^T, so the operands are passed swapped
** and nothing is transposed in memory. Batch dims that step uniformly for A
** and B are merged into one strided-batched call; the rest loop on the host.
** A float16/bfloat16 B is widened once (its whole extent, so its strides
** stay valid) into scratch. TF32 only with FDM_TF32=1 (the handle's math
** mode, cuda_backend.cu). Under autocast both operands are narrowed to
** bfloat16/float16 (cuda_autocast.cuh) and multiplied by
** cublasGemmStridedBatchedEx with float32 accumulation and a float32 C. */
#include "cuda_iter.cuh"
#include "cuda_autocast.cuh"

static __global__ void scale_k(float *c, int64_t n, float beta) {
  CI_FOR(i, n) c[i] = beta == 0.0f ? 0.0f : c[i] * beta;
}
static __global__ void widen_k(const uint16_t *h, int64_t n, float *dst, int bf16) {
  CI_FOR(i, n) dst[i] = bf16 ? ci_bf16_to_float(h[i]) : ci_half_to_float(h[i]);
}

extern "C" int cuda_kernel_gemm(const fdm_gemm_params *p, const fdm_kview *a, const fdm_kview *b, const fdm_kview *c) {
  cudaStream_t st = fdm_cuda_stream();
  int64_t nb = 1;
  for (int d = 0; d < p->batch_nd; d++) nb *= p->batch_shape[d];
  float *pc = (float *)c->data;
  if (p->M == 0 || p->N == 0 || nb == 0) return 0;
  if (p->K == 0) {
    int64_t n = nb * p->M * p->ldc;
    scale_k<<<fdm_cuda_blocks(n, 256), 256, 0, st>>>(pc, n, p->beta);
    return fdm_cuda_launched("matmul");
  }
  if (p->M > INT32_MAX || p->N > INT32_MAX || p->K > INT32_MAX || p->lda > INT32_MAX || p->ldb > INT32_MAX ||
      p->ldc > INT32_MAX)
    return fdm_cuda_seterror("matmul: a matrix dimension exceeds 2^31 - 1 (cuBLAS)");
  /* merged batch dims: shape, A stride, B stride, C stride */
  int nd = 0;
  int64_t sh[FDM_MAXDIM], sa[FDM_MAXDIM], sb[FDM_MAXDIM], sc[FDM_MAXDIM];
  int64_t cstride = p->M * p->ldc;
  for (int d = p->batch_nd - 1; d >= 0; d--) {   /* innermost first */
    if (p->batch_shape[d] == 1) continue;
    if (nd > 0 && sa[nd - 1] * sh[nd - 1] == p->batch_stride_a[d] && sb[nd - 1] * sh[nd - 1] == p->batch_stride_b[d]) {
      sh[nd - 1] *= p->batch_shape[d];
    } else {
      sh[nd] = p->batch_shape[d]; sa[nd] = p->batch_stride_a[d]; sb[nd] = p->batch_stride_b[d]; sc[nd] = cstride;
      nd++;
    }
    cstride *= p->batch_shape[d];
  }
  const float *pa = (const float *)a->data, *pb = (const float *)b->data;
  float *wide = NULL;
  size_t wide_bytes = 0;
  int cast = p->autocast != FDM_FLOAT32;
  cuda_narrowed nar[2] = {};
  if (cast) {
    const fdm_kview *ops[2] = {a, b};
    if (cuda_autocast_operands("matmul", p->autocast, 2, ops, nar)) return -1;
  } else if (b->dtype == FDM_FLOAT16 || b->dtype == FDM_BFLOAT16) {
    int64_t brows = p->trans_b ? p->N : p->K, bcols = p->trans_b ? p->K : p->N;
    int64_t extent = (brows - 1) * p->ldb + bcols;
    for (int d = 0; d < nd; d++) extent += (sh[d] - 1) * sb[d];
    wide_bytes = (size_t)extent * sizeof(float);
    wide = (float *)fdm_cuda_scratch_alloc(wide_bytes, "matmul (widening a half-precision matrix)");
    if (!wide) return -1;
    widen_k<<<fdm_cuda_blocks(extent, 256), 256, 0, st>>>((const uint16_t *)b->data, extent, wide,
                                                          b->dtype == FDM_BFLOAT16);
    if (fdm_cuda_launched("matmul")) { fdm_cuda_scratch_release(wide, wide_bytes); return -1; }
    pb = wide;
  }
  fdm_cuda_cublas_math();
  cublasHandle_t h = fdm_cuda_cublas();
  cublasOperation_t ta = p->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cudaDataType_t t16 = cuda_autocast_blas_type(p->autocast);
  const uint16_t *na = (const uint16_t *)nar[0].p, *nb16 = (const uint16_t *)nar[1].p;
  /* the innermost merged dim goes to cuBLAS; the others loop here */
  int64_t inner = nd > 0 ? sh[0] : 1, outer = 1;
  for (int d = 1; d < nd; d++) outer *= sh[d];
  int rc = 0;
  for (int64_t o = 0; o < outer && !rc; o++) {
    int64_t oa = 0, ob = 0, oc = 0, r = o;
    for (int d = 1; d < nd; d++) {
      int64_t k = r % sh[d];
      r /= sh[d];
      oa += k * sa[d]; ob += k * sb[d]; oc += k * sc[d];
    }
    for (int64_t b0 = 0; b0 < inner && !rc; b0 += 65535) {   /* batch count per call */
      int64_t cnt = inner - b0 < 65535 ? inner - b0 : 65535;
      int64_t da = nd > 0 ? sa[0] : 0, db = nd > 0 ? sb[0] : 0, dc = nd > 0 ? sc[0] : 0;
      int64_t ea = oa + b0 * da, eb = ob + b0 * db;   /* element offsets of this call's first A and B */
      rc = fdm_cuda_cublas_check(
          cast ? cublasGemmStridedBatchedEx(h, tb, ta, (int)p->N, (int)p->M, (int)p->K, &p->alpha, nb16 + eb, t16,
                                            (int)p->ldb, db, na + ea, t16, (int)p->lda, da, &p->beta,
                                            pc + oc + b0 * dc, CUDA_R_32F, (int)p->ldc, dc, (int)cnt,
                                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
               : cublasSgemmStridedBatched(h, tb, ta, (int)p->N, (int)p->M, (int)p->K, &p->alpha, pb + eb,
                                           (int)p->ldb, db, pa + ea, (int)p->lda, da, &p->beta, pc + oc + b0 * dc,
                                           (int)p->ldc, dc, (int)cnt),
          "matmul");
    }
  }
  cuda_autocast_release(2, nar);
  if (wide) fdm_cuda_scratch_release(wide, wide_bytes);
  return rc;
}
