/* op_nn_misc.c: activations, dropout, losses, one_hot, gaussian_blur and
** scaled_dot_product_attention. Most are composites of core ops (their
** autograd comes from those); gaussian_blur has its own node (the backward
** is the adjoint of the separable reflect-padded blur). */
#include <math.h>
#include <stdio.h>
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
  fdm_tensor *m = fdm_rand(x->ndim, x->shape, x->device);
  if (!m) return NULL;
  float *pm = fdm_data(m), scale = p < 1 ? (float)(1.0 / (1.0 - p)) : 0.0f, fp = (float)p;
  int64_t n = fdm_numel(m);
  for (int64_t i = 0; i < n; i++) pm[i] = pm[i] >= fp ? scale : 0.0f;
  fdm_tensor *y = fdm_binary(FDM_MUL, x, m);
  fdm_release(m);
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
  if (!lc) return NULL;
  const int64_t *pl = fdm_data(lc);
  int64_t nl = fdm_numel(lc);
  for (int64_t i = 0; i < nl; i++)
    if (pl[i] < 0 || pl[i] >= C) {
      fdm_seterror("%s: label %lld at position %lld is out of range for %lld classes (labels are 0-based)", op,
                   (long long)pl[i], (long long)i + 1, (long long)C);
      fdm_release(lc);
      return NULL;
    }
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

fdm_tensor *fdm_one_hot(fdm_tensor *labels, int64_t n) {
  char b1[128];
  if (fdm_backend_check("one_hot", 1, &labels)) return NULL;
  if (labels->dtype != FDM_INT64) {
    fdm_seterror("one_hot: labels must be int64 (0-based class indices), got %s", fdm_dtype_name(labels->dtype));
    return NULL;
  }
  if (labels->device != FDM_CPU) { fdm_seterror("one_hot: not implemented on device %s", fdm_device_name(labels->device)); return NULL; }
  if (labels->ndim >= FDM_MAXDIM) { fdm_seterror("one_hot: labels %s have too many dims", SHP(labels, b1)); return NULL; }
  fdm_tensor *lc = fdm_contiguous(labels);
  if (!lc) return NULL;
  const int64_t *pl = fdm_data(lc);
  int64_t nl = fdm_numel(lc);
  if (n < 0) {
    if (nl == 0) { fdm_release(lc); fdm_seterror("one_hot: cannot infer the number of classes of empty labels"); return NULL; }
    int64_t mx = pl[0];
    for (int64_t i = 1; i < nl; i++) if (pl[i] > mx) mx = pl[i];
    n = mx + 1;
  }
  for (int64_t i = 0; i < nl; i++)
    if (pl[i] < 0 || pl[i] >= n) {
      fdm_seterror("one_hot: label %lld at position %lld is out of range for %lld classes (labels are 0-based)",
                   (long long)pl[i], (long long)i + 1, (long long)n);
      fdm_release(lc);
      return NULL;
    }
  int64_t shape[FDM_MAXDIM];
  memcpy(shape, labels->shape, labels->ndim * sizeof(int64_t));
  shape[labels->ndim] = n;
  fdm_tensor *out = fdm_zeros(FDM_INT64, labels->ndim + 1, shape, labels->device);
  if (out) {
    int64_t *po = fdm_data(out);
    for (int64_t i = 0; i < nl; i++) po[i * n + pl[i]] = 1;
  }
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

static inline int refl(int i, int n) {
  if (i < 0) i = -i;
  if (i >= n) i = 2 * (n - 1) - i;
  return i;
}

/* backward = 0: y = blur(x); backward = 1: x = blur^T(y) */
static void blur_planes(int64_t P, int H, int W, int kx, int ky, const float *gx_, const float *gy_, int backward,
                        float *x, float *y) {
  int rx = kx / 2, ry = ky / 2;
#pragma omp parallel for schedule(static) if (P * H * W * (kx + ky) > FDM_PAR_MIN)
  for (int64_t p = 0; p < P; p++) {
    float *xp = x + p * H * W, *yp = y + p * H * W;
    float *tmp = malloc(sizeof(float) * H * W);
    if (!tmp) continue;   /* cannot happen in practice; leaves garbage rather than crashing */
    if (!backward) {
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          float s = 0;
          for (int t = 0; t < kx; t++) s += gx_[t] * xp[h * W + refl(w + t - rx, W)];
          tmp[h * W + w] = s;
        }
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          float s = 0;
          for (int t = 0; t < ky; t++) s += gy_[t] * tmp[refl(h + t - ry, H) * W + w];
          yp[h * W + w] = s;
        }
    } else {
      memset(tmp, 0, sizeof(float) * H * W);
      memset(xp, 0, sizeof(float) * H * W);
      for (int h = 0; h < H; h++)
        for (int t = 0; t < ky; t++) {
          int hs = refl(h + t - ry, H);
          float c = gy_[t];
          for (int w = 0; w < W; w++) tmp[hs * W + w] += c * yp[h * W + w];
        }
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          float g = tmp[h * W + w];
          for (int t = 0; t < kx; t++) xp[h * W + refl(w + t - rx, W)] += gx_[t] * g;
        }
    }
    free(tmp);
  }
}

static int blur_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  int kx = (int)n->i[3], ky = (int)n->i[4];
  float kxw[kx], kyw[ky];
  gauss_kernel(kx, n->f[0], kxw);
  gauss_kernel(ky, n->f[1], kyw);
  fdm_tensor *gc = fdm_contiguous(g);
  fdm_tensor *gx = gc ? fdm_empty(FDM_FLOAT32, n->in_ndim[0], n->in_shape[0], g->device) : NULL;
  if (!gx) { fdm_release(gc); return -1; }
  blur_planes(n->i[0], (int)n->i[1], (int)n->i[2], kx, ky, kxw, kyw, 1, fdm_data(gx), fdm_data(gc));
  fdm_release(gc);
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
  fdm_tensor *xc = fdm_contiguous(x);
  fdm_tensor *out = xc ? fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device) : NULL;
  if (!out) { fdm_release(xc); return NULL; }
  float kxw[kx], kyw[ky];
  gauss_kernel(kx, sx, kxw);
  gauss_kernel(ky, sy, kyw);
  if (P * H * W > 0) blur_planes(P, (int)H, (int)W, kx, ky, kxw, kyw, 0, fdm_data(xc), fdm_data(out));
  fdm_release(xc);
  fdm_node *n = fdm_node_new(op, blur_backward, 1, &x);
  if (n) {
    n->i[0] = P; n->i[1] = H; n->i[2] = W; n->i[3] = kx; n->i[4] = ky;
    n->f[0] = sx; n->f[1] = sy;
    fdm_node_attach(out, n);
  }
  return out;
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
