/* op_nn_misc.c: activations, dropout, losses, one_hot, gaussian_blur and
** scaled_dot_product_attention. Most are composites of core ops (their
** autograd comes from those); one_hot and gaussian_blur run their own
** kernels, and gaussian_blur has its own node (the backward is the adjoint
** of the separable reflect-padded blur). Labels are range-checked on the
** host (fdm_download_bytes), so errors can name the bad label. */
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"
#include "fdm_nnops.h"

#define SHP(t, buf) fdm_shapestr((t), (buf), sizeof(buf))


/* ======================================================================= activations */

fdm_tensor *fdm_gelu(fdm_tensor *x, int tanh_approx) {
  if (nn_check("gelu", 1, &x)) return NULL;
  return fdm_unary(tanh_approx ? FDM_GELU_TANH : FDM_GELU, x);
}

/* ======================================================================= dropout */

fdm_tensor *fdm_dropout(fdm_tensor *x, double p, int training) {
  if (fdm_backend_check("dropout", 1, &x)) return NULL;
  if (!(p >= 0 && p <= 1)) { fdm_seterror("dropout: probability has to be between 0 and 1, got %g", p); return NULL; }
  if (!training || p == 0) { fdm_retain(x); return x; }
  if (nn_check("dropout", 1, &x)) return NULL;
  /* mask = (u >= p) * 1/(1-p) for uniform u, in float32 as the kernels compare */
  float fp = (float)p, scale = p < 1 ? (float)(1.0 / (1.0 - p)) : 0.0f;
  fdm_tensor *u = fdm_rand(x->ndim, x->shape, x->device);
  fdm_tensor *keep = u ? fdm_binary_scalar(FDM_GE, u, fp, 0) : NULL;
  fdm_tensor *keep_f = keep ? fdm_to_dtype(keep, FDM_FLOAT32) : NULL;
  fdm_tensor *mask = keep_f ? fdm_scale(keep_f, scale) : NULL;
  fdm_tensor *y = mask ? fdm_binary(FDM_MUL, x, mask) : NULL;
  fdm_release(u); fdm_release(keep); fdm_release(keep_f); fdm_release(mask);
  return y;
}

/* ======================================================================= losses */

static fdm_tensor *reduce(fdm_tensor *t, fdm_reduction red) {
  if (red == FDM_REDUCE_MEAN) return fdm_mean(t, 0, NULL, 0);
  if (red == FDM_REDUCE_SUM) return fdm_sum(t, 0, NULL, 0);
  fdm_retain(t);
  return t;
}

static int check_red(const char *op, fdm_reduction red) {
  if (red == FDM_REDUCE_MEAN || red == FDM_REDUCE_SUM || red == FDM_REDUCE_NONE) return 0;
  return fdm_seterror("%s: unknown reduction %d", op, (int)red);
}

fdm_tensor *fdm_mse_loss(fdm_tensor *a, fdm_tensor *b, fdm_reduction red) {
  char b1[128], b2[128];
  fdm_tensor *chk[2] = {a, b};
  if (nn_check("mse_loss", 2, chk) || check_red("mse_loss", red)) return NULL;
  if (!fdm_same_shape(a, b)) {
    fdm_seterror("mse_loss: input %s and target %s must have the same shape", SHP(a, b1), SHP(b, b2));
    return NULL;
  }
  fdm_tensor *d = fdm_binary(FDM_SUB, a, b);
  fdm_tensor *sq = d ? fdm_unary(FDM_SQUARE, d) : NULL;
  fdm_tensor *r = sq ? reduce(sq, red) : NULL;
  fdm_release(d); fdm_release(sq);
  return r;
}

/* the labels (contiguous int64) copied to host memory: a malloc'd array the
** caller frees, or NULL with the error set */
static int64_t *labels_on_host(const char *op, fdm_tensor *lc, int64_t *count) {
  int64_t nl = fdm_numel(lc);
  int64_t *host = malloc((size_t)(nl ? nl : 1) * sizeof(int64_t));
  if (!host) { fdm_seterror("%s: out of memory reading %lld labels", op, (long long)nl); return NULL; }
  if (fdm_download_bytes(lc, host, (size_t)nl * sizeof(int64_t))) { free(host); return NULL; }
  *count = nl;
  return host;
}

static int check_label_range(const char *op, const int64_t *labels, int64_t nl, int64_t classes) {
  for (int64_t i = 0; i < nl; i++)
    if (labels[i] < 0 || labels[i] >= classes)
      return fdm_seterror("%s: label %lld at position %lld is out of range for %lld classes (labels are 0-based)",
                          op, (long long)labels[i], (long long)i + 1, (long long)classes);
  return 0;
}

fdm_tensor *fdm_cross_entropy(fdm_tensor *logits, fdm_tensor *labels, fdm_reduction red) {
  char b1[128], b2[128];
  const char *op = "cross_entropy";
  fdm_tensor *chk[2] = {logits, labels};
  if (fdm_backend_check(op, 2, chk) || check_red(op, red)) return NULL;
  if (nn_check(op, 1, &logits)) return NULL;
  if (labels->dtype != FDM_INT64) {
    fdm_seterror("%s: labels must be int64 class indices (0-based), got %s", op, fdm_dtype_name(labels->dtype));
    return NULL;
  }
  if (logits->ndim < 1) { fdm_seterror("%s: logits must be [N, C] or [C], got a scalar", op); return NULL; }
  /* [C] with a 0-d label: a batch of one */
  int unbatched = logits->ndim == 1;
  int cdim = unbatched ? 0 : 1;
  int bad = labels->ndim != logits->ndim - 1;
  for (int d = 0, k = 0; !bad && d < logits->ndim; d++) {
    if (d == cdim) continue;
    bad = labels->shape[k++] != logits->shape[d];
  }
  if (bad) {
    fdm_seterror("%s: labels %s do not match logits %s (expected logits [N, C] with labels [N])", op,
                 SHP(labels, b1), SHP(logits, b2));
    return NULL;
  }
  int64_t C = logits->shape[cdim];
  fdm_tensor *lc = fdm_contiguous(labels);
  int64_t nl = 0, *host = lc ? labels_on_host(op, lc, &nl) : NULL;
  int bad_label = !host || check_label_range(op, host, nl, C);
  free(host);
  if (bad_label) { fdm_release(lc); return NULL; }
  fdm_tensor *x = unbatched ? fdm_unsqueeze(logits, 0) : (fdm_retain(logits), logits);
  fdm_tensor *idx = x ? fdm_unsqueeze(lc, unbatched ? 0 : 1) : NULL;
  if (idx && unbatched) { fdm_tensor *t = fdm_unsqueeze(idx, 0); fdm_release(idx); idx = t; }
  fdm_tensor *ls = idx ? fdm_softmax(x, 1, 1) : NULL;
  fdm_tensor *picked = ls ? fdm_gather(ls, 1, idx) : NULL;
  fdm_tensor *sq = picked ? fdm_squeeze(picked, 1) : NULL;
  if (sq && unbatched) { fdm_tensor *t = fdm_squeeze(sq, 0); fdm_release(sq); sq = t; }
  fdm_tensor *nll = sq ? fdm_unary(FDM_NEG, sq) : NULL;
  fdm_tensor *r = nll ? reduce(nll, red) : NULL;
  fdm_release(lc); fdm_release(x); fdm_release(idx); fdm_release(ls); fdm_release(picked); fdm_release(sq);
  fdm_release(nll);
  return r;
}

/* ======================================================================= one_hot */

static int64_t max_label(const int64_t *labels, int64_t nl) {
  int64_t mx = labels[0];
  for (int64_t i = 1; i < nl; i++) if (labels[i] > mx) mx = labels[i];
  return mx;
}

fdm_tensor *fdm_one_hot(fdm_tensor *labels, int64_t n) {
  char b1[128];
  const char *op = "one_hot";
  if (fdm_backend_check(op, 1, &labels)) return NULL;
  if (labels->dtype != FDM_INT64) {
    fdm_seterror("one_hot: labels must be int64 (0-based class indices), got %s", fdm_dtype_name(labels->dtype));
    return NULL;
  }
  if (labels->ndim >= FDM_MAXDIM) { fdm_seterror("one_hot: labels %s have too many dims", SHP(labels, b1)); return NULL; }
  fdm_tensor *lc = fdm_contiguous(labels);
  int64_t nl = 0, *host = lc ? labels_on_host(op, lc, &nl) : NULL;
  if (!host) { fdm_release(lc); return NULL; }
  int bad = 0;
  if (n < 0 && nl == 0) bad = fdm_seterror("one_hot: cannot infer the number of classes of empty labels");
  else if (n < 0) {
    n = max_label(host, nl);
    if (n == INT64_MAX) bad = fdm_seterror("one_hot: label %lld leaves no room for a class count", (long long)n);
    else n += 1;
  }
  if (!bad) bad = check_label_range(op, host, nl, n);
  free(host);
  if (bad) { fdm_release(lc); return NULL; }
  int64_t shape[FDM_MAXDIM];
  memcpy(shape, labels->shape, labels->ndim * sizeof(int64_t));
  shape[labels->ndim] = n;
  fdm_tensor *out = fdm_zeros(FDM_INT64, labels->ndim + 1, shape, labels->device);
  fdm_kview vo = out ? fdm_kview_of(out) : (fdm_kview){0}, vl = fdm_kview_of(lc);
  if (out && FDM_KERNEL(out->device, op, one_hot, &vo, &vl, n)) { fdm_release(out); out = NULL; }
  fdm_release(lc);
  return out;
}

/* ======================================================================= gaussian blur */

static void gauss_kernel(int k, double sigma, float *out) {
  double half = (k - 1) * 0.5, s = 0, tmp[k];
  for (int i = 0; i < k; i++) {
    double x = k > 1 ? -half + (2 * half) * i / (k - 1) : 0;
    tmp[i] = exp(-0.5 * (x / sigma) * (x / sigma));
    s += tmp[i];
  }
  for (int i = 0; i < k; i++) out[i] = (float)(tmp[i] / s);
}

typedef struct { fdm_blur_params p; double sx, sy; } blur_state;

static int blur_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  blur_state *s = FDM_NODE_STATE(n, blur_state);
  if (!s) return -1;
  const fdm_node_input *in = fdm_node_input_at(n, 0);
  float wx[s->p.kx], wy[s->p.ky];
  gauss_kernel(s->p.kx, s->sx, wx);
  gauss_kernel(s->p.ky, s->sy, wy);
  fdm_tensor *gx = fdm_empty(FDM_FLOAT32, in->ndim, in->shape, g->device);
  if (!gx) return -1;
  fdm_kview vg = fdm_kview_of(g), vgx = fdm_kview_of(gx);
  if (FDM_KERNEL(g->device, "gaussian_blur", blur_backward, &s->p, wx, wy, &vg, &vgx)) {
    fdm_release(gx);
    return -1;
  }
  gin[0] = gx;
  return 0;
}

fdm_tensor *fdm_gaussian_blur(fdm_tensor *x, int kx, int ky, double sx, double sy) {
  char b1[128];
  const char *op = "gaussian_blur";
  if (nn_check(op, 1, &x)) return NULL;
  if (x->ndim < 2) { fdm_seterror("%s: expected input [..., H, W], got %s", op, SHP(x, b1)); return NULL; }
  if (kx < 1 || ky < 1 || kx % 2 == 0 || ky % 2 == 0) {
    fdm_seterror("%s: kernel_size must be odd and positive, got {%d, %d}", op, kx, ky);
    return NULL;
  }
  if (!(sx > 0) || !(sy > 0)) { fdm_seterror("%s: sigma must be positive, got {%g, %g}", op, sx, sy); return NULL; }
  int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
  if (H > 0x7fffffff || W > 0x7fffffff || H * W > 0x7fffffff) { fdm_seterror("%s: input %s too large", op, SHP(x, b1)); return NULL; }
  if (kx / 2 >= W || ky / 2 >= H) {
    fdm_seterror("%s: reflect padding of %d x %d (kernel %d x %d) needs an input larger than that, got %s", op,
                 ky / 2, kx / 2, ky, kx, SHP(x, b1));
    return NULL;
  }
  int64_t P = 1;
  for (int d = 0; d < x->ndim - 2; d++) P *= x->shape[d];
  fdm_blur_params p = {P, (int)H, (int)W, kx, ky};
  float wx[kx], wy[ky];
  gauss_kernel(kx, sx, wx);
  gauss_kernel(ky, sy, wy);
  fdm_tensor *xc = fdm_contiguous(x);
  fdm_tensor *out = xc ? fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device) : NULL;
  fdm_node *n = NULL;
  if (!out) goto fail;
  fdm_kview vx = fdm_kview_of(xc), vy = fdm_kview_of(out);
  if ((P * H * W > 0 && FDM_KERNEL(x->device, op, blur_forward, &p, wx, wy, &vx, &vy)) ||
      fdm_node_new(op, blur_backward, 1, &x, sizeof(blur_state), &n))
    goto fail;
  if (n) {
    blur_state *s = n->state;
    s->p = p; s->sx = sx; s->sy = sy;
    if (fdm_node_attach(out, n)) goto fail;
  }
  fdm_release(xc);
  return out;
fail:
  fdm_release(out); fdm_release(xc);
  return NULL;
}

/* ======================================================================= attention */

fdm_tensor *fdm_scaled_dot_product_attention(fdm_tensor *q, fdm_tensor *k, fdm_tensor *v, fdm_tensor *mask) {
  char b1[128], b2[128], b3[128];
  const char *op = "scaled_dot_product_attention";
  fdm_tensor *chk[4] = {q, k, v, mask};
  if (fdm_backend_check(op, 4, chk) || nn_check(op, 3, chk)) return NULL;
  if (q->ndim < 2 || k->ndim < 2 || v->ndim < 2) {
    fdm_seterror("%s: q, k, v must be [..., L, d], [..., S, d], [..., S, dv], got %s, %s, %s", op, SHP(q, b1),
                 SHP(k, b2), SHP(v, b3));
    return NULL;
  }
  if (q->shape[q->ndim - 1] != k->shape[k->ndim - 1]) {
    fdm_seterror("%s: q %s and k %s must have the same last dim (%lld != %lld)", op, SHP(q, b1), SHP(k, b2),
                 (long long)q->shape[q->ndim - 1], (long long)k->shape[k->ndim - 1]);
    return NULL;
  }
  if (k->shape[k->ndim - 2] != v->shape[v->ndim - 2]) {
    fdm_seterror("%s: k %s and v %s must have the same sequence length (dim -2: %lld != %lld)", op, SHP(k, b1),
                 SHP(v, b2), (long long)k->shape[k->ndim - 2], (long long)v->shape[v->ndim - 2]);
    return NULL;
  }
  if (mask && mask->dtype != FDM_BOOL && fdm_check_float(op, mask)) {
    fdm_seterror("%s: mask must be bool (true = attend) or float32 (added to the scores), got %s", op,
                 fdm_dtype_name(mask->dtype));
    return NULL;
  }
  double scale = 1.0 / sqrt((double)q->shape[q->ndim - 1]);
  fdm_tensor *kt = fdm_transpose(k, k->ndim - 2, k->ndim - 1);
  fdm_tensor *s0 = kt ? fdm_matmul(q, kt) : NULL;
  fdm_tensor *s = s0 ? fdm_scale(s0, scale) : NULL;
  fdm_release(kt); fdm_release(s0);
  if (s && mask) {
    fdm_tensor *sm = NULL;
    if (mask->dtype == FDM_BOOL) {
      fdm_tensor *ninf = fdm_full(FDM_FLOAT32, 0, NULL, -INFINITY, s->device);
      sm = ninf ? fdm_where(mask, s, ninf) : NULL;
      fdm_release(ninf);
    } else {
      sm = fdm_binary(FDM_ADD, s, mask);
    }
    if (!sm) {
      char msg[512];
      snprintf(msg, sizeof msg, "%s: mask %s does not broadcast to the scores %s (%s)", op, SHP(mask, b1),
               SHP(s, b2), fdm_lasterror());
      fdm_seterror("%s", msg);
    }
    fdm_release(s);
    s = sm;
  }
  fdm_tensor *p = s ? fdm_softmax(s, s->ndim - 1, 0) : NULL;
  fdm_tensor *out = p ? fdm_matmul(p, v) : NULL;
  fdm_release(s); fdm_release(p);
  return out;
}
