/* op_nn.c: linear, bmm, conv2d, conv_transpose2d, pooling, interpolate and
** the normalisations, on the CPU kernels of kernels/cpu/cpu_nn.h. Each op
** checks its arguments (errors name the op and the shapes), makes its inputs
** contiguous, runs the kernel and records a node whose backward calls the
** matching backward kernel. Ops that save their own output use
** fdm_node_save_output (no tensor <-> node cycle). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"
#include "fdm_nnops.h"
#include "cpu_nn.h"

#define SHP(t, buf) fdm_shapestr((t), (buf), sizeof(buf))

/* every tensor operand (NULL skipped): available device, float32, CPU */
int nn_check(const char *op, int n, fdm_tensor *const *ts) {
  if (fdm_backend_check(op, n, ts)) return -1;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) continue;
    if (fdm_check_float(op, ts[i])) return -1;
    if (ts[i]->device != FDM_CPU)
      return fdm_seterror("%s: not implemented on device %s (only cpu)", op, fdm_device_name(ts[i]->device));
  }
  return 0;
}

static fdm_tensor *contig_or_null(fdm_tensor *t) { return t ? fdm_contiguous(t) : NULL; }

static int check_int_range(const char *op, const fdm_tensor *t) {
  char b[128];
  for (int d = 0; d < t->ndim; d++)
    if (t->shape[d] > 0x7fffffff) return fdm_seterror("%s: shape %s too large", op, SHP(t, b));
  return 0;
}

/* a 1-D parameter of C elements (weight, bias, running stats) */
static int check_vec(const char *op, const char *what, const fdm_tensor *v, int64_t C, const fdm_tensor *x) {
  char b1[128], b2[128];
  if (!v) return 0;
  if (v->ndim != 1 || v->shape[0] != C)
    return fdm_seterror("%s: %s has shape %s, expected [%lld] for input %s", op, what, SHP(v, b1),
                        (long long)C, SHP(x, b2));
  return 0;
}

/* ======================================================================= linear */

static int linear_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  fdm_tensor *x = n->saved[0], *w = n->saved[1];
  int64_t M = n->i[0], IN = n->i[1], OUT = n->i[2];
  fdm_tensor *gc = fdm_contiguous(g);
  if (!gc) return -1;
  const float *pg = fdm_data(gc);
  if (n->needs[0]) {
    fdm_tensor *gx = fdm_empty(FDM_FLOAT32, n->in_ndim[0], n->in_shape[0], g->device);
    if (!gx) { fdm_release(gc); return -1; }
    if (M && IN) {
      if (OUT) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)IN, (int)OUT, 1.0f,
                           pg, (int)OUT, fdm_data(w), (int)IN, 0.0f, fdm_data(gx), (int)IN);
      else memset(fdm_data(gx), 0, M * IN * sizeof(float));
    }
    gin[0] = gx;
  }
  if (n->needs[1]) {
    fdm_tensor *gw = fdm_empty(FDM_FLOAT32, 2, n->in_shape[1], g->device);
    if (!gw) { fdm_release(gc); return -1; }
    if (OUT && IN) {
      if (M) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OUT, (int)IN, (int)M, 1.0f,
                         pg, (int)OUT, fdm_data(x), (int)IN, 0.0f, fdm_data(gw), (int)IN);
      else memset(fdm_data(gw), 0, OUT * IN * sizeof(float));
    }
    gin[1] = gw;
  }
  if (n->needs[2]) {
    fdm_tensor *gb = fdm_empty(FDM_FLOAT32, 1, &OUT, g->device);
    if (!gb) { fdm_release(gc); return -1; }
    float *pb = fdm_data(gb);
    for (int64_t o = 0; o < OUT; o++) {
      double s = 0;
      for (int64_t m = 0; m < M; m++) s += pg[m * OUT + o];
      pb[o] = (float)s;
    }
    gin[2] = gb;
  }
  fdm_release(gc);
  return 0;
}

fdm_tensor *fdm_linear(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b) {
  char b1[128], b2[128];
  fdm_tensor *chk[3] = {x, w, b};
  if (nn_check("linear", 3, chk)) return NULL;
  if (x->ndim < 1) { fdm_seterror("linear: input must have at least 1 dim, got a scalar"); return NULL; }
  if (w->ndim != 2) {
    fdm_seterror("linear: weight must be 2-D [out_features, in_features], got %s", SHP(w, b1));
    return NULL;
  }
  int64_t IN = w->shape[1], OUT = w->shape[0];
  if (x->shape[x->ndim - 1] != IN) {
    fdm_seterror("linear: input %s has %lld features in its last dim but weight %s expects %lld",
                 SHP(x, b1), (long long)x->shape[x->ndim - 1], SHP(w, b2), (long long)IN);
    return NULL;
  }
  if (b && (b->ndim != 1 || b->shape[0] != OUT)) {
    fdm_seterror("linear: bias has shape %s, expected [%lld] for weight %s", SHP(b, b1), (long long)OUT, SHP(w, b2));
    return NULL;
  }
  if (check_int_range("linear", x) || check_int_range("linear", w)) return NULL;
  int64_t M = fdm_numel(x) / (IN ? IN : 1);
  if (IN == 0) { M = 1; for (int d = 0; d < x->ndim - 1; d++) M *= x->shape[d]; }
  int64_t oshape[FDM_MAXDIM];
  memcpy(oshape, x->shape, x->ndim * sizeof(int64_t));
  oshape[x->ndim - 1] = OUT;
  fdm_tensor *xc = fdm_contiguous(x), *wc = fdm_contiguous(w), *bc = contig_or_null(b);
  fdm_tensor *out = (xc && wc && (bc || !b)) ? fdm_empty(FDM_FLOAT32, x->ndim, oshape, x->device) : NULL;
  if (out) {
    float *po = fdm_data(out);
    if (M && OUT) {
      if (bc) {
        const float *pb = fdm_data(bc);
        for (int64_t m = 0; m < M; m++) memcpy(po + m * OUT, pb, OUT * sizeof(float));
      }
      if (IN)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)OUT, (int)IN, 1.0f,
                    fdm_data(xc), (int)IN, fdm_data(wc), (int)IN, bc ? 1.0f : 0.0f, po, (int)OUT);
      else if (!bc) memset(po, 0, M * OUT * sizeof(float));
    }
    fdm_tensor *in[3] = {x, w, b};
    fdm_node *n = fdm_node_new("linear", linear_backward, 3, in);
    if (n) {
      n->i[0] = M; n->i[1] = IN; n->i[2] = OUT;
      fdm_node_save(n, xc); fdm_node_save(n, wc);
      fdm_node_attach(out, n);
    }
  }
  fdm_release(xc); fdm_release(wc); fdm_release(bc);
  return out;
}

fdm_tensor *fdm_bmm(fdm_tensor *a, fdm_tensor *b) {
  char b1[128], b2[128];
  fdm_tensor *chk[2] = {a, b};
  if (nn_check("bmm", 2, chk)) return NULL;
  if (a->ndim != 3 || b->ndim != 3 || a->shape[0] != b->shape[0] || a->shape[2] != b->shape[1]) {
    fdm_seterror("bmm: expected [B, n, m] and [B, m, p], got %s and %s", SHP(a, b1), SHP(b, b2));
    return NULL;
  }
  return fdm_matmul(a, b);
}

/* ======================================================================= conv */

void fdm_conv_opts_default(fdm_conv_opts *o) {
  for (int i = 0; i < 2; i++) { o->stride[i] = 1; o->padding[i] = 0; o->dilation[i] = 1; o->output_padding[i] = 0; }
  o->groups = 1;
}

static void params_to_node(fdm_node *n, const cpu_conv_params *p) {
  int v[18] = {p->N, p->C, p->H, p->W, p->K, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw, p->dh, p->dw,
               p->groups, p->OH, p->OW};
  for (int i = 0; i < 16; i++) n->i[i] = v[i];
}

static void params_from_node(const fdm_node *n, cpu_conv_params *p) {
  p->N = (int)n->i[0]; p->C = (int)n->i[1]; p->H = (int)n->i[2]; p->W = (int)n->i[3]; p->K = (int)n->i[4];
  p->kh = (int)n->i[5]; p->kw = (int)n->i[6]; p->sh = (int)n->i[7]; p->sw = (int)n->i[8];
  p->ph = (int)n->i[9]; p->pw = (int)n->i[10]; p->dh = (int)n->i[11]; p->dw = (int)n->i[12];
  p->groups = (int)n->i[13]; p->OH = (int)n->i[14]; p->OW = (int)n->i[15];
}

static float *alloc_work(size_t nfloats) {
  float *w = malloc((nfloats ? nfloats : 1) * sizeof(float));
  if (!w) fdm_seterror("out of memory (conv scratch of %zu bytes)", nfloats * sizeof(float));
  return w;
}

static int conv_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  cpu_conv_params p;
  params_from_node(n, &p);
  int transposed = (int)n->i[16];
  fdm_tensor *x = n->saved[0], *w = n->saved[1];
  fdm_tensor *gc = fdm_contiguous(g);
  fdm_tensor *gx = n->needs[0] ? fdm_empty(FDM_FLOAT32, 4, x->shape, g->device) : NULL;
  fdm_tensor *gw = n->needs[1] ? fdm_empty(FDM_FLOAT32, 4, w->shape, g->device) : NULL;
  int64_t K = p.K;
  fdm_tensor *gb = n->needs[2] ? fdm_empty(FDM_FLOAT32, 1, &K, g->device) : NULL;
  size_t ws = transposed ? cpu_conv_transpose2d_work(&p) : cpu_conv2d_work(&p);
  float *work = alloc_work(ws);
  if (!gc || !work || (n->needs[0] && !gx) || (n->needs[1] && !gw) || (n->needs[2] && !gb)) {
    fdm_release(gc); fdm_release(gx); fdm_release(gw); fdm_release(gb); free(work);
    return -1;
  }
  if (transposed)
    cpu_conv_transpose2d_backward(&p, fdm_data(x), fdm_data(w), fdm_data(gc), gx ? fdm_data(gx) : NULL,
                                  gw ? fdm_data(gw) : NULL, gb ? fdm_data(gb) : NULL, work);
  else
    cpu_conv2d_backward(&p, fdm_data(x), fdm_data(w), fdm_data(gc), gx ? fdm_data(gx) : NULL,
                        gw ? fdm_data(gw) : NULL, gb ? fdm_data(gb) : NULL, work);
  free(work);
  fdm_release(gc);
  gin[0] = gx; gin[1] = gw; gin[2] = gb;
  return 0;
}

static fdm_tensor *conv_impl(const char *op, int transposed, fdm_tensor *x, fdm_tensor *w, fdm_tensor *b,
                             const fdm_conv_opts *o, const fdm_tensor *shown);

/* [C, H, W] inputs: run as a batch of one */
static fdm_tensor *conv_entry(const char *op, int transposed, fdm_tensor *x, fdm_tensor *w, fdm_tensor *b,
                              const fdm_conv_opts *o) {
  char b1[128];
  fdm_conv_opts def;
  if (!o) { fdm_conv_opts_default(&def); o = &def; }
  fdm_tensor *chk[3] = {x, w, b};
  if (nn_check(op, 3, chk)) return NULL;
  if (x->ndim == 3) {
    fdm_tensor *x4 = fdm_unsqueeze(x, 0);
    fdm_tensor *y4 = x4 ? conv_impl(op, transposed, x4, w, b, o, x) : NULL;
    fdm_tensor *y = y4 ? fdm_squeeze(y4, 0) : NULL;
    fdm_release(x4); fdm_release(y4);
    return y;
  }
  if (x->ndim != 4) {
    fdm_seterror("%s: expected input [N, C, H, W] or [C, H, W], got %s", op, SHP(x, b1));
    return NULL;
  }
  return conv_impl(op, transposed, x, w, b, o, x);
}

/* shown: the input as the caller gave it (for error messages) */
static fdm_tensor *conv_impl(const char *op, int transposed, fdm_tensor *x, fdm_tensor *w, fdm_tensor *b,
                             const fdm_conv_opts *o, const fdm_tensor *shown) {
  char b1[128], b2[128];
  if (w->ndim != 4) {
    fdm_seterror(transposed ? "%s: weight must be 4-D [C_in, C_out/groups, kh, kw], got %s"
                            : "%s: weight must be 4-D [C_out, C_in/groups, kh, kw], got %s", op, SHP(w, b1));
    return NULL;
  }
  if (check_int_range(op, x) || check_int_range(op, w)) return NULL;
  for (int i = 0; i < 2; i++) {
    if (o->stride[i] < 1) { fdm_seterror("%s: stride must be >= 1, got %d", op, o->stride[i]); return NULL; }
    if (o->padding[i] < 0) { fdm_seterror("%s: padding must be >= 0, got %d", op, o->padding[i]); return NULL; }
    if (o->dilation[i] < 1) { fdm_seterror("%s: dilation must be >= 1, got %d", op, o->dilation[i]); return NULL; }
    if (o->output_padding[i] < 0) { fdm_seterror("%s: output_padding must be >= 0, got %d", op, o->output_padding[i]); return NULL; }
  }
  int G = o->groups;
  if (G < 1) { fdm_seterror("%s: groups must be >= 1, got %d", op, G); return NULL; }
  cpu_conv_params p;
  p.N = (int)x->shape[0]; p.C = (int)x->shape[1]; p.H = (int)x->shape[2]; p.W = (int)x->shape[3];
  p.kh = (int)w->shape[2]; p.kw = (int)w->shape[3];
  p.sh = o->stride[0]; p.sw = o->stride[1]; p.ph = o->padding[0]; p.pw = o->padding[1];
  p.dh = o->dilation[0]; p.dw = o->dilation[1]; p.groups = G;
  int64_t ekh = (int64_t)p.dh * (p.kh - 1) + 1, ekw = (int64_t)p.dw * (p.kw - 1) + 1;
  if (!transposed) {
    if ((int64_t)w->shape[1] * G != p.C) {
      fdm_seterror("%s: input has %d channels but weight expects %lld (groups %d); input %s, weight %s", op,
                   p.C, (long long)w->shape[1] * G, G, SHP(shown, b1), SHP(w, b2));
      return NULL;
    }
    p.K = (int)w->shape[0];
    if (p.K % G) {
      fdm_seterror("%s: weight %s has %d output channels, not divisible by groups %d", op, SHP(w, b1), p.K, G);
      return NULL;
    }
    if (o->output_padding[0] || o->output_padding[1]) {
      fdm_seterror("%s: output_padding is only for conv_transpose2d", op);
      return NULL;
    }
    int64_t hp = (int64_t)p.H + 2 * p.ph, wp = (int64_t)p.W + 2 * p.pw;
    if (hp < ekh || wp < ekw) {
      fdm_seterror("%s: input %s padded to %lldx%lld is smaller than the (dilated) kernel %lldx%lld; weight %s",
                   op, SHP(shown, b1), (long long)hp, (long long)wp, (long long)ekh, (long long)ekw, SHP(w, b2));
      return NULL;
    }
    p.OH = (int)((hp - ekh) / p.sh + 1); p.OW = (int)((wp - ekw) / p.sw + 1);
  } else {
    if (w->shape[0] != p.C) {
      fdm_seterror("%s: input has %d channels but weight expects %lld (weight is [C_in, C_out/groups, kh, kw]); "
                   "input %s, weight %s", op, p.C, (long long)w->shape[0], SHP(shown, b1), SHP(w, b2));
      return NULL;
    }
    if (p.C % G) {
      fdm_seterror("%s: input channels %d not divisible by groups %d; input %s", op, p.C, G, SHP(shown, b1));
      return NULL;
    }
    p.K = (int)(w->shape[1] * G);
    for (int i = 0; i < 2; i++)
      if (o->output_padding[i] >= o->stride[i] && o->output_padding[i] >= o->dilation[i]) {
        fdm_seterror("%s: output_padding (%d) must be smaller than either stride (%d) or dilation (%d)", op,
                     o->output_padding[i], o->stride[i], o->dilation[i]);
        return NULL;
      }
    int64_t oh = ((int64_t)p.H - 1) * p.sh - 2 * p.ph + ekh - 1 + o->output_padding[0] + 1;
    int64_t ow = ((int64_t)p.W - 1) * p.sw - 2 * p.pw + ekw - 1 + o->output_padding[1] + 1;
    if (oh < 1 || ow < 1) {
      fdm_seterror("%s: output size %lldx%lld is too small for input %s, weight %s", op, (long long)oh,
                   (long long)ow, SHP(shown, b1), SHP(w, b2));
      return NULL;
    }
    p.OH = (int)oh; p.OW = (int)ow;
  }
  if (b && (b->ndim != 1 || b->shape[0] != p.K)) {
    fdm_seterror("%s: bias has shape %s, expected [%d]; weight %s", op, SHP(b, b1), p.K, SHP(w, b2));
    return NULL;
  }
  int64_t oshape[4] = {p.N, p.K, p.OH, p.OW};
  fdm_tensor *xc = fdm_contiguous(x), *wc = fdm_contiguous(w), *bc = contig_or_null(b);
  fdm_tensor *out = (xc && wc && (bc || !b)) ? fdm_empty(FDM_FLOAT32, 4, oshape, x->device) : NULL;
  float *work = out ? alloc_work(transposed ? cpu_conv_transpose2d_work(&p) : cpu_conv2d_work(&p)) : NULL;
  if (!work) { fdm_release(out); out = NULL; }
  if (out) {
    if (transposed)
      cpu_conv_transpose2d_forward(&p, fdm_data(xc), fdm_data(wc), bc ? fdm_data(bc) : NULL, fdm_data(out), work);
    else
      cpu_conv2d_forward(&p, fdm_data(xc), fdm_data(wc), bc ? fdm_data(bc) : NULL, fdm_data(out), work);
    free(work);
    fdm_tensor *in[3] = {x, w, b};
    fdm_node *n = fdm_node_new(op, conv_backward, 3, in);
    if (n) {
      params_to_node(n, &p);
      n->i[16] = transposed;
      fdm_node_save(n, xc); fdm_node_save(n, wc);
      fdm_node_attach(out, n);
    }
  }
  fdm_release(xc); fdm_release(wc); fdm_release(bc);
  return out;
}

fdm_tensor *fdm_conv2d(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b, const fdm_conv_opts *o) {
  return conv_entry("conv2d", 0, x, w, b, o);
}

fdm_tensor *fdm_conv_transpose2d(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b, const fdm_conv_opts *o) {
  return conv_entry("conv_transpose2d", 1, x, w, b, o);
}

/* ======================================================================= pooling */

/* n->i: NC, H, W, OH, OW, kh, kw, sh, sw, ph, pw, is_max */
static int pool_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  int NC = (int)n->i[0], H = (int)n->i[1], W = (int)n->i[2], OH = (int)n->i[3], OW = (int)n->i[4];
  fdm_tensor *gc = fdm_contiguous(g);
  fdm_tensor *gx = gc ? fdm_empty(FDM_FLOAT32, n->in_ndim[0], n->in_shape[0], g->device) : NULL;
  if (!gx) { fdm_release(gc); return -1; }
  if (n->i[11])
    cpu_max_pool2d_backward(NC, H, W, OH, OW, fdm_data(gc), fdm_data(n->saved[0]), fdm_data(gx));
  else
    cpu_avg_pool2d_backward(NC, H, W, OH, OW, (int)n->i[5], (int)n->i[6], (int)n->i[7], (int)n->i[8],
                            (int)n->i[9], (int)n->i[10], fdm_data(gc), fdm_data(gx));
  fdm_release(gc);
  gin[0] = gx;
  return 0;
}

static fdm_tensor *pool2d(const char *op, int is_max, fdm_tensor *x, const int *k, const int *stride,
                          const int *padding) {
  char b1[128];
  if (nn_check(op, 1, &x)) return NULL;
  if (x->ndim != 3 && x->ndim != 4) {
    fdm_seterror("%s: expected input [N, C, H, W] or [C, H, W], got %s", op, SHP(x, b1));
    return NULL;
  }
  if (check_int_range(op, x)) return NULL;
  int s[2], pd[2] = {0, 0};
  for (int i = 0; i < 2; i++) {
    s[i] = stride ? stride[i] : k[i];
    if (padding) pd[i] = padding[i];
    if (k[i] < 1) { fdm_seterror("%s: kernel size must be >= 1, got %d", op, k[i]); return NULL; }
    if (s[i] < 1) { fdm_seterror("%s: stride must be >= 1, got %d", op, s[i]); return NULL; }
    if (pd[i] < 0 || pd[i] > k[i] / 2) {
      fdm_seterror("%s: padding %d must be between 0 and half the kernel size %d", op, pd[i], k[i]);
      return NULL;
    }
  }
  int nd = x->ndim;
  int64_t H = x->shape[nd - 2], W = x->shape[nd - 1], NC = fdm_numel(x) / ((H * W) != 0 ? H * W : 1);
  if (H * W == 0) { NC = 1; for (int d = 0; d < nd - 2; d++) NC *= x->shape[d]; }
  int64_t OH = (H + 2 * pd[0] - k[0]) / s[0] + 1, OW = (W + 2 * pd[1] - k[1]) / s[1] + 1;
  if (H + 2 * pd[0] < k[0] || W + 2 * pd[1] < k[1] || OH < 1 || OW < 1) {
    fdm_seterror("%s: input %s (padding %dx%d) is smaller than the kernel %dx%d", op, SHP(x, b1), pd[0], pd[1],
                 k[0], k[1]);
    return NULL;
  }
  int64_t oshape[4];
  memcpy(oshape, x->shape, nd * sizeof(int64_t));
  oshape[nd - 2] = OH; oshape[nd - 1] = OW;
  fdm_tensor *xc = fdm_contiguous(x);
  fdm_tensor *out = xc ? fdm_empty(FDM_FLOAT32, nd, oshape, x->device) : NULL;
  fdm_tensor *idx = (out && is_max) ? fdm_empty(FDM_INT64, nd, oshape, x->device) : NULL;
  if (!out || (is_max && !idx)) { fdm_release(xc); fdm_release(out); return NULL; }
  if (is_max)
    cpu_max_pool2d_forward((int)NC, (int)H, (int)W, (int)OH, (int)OW, k[0], k[1], s[0], s[1], pd[0], pd[1],
                           fdm_data(xc), fdm_data(out), fdm_data(idx));
  else
    cpu_avg_pool2d_forward((int)NC, (int)H, (int)W, (int)OH, (int)OW, k[0], k[1], s[0], s[1], pd[0], pd[1],
                           fdm_data(xc), fdm_data(out));
  fdm_node *n = fdm_node_new(op, pool_backward, 1, &x);
  if (n) {
    int64_t v[12] = {NC, H, W, OH, OW, k[0], k[1], s[0], s[1], pd[0], pd[1], is_max};
    memcpy(n->i, v, sizeof v);
    if (is_max) fdm_node_save(n, idx);
    fdm_node_attach(out, n);
  }
  fdm_release(idx); fdm_release(xc);
  return out;
}

fdm_tensor *fdm_avg_pool2d(fdm_tensor *x, const int *k, const int *stride, const int *padding) {
  return pool2d("avg_pool2d", 0, x, k, stride, padding);
}
fdm_tensor *fdm_max_pool2d(fdm_tensor *x, const int *k, const int *stride, const int *padding) {
  return pool2d("max_pool2d", 1, x, k, stride, padding);
}

/* ======================================================================= interpolate */

/* PyTorch's index arithmetic when a scale_factor was given (it then maps with
** 1/scale rather than in/out); used only where the two differ. */
static inline int near_src(int dst, int in, int out, float rs) {
  if (in == out) return dst;
  if (out == 2 * in) return dst >> 1;
  int s = (int)floorf((float)dst * rs);
  return s < in - 1 ? s : in - 1;
}
static inline void lin_src(int dst, int in, float rs, int *i0, int *i1, float *l1) {
  float src = rs * ((float)dst + 0.5f) - 0.5f;
  if (src < 0) src = 0;
  int a = (int)src;
  if (a > in - 1) a = in - 1;
  *i0 = a; *i1 = a + (a < in - 1); *l1 = src - (float)a;
}

/* backward = 0: y = f(x); backward = 1: gx = f^T(gy) (x is gx, y is gy) */
static void resize_scaled(int NC, int H, int W, int OH, int OW, float rh, float rw, int bilinear, int backward,
                          float *x, float *y) {
#pragma omp parallel for schedule(static) if ((int64_t)NC * OH * OW > FDM_PAR_MIN)
  for (int nc = 0; nc < NC; nc++) {
    float *xp = x + (size_t)nc * H * W, *yp = y + (size_t)nc * OH * OW;
    if (backward) memset(xp, 0, sizeof(float) * H * W);
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        float *yo = yp + (size_t)oh * OW + ow;
        if (!bilinear) {
          float *xi = xp + (size_t)near_src(oh, H, OH, rh) * W + near_src(ow, W, OW, rw);
          if (backward) *xi += *yo; else *yo = *xi;
        } else {
          int h0, h1, w0, w1; float lh, lw;
          lin_src(oh, H, rh, &h0, &h1, &lh);
          lin_src(ow, W, rw, &w0, &w1, &lw);
          float c00 = (1 - lh) * (1 - lw), c01 = (1 - lh) * lw, c10 = lh * (1 - lw), c11 = lh * lw;
          float *r0 = xp + (size_t)h0 * W, *r1 = xp + (size_t)h1 * W;
          if (backward) {
            r0[w0] += c00 * *yo; r0[w1] += c01 * *yo; r1[w0] += c10 * *yo; r1[w1] += c11 * *yo;
          } else {
            *yo = c00 * r0[w0] + c01 * r0[w1] + c10 * r1[w0] + c11 * r1[w1];
          }
        }
      }
  }
}

/* n->i: NC, H, W, OH, OW, mode, align_corners, use_scaled; n->f: rh, rw */
static int interp_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  int NC = (int)n->i[0], H = (int)n->i[1], W = (int)n->i[2], OH = (int)n->i[3], OW = (int)n->i[4];
  int bil = n->i[5] == FDM_INTERP_BILINEAR;
  fdm_tensor *gc = fdm_contiguous(g);
  fdm_tensor *gx = gc ? fdm_empty(FDM_FLOAT32, n->in_ndim[0], n->in_shape[0], g->device) : NULL;
  if (!gx) { fdm_release(gc); return -1; }
  if (n->i[7]) resize_scaled(NC, H, W, OH, OW, (float)n->f[0], (float)n->f[1], bil, 1, fdm_data(gx), fdm_data(gc));
  else if (bil) cpu_upsample_bilinear_backward(NC, H, W, OH, OW, (int)n->i[6], fdm_data(gc), fdm_data(gx));
  else cpu_upsample_nearest_backward(NC, H, W, OH, OW, fdm_data(gc), fdm_data(gx));
  fdm_release(gc);
  gin[0] = gx;
  return 0;
}

fdm_tensor *fdm_interpolate(fdm_tensor *x, int64_t oh, int64_t ow, double scale_h, double scale_w,
                            fdm_interp_mode mode, int align_corners) {
  char b1[128];
  if (nn_check("interpolate", 1, &x)) return NULL;
  if (x->ndim != 4) {
    fdm_seterror("interpolate: expected a 4-D input [N, C, H, W] (2-D resizing), got %s", SHP(x, b1));
    return NULL;
  }
  if (mode != FDM_INTERP_NEAREST && mode != FDM_INTERP_BILINEAR) {
    fdm_seterror("interpolate: unknown mode %d", (int)mode);
    return NULL;
  }
  if (mode == FDM_INTERP_NEAREST && align_corners) {
    fdm_seterror("interpolate: align_corners is only for mode 'bilinear'");
    return NULL;
  }
  if (check_int_range("interpolate", x)) return NULL;
  int64_t H = x->shape[2], W = x->shape[3];
  if (oh < 1 || ow < 1 || oh > 0x7fffffff || ow > 0x7fffffff) {
    fdm_seterror("interpolate: output size %lldx%lld is invalid for input %s", (long long)oh, (long long)ow,
                 SHP(x, b1));
    return NULL;
  }
  if (H < 1 || W < 1) {
    fdm_seterror("interpolate: input %s has an empty spatial dim", SHP(x, b1));
    return NULL;
  }
  int64_t NC = x->shape[0] * x->shape[1];
  /* PyTorch maps with 1/scale when a scale_factor was given; the kernels use in/out */
  float rh = scale_h > 0 ? (float)(1.0 / scale_h) : (float)H / (float)oh;
  float rw = scale_w > 0 ? (float)(1.0 / scale_w) : (float)W / (float)ow;
  int use_scaled = !(mode == FDM_INTERP_BILINEAR && align_corners) &&
                   (rh != (float)H / (float)oh || rw != (float)W / (float)ow);
  int64_t oshape[4] = {x->shape[0], x->shape[1], oh, ow};
  fdm_tensor *xc = fdm_contiguous(x);
  fdm_tensor *out = xc ? fdm_empty(FDM_FLOAT32, 4, oshape, x->device) : NULL;
  if (!out) { fdm_release(xc); return NULL; }
  int bil = mode == FDM_INTERP_BILINEAR;
  if (use_scaled) resize_scaled((int)NC, (int)H, (int)W, (int)oh, (int)ow, rh, rw, bil, 0, fdm_data(xc), fdm_data(out));
  else if (bil) cpu_upsample_bilinear_forward((int)NC, (int)H, (int)W, (int)oh, (int)ow, align_corners,
                                              fdm_data(xc), fdm_data(out));
  else cpu_upsample_nearest_forward((int)NC, (int)H, (int)W, (int)oh, (int)ow, fdm_data(xc), fdm_data(out));
  fdm_release(xc);
  fdm_node *n = fdm_node_new("interpolate", interp_backward, 1, &x);
  if (n) {
    int64_t v[8] = {NC, H, W, oh, ow, mode, align_corners, use_scaled};
    memcpy(n->i, v, sizeof v);
    n->f[0] = rh; n->f[1] = rw;
    fdm_node_attach(out, n);
  }
  return out;
}

/* ======================================================================= batch norm */

/* inputs x, weight, bias. saved: x, save_mean, save_invstd, [pre], [weight].
** n->i: N, C, S, training, gelu, has_weight */
static int bn_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  int N = (int)n->i[0], C = (int)n->i[1], S = (int)n->i[2], training = (int)n->i[3], gelu = (int)n->i[4];
  fdm_tensor *x = n->saved[0], *mean = n->saved[1], *invstd = n->saved[2];
  fdm_tensor *pre = gelu ? n->saved[3] : NULL, *w = n->i[5] ? n->saved[gelu ? 4 : 3] : NULL;
  fdm_tensor *gc = fdm_contiguous(g), *gpre = NULL;
  if (!gc) return -1;
  const float *gy = fdm_data(gc);
  if (gelu) {
    gpre = fdm_empty_like(gc);
    if (!gpre) { fdm_release(gc); return -1; }
    cpu_gelu_backward(fdm_numel(gc), fdm_data(pre), gy, fdm_data(gpre));
    gy = fdm_data(gpre);
  }
  int64_t c64 = C;
  fdm_tensor *gx = n->needs[0] ? fdm_empty(FDM_FLOAT32, n->in_ndim[0], n->in_shape[0], g->device) : NULL;
  fdm_tensor *gw = n->needs[1] ? fdm_empty(FDM_FLOAT32, 1, &c64, g->device) : NULL;
  fdm_tensor *gb = n->needs[2] ? fdm_empty(FDM_FLOAT32, 1, &c64, g->device) : NULL;
  if ((n->needs[0] && !gx) || (n->needs[1] && !gw) || (n->needs[2] && !gb)) {
    fdm_release(gc); fdm_release(gpre); fdm_release(gx); fdm_release(gw); fdm_release(gb);
    return -1;
  }
  cpu_batch_norm_backward(N, C, S, fdm_data(x), w ? fdm_data(w) : NULL, fdm_data(mean), fdm_data(invstd), training,
                          gy, gx ? fdm_data(gx) : NULL, gw ? fdm_data(gw) : NULL, gb ? fdm_data(gb) : NULL);
  fdm_release(gc); fdm_release(gpre);
  gin[0] = gx; gin[1] = gw; gin[2] = gb;
  return 0;
}

static fdm_tensor *bn_impl(const char *op, int gelu, fdm_tensor *x, fdm_tensor *rm, fdm_tensor *rv, fdm_tensor *w,
                           fdm_tensor *b, int training, double momentum, double eps) {
  char b1[128];
  fdm_tensor *chk[5] = {x, rm, rv, w, b};
  if (nn_check(op, 5, chk)) return NULL;
  if (x->ndim < 2) {
    fdm_seterror("%s: expected input [N, C] or [N, C, H, W], got %s", op, SHP(x, b1));
    return NULL;
  }
  if (check_int_range(op, x)) return NULL;
  int64_t N = x->shape[0], C = x->shape[1], S = 1;
  for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
  if (check_vec(op, "running_mean", rm, C, x) || check_vec(op, "running_var", rv, C, x) ||
      check_vec(op, "weight", w, C, x) || check_vec(op, "bias", b, C, x))
    return NULL;
  if ((rm == NULL) != (rv == NULL)) {
    fdm_seterror("%s: give both running_mean and running_var, or neither", op);
    return NULL;
  }
  if (!training && !rm) {
    fdm_seterror("%s: running_mean and running_var are required when training is false", op);
    return NULL;
  }
  if (training && N * S <= 1) {
    fdm_seterror("%s: expected more than 1 value per channel when training, got input %s", op, SHP(x, b1));
    return NULL;
  }
  if (N * S * C > 0x7fffffffLL * 4) { fdm_seterror("%s: input %s too large", op, SHP(x, b1)); return NULL; }
  if (training && rm) {
    if (!fdm_is_contiguous(rm) || !fdm_is_contiguous(rv)) {
      fdm_seterror("%s: running_mean/running_var must be contiguous (they are updated in place)", op);
      return NULL;
    }
    if (!rm->storage || !rv->storage) { fdm_seterror("%s: running stats were freed", op); return NULL; }
  }
  if (eps < 0) { fdm_seterror("%s: eps must be >= 0, got %g", op, eps); return NULL; }
  fdm_tensor *xc = fdm_contiguous(x), *wc = contig_or_null(w), *bc = contig_or_null(b);
  /* eval mode only reads the running stats: any layout will do */
  fdm_tensor *rmc = training ? (fdm_retain(rm), rm) : contig_or_null(rm);
  fdm_tensor *rvc = training ? (fdm_retain(rv), rv) : contig_or_null(rv);
  int64_t c64 = C;
  fdm_tensor *mean = fdm_empty(FDM_FLOAT32, 1, &c64, x->device), *invstd = fdm_empty(FDM_FLOAT32, 1, &c64, x->device);
  fdm_tensor *out = fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device);
  fdm_tensor *pre = gelu ? fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device) : NULL;
  if (!xc || (w && !wc) || (b && !bc) || (rm && (!rmc || !rvc)) || !mean || !invstd || !out || (gelu && !pre)) {
    fdm_release(out); out = NULL;
    goto done;
  }
  if (gelu)
    cpu_batch_norm_gelu_forward((int)N, (int)C, (int)S, fdm_data(xc), wc ? fdm_data(wc) : NULL,
                                bc ? fdm_data(bc) : NULL, rmc ? fdm_data(rmc) : NULL, rvc ? fdm_data(rvc) : NULL,
                                training, (float)momentum, (float)eps, fdm_data(pre), fdm_data(out),
                                fdm_data(mean), fdm_data(invstd));
  else
    cpu_batch_norm_forward((int)N, (int)C, (int)S, fdm_data(xc), wc ? fdm_data(wc) : NULL, bc ? fdm_data(bc) : NULL,
                           rmc ? fdm_data(rmc) : NULL, rvc ? fdm_data(rvc) : NULL, training, (float)momentum,
                           (float)eps, fdm_data(out), fdm_data(mean), fdm_data(invstd));
  fdm_tensor *in[3] = {x, w, b};
  fdm_node *n = fdm_node_new(op, bn_backward, 3, in);
  if (n) {
    n->i[0] = N; n->i[1] = C; n->i[2] = S; n->i[3] = training; n->i[4] = gelu; n->i[5] = w != NULL;
    fdm_node_save(n, xc); fdm_node_save(n, mean); fdm_node_save(n, invstd);
    if (gelu) fdm_node_save(n, pre);
    if (wc) fdm_node_save(n, wc);
    fdm_node_attach(out, n);
  }
done:
  fdm_release(xc); fdm_release(wc); fdm_release(bc); fdm_release(rmc); fdm_release(rvc);
  fdm_release(mean); fdm_release(invstd); fdm_release(pre);
  return out;
}

fdm_tensor *fdm_batch_norm(fdm_tensor *x, fdm_tensor *rm, fdm_tensor *rv, fdm_tensor *w, fdm_tensor *b,
                           int training, double momentum, double eps) {
  return bn_impl("batch_norm", 0, x, rm, rv, w, b, training, momentum, eps);
}

fdm_tensor *fdm_batch_norm_gelu(fdm_tensor *x, fdm_tensor *rm, fdm_tensor *rv, fdm_tensor *w, fdm_tensor *b,
                                int training, double momentum, double eps) {
  return bn_impl("batch_norm_gelu", 1, x, rm, rv, w, b, training, momentum, eps);
}

/* ======================================================================= group / layer norm */

/* saved: x, mean, rstd, [weight]. n->i: kind (0 group, 1 layer), a, b, c, has_weight
** group: N, C, S, G; layer: M, D */
static int norm_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  fdm_tensor *x = n->saved[0], *mean = n->saved[1], *rstd = n->saved[2], *w = n->i[5] ? n->saved[3] : NULL;
  fdm_tensor *gc = fdm_contiguous(g);
  if (!gc) return -1;
  fdm_tensor *gx = n->needs[0] ? fdm_empty(FDM_FLOAT32, n->in_ndim[0], n->in_shape[0], g->device) : NULL;
  fdm_tensor *gw = n->needs[1] ? fdm_empty(FDM_FLOAT32, n->in_ndim[1], n->in_shape[1], g->device) : NULL;
  fdm_tensor *gb = n->needs[2] ? fdm_empty(FDM_FLOAT32, n->in_ndim[2], n->in_shape[2], g->device) : NULL;
  if ((n->needs[0] && !gx) || (n->needs[1] && !gw) || (n->needs[2] && !gb)) {
    fdm_release(gc); fdm_release(gx); fdm_release(gw); fdm_release(gb);
    return -1;
  }
  float *pgx = gx ? fdm_data(gx) : NULL, *pgw = gw ? fdm_data(gw) : NULL, *pgb = gb ? fdm_data(gb) : NULL;
  const float *pw = w ? fdm_data(w) : NULL;
  if (n->i[0] == 0)
    cpu_group_norm_backward((int)n->i[1], (int)n->i[2], (int)n->i[3], (int)n->i[4], fdm_data(x), pw,
                            fdm_data(mean), fdm_data(rstd), fdm_data(gc), pgx, pgw, pgb);
  else
    cpu_layer_norm_backward((int)n->i[1], (int)n->i[2], fdm_data(x), pw, fdm_data(mean), fdm_data(rstd),
                            fdm_data(gc), pgx, pgw, pgb);
  fdm_release(gc);
  gin[0] = gx; gin[1] = gw; gin[2] = gb;
  return 0;
}

fdm_tensor *fdm_group_norm(fdm_tensor *x, int groups, fdm_tensor *w, fdm_tensor *b, double eps) {
  char b1[128];
  const char *op = "group_norm";
  fdm_tensor *chk[3] = {x, w, b};
  if (nn_check(op, 3, chk)) return NULL;
  if (x->ndim < 2) { fdm_seterror("%s: expected input [N, C, ...], got %s", op, SHP(x, b1)); return NULL; }
  if (check_int_range(op, x)) return NULL;
  int64_t N = x->shape[0], C = x->shape[1], S = 1;
  for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
  if (groups < 1 || C % groups) {
    fdm_seterror("%s: %lld channels are not divisible into %d groups; input %s", op, (long long)C, groups, SHP(x, b1));
    return NULL;
  }
  if (check_vec(op, "weight", w, C, x) || check_vec(op, "bias", b, C, x)) return NULL;
  if (S * C > 0x7fffffffLL) { fdm_seterror("%s: input %s too large", op, SHP(x, b1)); return NULL; }
  int64_t ng = N * groups;
  fdm_tensor *xc = fdm_contiguous(x), *wc = contig_or_null(w), *bc = contig_or_null(b);
  fdm_tensor *mean = fdm_empty(FDM_FLOAT32, 1, &ng, x->device), *rstd = fdm_empty(FDM_FLOAT32, 1, &ng, x->device);
  fdm_tensor *out = fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device);
  if (xc && (wc || !w) && (bc || !b) && mean && rstd && out) {
    cpu_group_norm_forward((int)N, (int)C, (int)S, groups, fdm_data(xc), wc ? fdm_data(wc) : NULL,
                           bc ? fdm_data(bc) : NULL, (float)eps, fdm_data(out), fdm_data(mean), fdm_data(rstd));
    fdm_tensor *in[3] = {x, w, b};
    fdm_node *n = fdm_node_new(op, norm_backward, 3, in);
    if (n) {
      n->i[0] = 0; n->i[1] = N; n->i[2] = C; n->i[3] = S; n->i[4] = groups; n->i[5] = w != NULL;
      fdm_node_save(n, xc); fdm_node_save(n, mean); fdm_node_save(n, rstd);
      if (wc) fdm_node_save(n, wc);
      fdm_node_attach(out, n);
    }
  } else { fdm_release(out); out = NULL; }
  fdm_release(xc); fdm_release(wc); fdm_release(bc); fdm_release(mean); fdm_release(rstd);
  return out;
}

fdm_tensor *fdm_layer_norm(fdm_tensor *x, int nd, const int64_t *nshape, fdm_tensor *w, fdm_tensor *b, double eps) {
  char b1[128], b2[128];
  const char *op = "layer_norm";
  fdm_tensor *chk[3] = {x, w, b};
  if (nn_check(op, 3, chk)) return NULL;
  fdm_tensor ns = {0};
  if (nd < 1 || nd > FDM_MAXDIM) { fdm_seterror("%s: normalized_shape must have 1 to %d dims", op, FDM_MAXDIM); return NULL; }
  ns.ndim = nd;
  memcpy(ns.shape, nshape, nd * sizeof(int64_t));
  int bad = nd > x->ndim;
  for (int i = 0; !bad && i < nd; i++) bad = x->shape[x->ndim - nd + i] != nshape[i];
  if (bad) {
    fdm_seterror("%s: normalized_shape %s does not match the last dims of input %s", op, SHP(&ns, b1), SHP(x, b2));
    return NULL;
  }
  fdm_tensor *pv[2] = {w, b};
  const char *pn[2] = {"weight", "bias"};
  for (int k = 0; k < 2; k++) {
    if (pv[k] && !fdm_same_shape(pv[k], &ns)) {
      fdm_seterror("%s: %s has shape %s, expected normalized_shape %s", op, pn[k], SHP(pv[k], b1), SHP(&ns, b2));
      return NULL;
    }
  }
  int64_t D = 1, M = 1;
  for (int i = 0; i < nd; i++) D *= nshape[i];
  for (int i = 0; i < x->ndim - nd; i++) M *= x->shape[i];
  if (D > 0x7fffffffLL || M > 0x7fffffffLL) { fdm_seterror("%s: input %s too large", op, SHP(x, b1)); return NULL; }
  fdm_tensor *xc = fdm_contiguous(x), *wc = contig_or_null(w), *bc = contig_or_null(b);
  fdm_tensor *mean = fdm_empty(FDM_FLOAT32, 1, &M, x->device), *rstd = fdm_empty(FDM_FLOAT32, 1, &M, x->device);
  fdm_tensor *out = fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device);
  if (xc && (wc || !w) && (bc || !b) && mean && rstd && out) {
    cpu_layer_norm_forward((int)M, (int)D, fdm_data(xc), wc ? fdm_data(wc) : NULL, bc ? fdm_data(bc) : NULL,
                           (float)eps, fdm_data(out), fdm_data(mean), fdm_data(rstd));
    fdm_tensor *in[3] = {x, w, b};
    fdm_node *n = fdm_node_new(op, norm_backward, 3, in);
    if (n) {
      n->i[0] = 1; n->i[1] = M; n->i[2] = D; n->i[5] = w != NULL;
      fdm_node_save(n, xc); fdm_node_save(n, mean); fdm_node_save(n, rstd);
      if (wc) fdm_node_save(n, wc);
      fdm_node_attach(out, n);
    }
  } else { fdm_release(out); out = NULL; }
  fdm_release(xc); fdm_release(wc); fdm_release(bc); fdm_release(mean); fdm_release(rstd);
  return out;
}

/* ======================================================================= softmax */

static int softmax_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  fdm_tensor *y = n->saved[0], *gc = fdm_contiguous(g);
  fdm_tensor *gx = gc ? fdm_empty(FDM_FLOAT32, n->in_ndim[0], n->in_shape[0], g->device) : NULL;
  if (!gx) { fdm_release(gc); return -1; }
  cpu_softmax_backward(n->i[0], n->i[1], n->i[2], (int)n->i[3], fdm_data(y), fdm_data(gc), fdm_data(gx));
  fdm_release(gc);
  gin[0] = gx;
  return 0;
}

fdm_tensor *fdm_softmax(fdm_tensor *x, int dim, int log) {
  const char *op = log ? "log_softmax" : "softmax";
  if (nn_check(op, 1, &x)) return NULL;
  int nd = x->ndim ? x->ndim : 1;
  if (dim < 0 || dim >= nd) { fdm_seterror("%s: dim %d out of range for a %d-d tensor", op, dim + 1, x->ndim); return NULL; }
  int64_t outer = 1, D = x->ndim ? x->shape[dim] : 1, inner = 1;
  for (int d = 0; d < dim; d++) outer *= x->shape[d];
  for (int d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
  fdm_tensor *xc = fdm_contiguous(x);
  fdm_tensor *out = xc ? fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device) : NULL;
  if (!out) { fdm_release(xc); return NULL; }
  if (outer * D * inner > 0) cpu_softmax_forward(outer, D, inner, log, fdm_data(xc), fdm_data(out));
  fdm_release(xc);
  fdm_node *n = fdm_node_new(op, softmax_backward, 1, &x);
  if (n) {
    n->i[0] = outer; n->i[1] = D; n->i[2] = inner; n->i[3] = log;
    fdm_node_save_output(n, out);
    if (n->nsaved != 1) { fdm_node_release(n); fdm_release(out); return NULL; }
    fdm_node_attach(out, n);
  }
  return out;
}
