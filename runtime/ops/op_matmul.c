/* op_matmul.c: matmul with PyTorch's rules (1-D, 2-D, broadcast batches) on
** the device's gemm kernel. Transposed operands are passed as flags, not
** copied; broadcast batches as stride-0 batch dims. The second operand may be
** float16/bfloat16 (weights kept in half precision; no gradient then).
** Under autocast (fdm.h) the gemm rounds both operands; the node keeps the
** dtype so the backward's products round as the forward's did, wherever the
** backward runs. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"

/* is the last-two-dims block of t usable by sgemm directly?  *trans set when column-major */
static int gemm_layout(const fdm_tensor *t, int *trans, int64_t *ld) {
  int nd = t->ndim;
  int64_t r = t->shape[nd - 2], c = t->shape[nd - 1], sr = t->stride[nd - 2], sc = t->stride[nd - 1];
  if ((sc == 1 || c == 1) && sr >= (c > 1 ? c : 1)) { *trans = 0; *ld = sr > 0 ? sr : 1; if (r == 1) *ld = c > 1 ? c : 1; return 1; }
  if ((sr == 1 || r == 1) && sc >= (r > 1 ? r : 1)) { *trans = 1; *ld = sc > 0 ? sc : 1; if (c == 1) *ld = r > 1 ? r : 1; return 1; }
  return 0;
}

typedef struct { fdm_tensor *a, *b; fdm_dtype autocast; } matmul_state;

static fdm_tensor *matmul_as(fdm_tensor *a, fdm_tensor *b, fdm_dtype autocast);

static int mm_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  matmul_state *s = FDM_NODE_STATE(n, matmul_state);
  if (!s) return -1;
  fdm_tensor *a = s->a, *b = s->b;
  if (fdm_node_needs(n, 0)) {
    fdm_tensor *bt = fdm_transpose(b, b->ndim - 2, b->ndim - 1);
    fdm_tensor *ga = bt ? matmul_as(g, bt, s->autocast) : NULL;
    fdm_release(bt);
    gin[0] = ga ? fdm_reduce_to_input(n, 0, ga) : NULL;
    fdm_release(ga);
    if (!gin[0]) return -1;
  }
  if (fdm_node_needs(n, 1)) {
    fdm_tensor *at = fdm_transpose(a, a->ndim - 2, a->ndim - 1);
    fdm_tensor *gb = at ? matmul_as(at, g, s->autocast) : NULL;
    fdm_release(at);
    gin[1] = gb ? fdm_reduce_to_input(n, 1, gb) : NULL;
    fdm_release(gb);
    if (!gin[1]) return -1;
  }
  return 0;
}

/* both operands >= 2-D */
static fdm_tensor *matmul_nd(fdm_tensor *a, fdm_tensor *b, fdm_dtype autocast) {
  char b1[128], b2[128];
  int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1];
  int64_t K2 = b->shape[b->ndim - 2], N = b->shape[b->ndim - 1];
  if (K != K2) {
    fdm_seterror("matmul: shapes %s and %s cannot be multiplied (%lld != %lld)",
                 fdm_shapestr(a, b1, sizeof b1), fdm_shapestr(b, b2, sizeof b2), (long long)K, (long long)K2);
    return NULL;
  }
  /* broadcast batch dims */
  fdm_tensor ab = *a, bb = *b;
  ab.ndim = a->ndim - 2; bb.ndim = b->ndim - 2;
  int64_t bshape[FDM_MAXDIM];
  int bnd = fdm_broadcast_shape("matmul", &ab, &bb, bshape);
  if (bnd < 0) return NULL;
  int64_t oshape[FDM_MAXDIM], ashape[FDM_MAXDIM], bshape2[FDM_MAXDIM];
  memcpy(oshape, bshape, bnd * sizeof(int64_t));
  memcpy(ashape, bshape, bnd * sizeof(int64_t)); memcpy(bshape2, bshape, bnd * sizeof(int64_t));
  oshape[bnd] = M; oshape[bnd + 1] = N;
  ashape[bnd] = M; ashape[bnd + 1] = K; bshape2[bnd] = K; bshape2[bnd + 1] = N;
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *ae = fdm_expand(a, bnd + 2, ashape), *be = fdm_expand(b, bnd + 2, bshape2);
  fdm_set_grad_enabled(prev);
  fdm_tensor *out = (ae && be) ? fdm_empty(FDM_FLOAT32, bnd + 2, oshape, a->device) : NULL;
  if (!out) { fdm_release(ae); fdm_release(be); return NULL; }
  int ta = 0, tb = 0; int64_t lda = 1, ldb = 1;
  fdm_tensor *ac = ae, *bc = be;
  if (!gemm_layout(ae, &ta, &lda)) { ac = fdm_contiguous(ae); gemm_layout(ac, &ta, &lda); } else fdm_retain(ac);
  if (!gemm_layout(be, &tb, &ldb)) { bc = fdm_contiguous(be); gemm_layout(bc, &tb, &ldb); } else fdm_retain(bc);
  fdm_release(ae); fdm_release(be);
  fdm_gemm_params p = {.M = M, .N = N, .K = K, .trans_a = ta, .trans_b = tb, .lda = lda, .ldb = ldb,
                       .ldc = N, .batch_nd = bnd, .alpha = 1.0f, .beta = 0.0f, .autocast = autocast};
  for (int d = 0; d < bnd; d++) {
    p.batch_shape[d] = bshape[d];
    p.batch_stride_a[d] = bshape[d] == 1 ? 0 : ac->stride[d];
    p.batch_stride_b[d] = bshape[d] == 1 ? 0 : bc->stride[d];
  }
  fdm_kview va = fdm_kview_of(ac), vb = fdm_kview_of(bc), vo = fdm_kview_of(out);
  int rc = (M > INT_MAX || N > INT_MAX || K > INT_MAX || lda > INT_MAX || ldb > INT_MAX)
           ? fdm_seterror("matmul: matrices beyond 2^31 rows or columns are not supported")
           : FDM_KERNEL(out->device, "matmul", gemm, &p, &va, &vb, &vo);
  fdm_release(ac); fdm_release(bc);
  fdm_tensor *in[2] = {a, b};
  fdm_node *n = NULL;
  if (rc || fdm_node_new("matmul", mm_backward, 2, in, sizeof(matmul_state), &n)) { fdm_release(out); return NULL; }
  if (n) {
    matmul_state *s = n->state;
    fdm_node_save(n, &s->a, a); fdm_node_save(n, &s->b, b);
    s->autocast = autocast;
  }
  if (fdm_node_attach(out, n)) { fdm_release(out); return NULL; }
  return out;
}

fdm_tensor *fdm_matmul(fdm_tensor *a, fdm_tensor *b) { return matmul_as(a, b, fdm_autocast_dtype()); }

static fdm_tensor *matmul_as(fdm_tensor *a, fdm_tensor *b, fdm_dtype autocast) {
  fdm_tensor *chk[2] = {a, b};
  if (fdm_backend_check("matmul", 2, chk) || fdm_check_float("matmul", a)) return NULL;
  if (b->dtype != FDM_FLOAT16 && b->dtype != FDM_BFLOAT16 && fdm_check_float("matmul", b)) return NULL;
  if (b->dtype != FDM_FLOAT32 && b->requires_grad && fdm_grad_enabled()) {
    fdm_seterror("matmul: a %s second operand is for inference (weights kept in half precision); "
                 "it cannot require grad", fdm_dtype_name(b->dtype));
    return NULL;
  }
  if (a->ndim == 0 || b->ndim == 0) { fdm_seterror("matmul: both arguments need at least 1 dim"); return NULL; }
  fdm_tensor *a2 = a, *b2 = b;
  if (a->ndim == 1) a2 = fdm_unsqueeze(a, 0); else fdm_retain(a2);
  if (b->ndim == 1) b2 = fdm_unsqueeze(b, 1); else fdm_retain(b2);
  fdm_tensor *r = (a2 && b2) ? matmul_nd(a2, b2, autocast) : NULL;
  fdm_release(a2); fdm_release(b2);
  if (r && (a->ndim == 1 || b->ndim == 1)) {
    int dim = a->ndim == 1 && b->ndim == 1 ? -1 : (a->ndim == 1 ? r->ndim - 2 : r->ndim - 1);
    fdm_tensor *s;
    if (dim == -1) s = fdm_reshape(r, 0, NULL);
    else s = fdm_squeeze(r, dim);
    fdm_release(r);
    r = s;
  }
  return r;
}
