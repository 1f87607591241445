/* op_nn.c: linear, bmm, conv2d, conv_transpose2d, pooling, interpolate and
** the normalisations. Each op checks its arguments (errors name the op and
** the shapes), makes its inputs contiguous, allocates its outputs on the
** input's device, runs the device's kernel (fdm_kernels_nn.h) and records a
** node whose backward calls the matching backward kernel. Ops that save
** their own output use fdm_node_save_output (no tensor <-> node cycle). */
#include <string.h>
#include "fdm_internal.h"
#include "fdm_nnops.h"

#define SHP(t, buf) fdm_shapestr((t), (buf), sizeof(buf))

/* every tensor operand (NULL skipped): one available device, float32.
** Whether the device has the op's kernels is FDM_KERNEL's to say. */
int nn_check(const char *op, int n, fdm_tensor *const *ts) {
  if (fdm_backend_check(op, n, ts)) return -1;
  for (int i = 0; i < n; i++)
    if (ts[i] && fdm_check_float(op, ts[i])) return -1;
  return 0;
}

/* linear/conv weights may be float16/bfloat16 (the kernels widen them to
** float32; inputs and accumulation stay float32). Their gradient is not
** computed: a half weight that would record one is refused. */
static int check_weight(const char *op, const fdm_tensor *w) {
  if (w->dtype == FDM_FLOAT32) return 0;
  if (w->dtype != FDM_FLOAT16 && w->dtype != FDM_BFLOAT16)
    return fdm_seterror("%s: weight must be float32, float16 or bfloat16, got %s", op, fdm_dtype_name(w->dtype));
  if (w->requires_grad && fdm_grad_enabled())
    return fdm_seterror("%s: a %s weight cannot require grad (its gradient is not computed); "
                        "train a float32 copy, or run under no_grad", op, fdm_dtype_name(w->dtype));
  return 0;
}

static fdm_tensor *contig_or_null(fdm_tensor *t) { return t ? fdm_contiguous(t) : NULL; }

/* the kernel view of t in *slot, or NULL for an absent operand */
static const fdm_kview *kv(const fdm_tensor *t, fdm_kview *slot) {
  if (!t) return NULL;
  *slot = fdm_kview_of(t);
  return slot;
}

/* gin[i] = a new float32 tensor of input i's shape for each of the first k
** inputs whose gradient is needed. -1 (gin cleared) when memory runs out. */
static int alloc_input_grads(fdm_node *n, int k, fdm_device dev, fdm_tensor **gin) {
  for (int i = 0; i < k; i++) {
    if (!fdm_node_needs(n, i)) continue;
    const fdm_node_input *in = fdm_node_input_at(n, i);
    gin[i] = fdm_empty(FDM_FLOAT32, in->ndim, in->shape, dev);
    if (!gin[i]) {
      for (int j = 0; j < i; j++) { fdm_release(gin[j]); gin[j] = NULL; }
      return -1;
    }
  }
  return 0;
}

static void release_grads(int k, fdm_tensor **gin) {
  for (int i = 0; i < k; i++) { fdm_release(gin[i]); gin[i] = NULL; }
}

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

/* autocast: the dtype the forward ran under, which the backward's products use too */
typedef struct { fdm_tensor *x, *w; int64_t M, IN, OUT; fdm_dtype autocast; } linear_state;

static int linear_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  linear_state *s = FDM_NODE_STATE(n, linear_state);
  if (!s || alloc_input_grads(n, 3, g->device, gin)) return -1;
  fdm_kview vx, vw, vg, vgx, vgw, vgb;
  if (FDM_KERNEL(g->device, "linear", linear_backward, s->autocast, s->M, s->IN, s->OUT, kv(s->x, &vx), kv(s->w, &vw),
                 kv(g, &vg), kv(gin[0], &vgx), kv(gin[1], &vgw), kv(gin[2], &vgb))) {
    release_grads(3, gin);
    return -1;
  }
  return 0;
}

static int check_linear_shapes(const fdm_tensor *x, const fdm_tensor *w, const fdm_tensor *b) {
  char b1[128], b2[128];
  if (x->ndim < 1) return fdm_seterror("linear: input must have at least 1 dim, got a scalar");
  if (w->ndim != 2)
    return fdm_seterror("linear: weight must be 2-D [out_features, in_features], got %s", SHP(w, b1));
  int64_t IN = w->shape[1], OUT = w->shape[0];
  if (x->shape[x->ndim - 1] != IN)
    return fdm_seterror("linear: input %s has %lld features in its last dim but weight %s expects %lld",
                        SHP(x, b1), (long long)x->shape[x->ndim - 1], SHP(w, b2), (long long)IN);
  if (b && (b->ndim != 1 || b->shape[0] != OUT))
    return fdm_seterror("linear: bias has shape %s, expected [%lld] for weight %s", SHP(b, b1), (long long)OUT,
                        SHP(w, b2));
  if (check_int_range("linear", x) || check_int_range("linear", w)) return -1;
  return 0;
}

/* a float16/bfloat16 w: see check_weight (no weight gradient) */
fdm_tensor *fdm_linear(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b) {
  fdm_tensor *all[3] = {x, w, b}, *data[2] = {x, b};
  if (fdm_backend_check("linear", 3, all) || nn_check("linear", 2, data) || check_weight("linear", w) ||
      check_linear_shapes(x, w, b))
    return NULL;
  int64_t IN = w->shape[1], OUT = w->shape[0];
  int64_t M = 1;
  for (int d = 0; d < x->ndim - 1; d++) M *= x->shape[d];
  int64_t oshape[FDM_MAXDIM];
  memcpy(oshape, x->shape, x->ndim * sizeof(int64_t));
  oshape[x->ndim - 1] = OUT;
  fdm_tensor *xc = fdm_contiguous(x), *wc = fdm_contiguous(w), *bc = contig_or_null(b);
  fdm_tensor *out = (xc && wc && (bc || !b)) ? fdm_empty(FDM_FLOAT32, x->ndim, oshape, x->device) : NULL;
  fdm_kview vx, vw, vb, vy;
  fdm_node *n = NULL;
  fdm_dtype autocast = fdm_autocast_dtype();
  if (!out || FDM_KERNEL(x->device, "linear", linear_forward, autocast, M, IN, OUT, kv(xc, &vx), kv(wc, &vw), kv(bc, &vb),
                         kv(out, &vy)) ||
      fdm_node_new("linear", linear_backward, 3, all, sizeof(linear_state), &n))
    goto fail;
  if (n) {
    linear_state *s = n->state;
    s->M = M; s->IN = IN; s->OUT = OUT; s->autocast = autocast;
    fdm_node_save(n, &s->x, xc);
    fdm_node_save(n, &s->w, wc);
    if (fdm_node_attach(out, n)) goto fail;
  }
  fdm_release(xc); fdm_release(wc); fdm_release(bc);
  return out;
fail:
  fdm_release(out); fdm_release(xc); fdm_release(wc); fdm_release(bc);
  return NULL;
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

typedef struct { fdm_tensor *x, *w; fdm_conv_params p; int transposed; } conv_state;

/* the kernels' scratch for this geometry, from the device allocator */
static fdm_tensor *conv_scratch(const char *op, int transposed, const fdm_conv_params *p, fdm_device dev) {
  size_t floats = 0;
  int rc = transposed ? FDM_KERNEL(dev, op, conv_transpose2d_work, p, &floats)
                      : FDM_KERNEL(dev, op, conv2d_work, p, &floats);
  return rc ? NULL : fdm_scratch(dev, floats);
}

static int conv_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  conv_state *s = FDM_NODE_STATE(n, conv_state);
  if (!s) return -1;
  fdm_tensor *work = conv_scratch(n->name, s->transposed, &s->p, g->device);
  if (!work || alloc_input_grads(n, 3, g->device, gin)) { fdm_release(work); return -1; }
  fdm_kview vx, vw, vg, vgx, vgw, vgb, vwork;
  const fdm_kview *args[7] = {kv(s->x, &vx), kv(s->w, &vw), kv(g, &vg), kv(gin[0], &vgx), kv(gin[1], &vgw),
                              kv(gin[2], &vgb), kv(work, &vwork)};
  int rc = s->transposed
    ? FDM_KERNEL(g->device, n->name, conv_transpose2d_backward, &s->p, args[0], args[1], args[2], args[3], args[4],
                 args[5], args[6])
    : FDM_KERNEL(g->device, n->name, conv2d_backward, &s->p, args[0], args[1], args[2], args[3], args[4], args[5],
                 args[6]);
  fdm_release(work);
  if (rc) release_grads(3, gin);
  return rc;
}

static fdm_tensor *conv_impl(const char *op, int transposed, fdm_tensor *x, fdm_tensor *w, fdm_tensor *b,
                             const fdm_conv_opts *o, const fdm_tensor *shown);

/* [C, H, W] inputs: run as a batch of one. A float16/bfloat16 w: see check_weight. */
static fdm_tensor *conv_entry(const char *op, int transposed, fdm_tensor *x, fdm_tensor *w, fdm_tensor *b,
                              const fdm_conv_opts *o) {
  char b1[128];
  fdm_conv_opts def;
  if (!o) { fdm_conv_opts_default(&def); o = &def; }
  fdm_tensor *all[3] = {x, w, b}, *data[2] = {x, b};
  if (fdm_backend_check(op, 3, all) || nn_check(op, 2, data) || check_weight(op, w)) return NULL;
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

static int check_conv_opts(const char *op, const fdm_conv_opts *o) {
  for (int i = 0; i < 2; i++) {
    if (o->stride[i] < 1) return fdm_seterror("%s: stride must be >= 1, got %d", op, o->stride[i]);
    if (o->padding[i] < 0) return fdm_seterror("%s: padding must be >= 0, got %d", op, o->padding[i]);
    if (o->dilation[i] < 1) return fdm_seterror("%s: dilation must be >= 1, got %d", op, o->dilation[i]);
    if (o->output_padding[i] < 0)
      return fdm_seterror("%s: output_padding must be >= 0, got %d", op, o->output_padding[i]);
  }
  if (o->groups < 1) return fdm_seterror("%s: groups must be >= 1, got %d", op, o->groups);
  return 0;
}

/* conv2d: output channels and size */
static int conv2d_geometry(const char *op, const fdm_tensor *w, const fdm_conv_opts *o, const fdm_tensor *shown,
                           fdm_conv_params *p) {
  char b1[128], b2[128];
  int G = p->groups;
  int64_t ekh = (int64_t)p->dh * (p->kh - 1) + 1, ekw = (int64_t)p->dw * (p->kw - 1) + 1;
  if ((int64_t)w->shape[1] * G != p->C)
    return fdm_seterror("%s: input has %d channels but weight expects %lld (groups %d); input %s, weight %s", op,
                        p->C, (long long)w->shape[1] * G, G, SHP(shown, b1), SHP(w, b2));
  p->K = (int)w->shape[0];
  if (p->K % G)
    return fdm_seterror("%s: weight %s has %d output channels, not divisible by groups %d", op, SHP(w, b1), p->K, G);
  if (o->output_padding[0] || o->output_padding[1])
    return fdm_seterror("%s: output_padding is only for conv_transpose2d", op);
  int64_t hp = (int64_t)p->H + 2 * p->ph, wp = (int64_t)p->W + 2 * p->pw;
  if (hp < ekh || wp < ekw)
    return fdm_seterror("%s: input %s padded to %lldx%lld is smaller than the (dilated) kernel %lldx%lld; weight %s",
                        op, SHP(shown, b1), (long long)hp, (long long)wp, (long long)ekh, (long long)ekw,
                        SHP(w, b2));
  p->OH = (int)((hp - ekh) / p->sh + 1); p->OW = (int)((wp - ekw) / p->sw + 1);
  return 0;
}

/* conv_transpose2d: output channels and size */
static int convt_geometry(const char *op, const fdm_tensor *w, const fdm_conv_opts *o, const fdm_tensor *shown,
                          fdm_conv_params *p) {
  char b1[128], b2[128];
  int G = p->groups;
  int64_t ekh = (int64_t)p->dh * (p->kh - 1) + 1, ekw = (int64_t)p->dw * (p->kw - 1) + 1;
  if (w->shape[0] != p->C)
    return fdm_seterror("%s: input has %d channels but weight expects %lld (weight is [C_in, C_out/groups, kh, kw]); "
                        "input %s, weight %s", op, p->C, (long long)w->shape[0], SHP(shown, b1), SHP(w, b2));
  if (p->C % G)
    return fdm_seterror("%s: input channels %d not divisible by groups %d; input %s", op, p->C, G, SHP(shown, b1));
  p->K = (int)(w->shape[1] * G);
  for (int i = 0; i < 2; i++)
    if (o->output_padding[i] >= o->stride[i] && o->output_padding[i] >= o->dilation[i])
      return fdm_seterror("%s: output_padding (%d) must be smaller than either stride (%d) or dilation (%d)", op,
                          o->output_padding[i], o->stride[i], o->dilation[i]);
  int64_t oh = ((int64_t)p->H - 1) * p->sh - 2 * p->ph + ekh - 1 + o->output_padding[0] + 1;
  int64_t ow = ((int64_t)p->W - 1) * p->sw - 2 * p->pw + ekw - 1 + o->output_padding[1] + 1;
  if (oh < 1 || ow < 1)
    return fdm_seterror("%s: output size %lldx%lld is too small for input %s, weight %s", op, (long long)oh,
                        (long long)ow, SHP(shown, b1), SHP(w, b2));
  p->OH = (int)oh; p->OW = (int)ow;
  return 0;
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
  if (check_int_range(op, x) || check_int_range(op, w) || check_conv_opts(op, o)) return NULL;
  fdm_conv_params p;
  p.N = (int)x->shape[0]; p.C = (int)x->shape[1]; p.H = (int)x->shape[2]; p.W = (int)x->shape[3];
  p.kh = (int)w->shape[2]; p.kw = (int)w->shape[3];
  p.sh = o->stride[0]; p.sw = o->stride[1]; p.ph = o->padding[0]; p.pw = o->padding[1];
  p.dh = o->dilation[0]; p.dw = o->dilation[1]; p.groups = o->groups;
  p.autocast = fdm_autocast_dtype();   /* kept in the node's p: the backward rounds as the forward did */
  if (transposed ? convt_geometry(op, w, o, shown, &p) : conv2d_geometry(op, w, o, shown, &p)) return NULL;
  if (b && (b->ndim != 1 || b->shape[0] != p.K)) {
    fdm_seterror("%s: bias has shape %s, expected [%d]; weight %s", op, SHP(b, b1), p.K, SHP(w, b2));
    return NULL;
  }
  int64_t oshape[4] = {p.N, p.K, p.OH, p.OW};
  fdm_tensor *xc = fdm_contiguous(x), *wc = fdm_contiguous(w), *bc = contig_or_null(b);
  fdm_tensor *out = (xc && wc && (bc || !b)) ? fdm_empty(FDM_FLOAT32, 4, oshape, x->device) : NULL;
  fdm_tensor *work = out ? conv_scratch(op, transposed, &p, x->device) : NULL;
  fdm_kview vx, vw, vb, vy, vwork;
  fdm_node *n = NULL;
  int rc = !work ? -1
    : transposed ? FDM_KERNEL(x->device, op, conv_transpose2d_forward, &p, kv(xc, &vx), kv(wc, &vw), kv(bc, &vb),
                              kv(out, &vy), kv(work, &vwork))
                 : FDM_KERNEL(x->device, op, conv2d_forward, &p, kv(xc, &vx), kv(wc, &vw), kv(bc, &vb),
                              kv(out, &vy), kv(work, &vwork));
  fdm_release(work);
  fdm_tensor *in[3] = {x, w, b};
  if (rc || fdm_node_new(op, conv_backward, 3, in, sizeof(conv_state), &n)) goto fail;
  if (n) {
    conv_state *s = n->state;
    s->p = p;
    s->transposed = transposed;
    fdm_node_save(n, &s->x, xc);
    fdm_node_save(n, &s->w, wc);
    if (fdm_node_attach(out, n)) goto fail;
  }
  fdm_release(xc); fdm_release(wc); fdm_release(bc);
  return out;
fail:
  fdm_release(out); fdm_release(xc); fdm_release(wc); fdm_release(bc);
  return NULL;
}

fdm_tensor *fdm_conv2d(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b, const fdm_conv_opts *o) {
  return conv_entry("conv2d", 0, x, w, b, o);
}

fdm_tensor *fdm_conv_transpose2d(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b, const fdm_conv_opts *o) {
  return conv_entry("conv_transpose2d", 1, x, w, b, o);
}

/* ======================================================================= pooling */

typedef struct { fdm_pool_params p; int is_max; fdm_tensor *idx; } pool_state;

static int pool_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  pool_state *s = FDM_NODE_STATE(n, pool_state);
  if (!s || alloc_input_grads(n, 1, g->device, gin)) return -1;
  fdm_kview vg, vidx, vgx;
  int rc = s->is_max ? FDM_KERNEL(g->device, n->name, max_pool2d_backward, &s->p, kv(g, &vg), kv(s->idx, &vidx),
                                  kv(gin[0], &vgx))
                     : FDM_KERNEL(g->device, n->name, avg_pool2d_backward, &s->p, kv(g, &vg), kv(gin[0], &vgx));
  if (rc) release_grads(1, gin);
  return rc;
}

static int check_pool_window(const char *op, const int *k, const int *s, const int *pd) {
  for (int i = 0; i < 2; i++) {
    if (k[i] < 1) return fdm_seterror("%s: kernel size must be >= 1, got %d", op, k[i]);
    if (s[i] < 1) return fdm_seterror("%s: stride must be >= 1, got %d", op, s[i]);
    if (pd[i] < 0 || pd[i] > k[i] / 2)
      return fdm_seterror("%s: padding %d must be between 0 and half the kernel size %d", op, pd[i], k[i]);
  }
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
  }
  if (check_pool_window(op, k, s, pd)) return NULL;
  int nd = x->ndim;
  int64_t H = x->shape[nd - 2], W = x->shape[nd - 1], NC = 1;
  for (int d = 0; d < nd - 2; d++) NC *= x->shape[d];
  int64_t OH = (H + 2 * pd[0] - k[0]) / s[0] + 1, OW = (W + 2 * pd[1] - k[1]) / s[1] + 1;
  if (H + 2 * pd[0] < k[0] || W + 2 * pd[1] < k[1] || OH < 1 || OW < 1) {
    fdm_seterror("%s: input %s (padding %dx%d) is smaller than the kernel %dx%d", op, SHP(x, b1), pd[0], pd[1],
                 k[0], k[1]);
    return NULL;
  }
  fdm_pool_params p = {(int)NC, (int)H, (int)W, (int)OH, (int)OW, k[0], k[1], s[0], s[1], pd[0], pd[1]};
  int64_t oshape[4];
  memcpy(oshape, x->shape, nd * sizeof(int64_t));
  oshape[nd - 2] = OH; oshape[nd - 1] = OW;
  fdm_tensor *xc = fdm_contiguous(x);
  fdm_tensor *out = xc ? fdm_empty(FDM_FLOAT32, nd, oshape, x->device) : NULL;
  fdm_tensor *idx = (out && is_max) ? fdm_empty(FDM_INT64, nd, oshape, x->device) : NULL;
  fdm_kview vx, vy, vidx;
  fdm_node *n = NULL;
  int rc = (!out || (is_max && !idx)) ? -1
    : is_max ? FDM_KERNEL(x->device, op, max_pool2d_forward, &p, kv(xc, &vx), kv(out, &vy), kv(idx, &vidx))
             : FDM_KERNEL(x->device, op, avg_pool2d_forward, &p, kv(xc, &vx), kv(out, &vy));
  if (rc || fdm_node_new(op, pool_backward, 1, &x, sizeof(pool_state), &n)) goto fail;
  if (n) {
    pool_state *st = n->state;
    st->p = p;
    st->is_max = is_max;
    if (is_max) fdm_node_save(n, &st->idx, idx);
    if (fdm_node_attach(out, n)) goto fail;
  }
  fdm_release(idx); fdm_release(xc);
  return out;
fail:
  fdm_release(out); fdm_release(idx); fdm_release(xc);
  return NULL;
}

fdm_tensor *fdm_avg_pool2d(fdm_tensor *x, const int *k, const int *stride, const int *padding) {
  return pool2d("avg_pool2d", 0, x, k, stride, padding);
}
fdm_tensor *fdm_max_pool2d(fdm_tensor *x, const int *k, const int *stride, const int *padding) {
  return pool2d("max_pool2d", 1, x, k, stride, padding);
}

/* ======================================================================= interpolate */

typedef struct { fdm_resize_params p; } interp_state;

static int interp_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  interp_state *s = FDM_NODE_STATE(n, interp_state);
  if (!s || alloc_input_grads(n, 1, g->device, gin)) return -1;
  fdm_kview vg, vgx;
  if (FDM_KERNEL(g->device, "interpolate", resize_backward, &s->p, kv(g, &vg), kv(gin[0], &vgx))) {
    release_grads(1, gin);
    return -1;
  }
  return 0;
}

static int check_interp_args(fdm_tensor *x, int64_t oh, int64_t ow, fdm_interp_mode mode, int align_corners) {
  char b1[128];
  if (x->ndim != 4)
    return fdm_seterror("interpolate: expected a 4-D input [N, C, H, W] (2-D resizing), got %s", SHP(x, b1));
  if (mode != FDM_INTERP_NEAREST && mode != FDM_INTERP_BILINEAR)
    return fdm_seterror("interpolate: unknown mode %d", (int)mode);
  if (mode == FDM_INTERP_NEAREST && align_corners)
    return fdm_seterror("interpolate: align_corners is only for mode 'bilinear'");
  if (check_int_range("interpolate", x)) return -1;
  if (oh < 1 || ow < 1 || oh > 0x7fffffff || ow > 0x7fffffff)
    return fdm_seterror("interpolate: output size %lldx%lld is invalid for input %s", (long long)oh, (long long)ow,
                        SHP(x, b1));
  if (x->shape[2] < 1 || x->shape[3] < 1)
    return fdm_seterror("interpolate: input %s has an empty spatial dim", SHP(x, b1));
  return 0;
}

fdm_tensor *fdm_interpolate(fdm_tensor *x, int64_t oh, int64_t ow, double scale_h, double scale_w,
                            fdm_interp_mode mode, int align_corners) {
  if (nn_check("interpolate", 1, &x) || check_interp_args(x, oh, ow, mode, align_corners)) return NULL;
  int64_t H = x->shape[2], W = x->shape[3];
  fdm_resize_params p = {(int)(x->shape[0] * x->shape[1]), (int)H, (int)W, (int)oh, (int)ow,
                         mode == FDM_INTERP_BILINEAR, align_corners, 0, 0, 0};
  /* PyTorch maps with 1/scale when a scale_factor was given; the size path uses in/out */
  p.rh = scale_h > 0 ? (float)(1.0 / scale_h) : (float)H / (float)oh;
  p.rw = scale_w > 0 ? (float)(1.0 / scale_w) : (float)W / (float)ow;
  p.scaled = !(p.bilinear && align_corners) && (p.rh != (float)H / (float)oh || p.rw != (float)W / (float)ow);
  int64_t oshape[4] = {x->shape[0], x->shape[1], oh, ow};
  fdm_tensor *xc = fdm_contiguous(x);
  fdm_tensor *out = xc ? fdm_empty(FDM_FLOAT32, 4, oshape, x->device) : NULL;
  fdm_kview vx, vy;
  fdm_node *n = NULL;
  if (!out || FDM_KERNEL(x->device, "interpolate", resize_forward, &p, kv(xc, &vx), kv(out, &vy)) ||
      fdm_node_new("interpolate", interp_backward, 1, &x, sizeof(interp_state), &n))
    goto fail;
  if (n) {
    ((interp_state *)n->state)->p = p;
    if (fdm_node_attach(out, n)) goto fail;
  }
  fdm_release(xc);
  return out;
fail:
  fdm_release(out); fdm_release(xc);
  return NULL;
}

/* ======================================================================= batch norm */

/* pre: the saved pre-activation of batch_norm_gelu (NULL for batch_norm); w may be NULL */
typedef struct {
  fdm_tensor *x, *mean, *invstd, *pre, *w;
  fdm_batch_norm_params p;
} bn_state;

static int bn_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  bn_state *s = FDM_NODE_STATE(n, bn_state);
  if (!s) return -1;
  fdm_tensor *work = s->pre ? fdm_empty(FDM_FLOAT32, g->ndim, g->shape, g->device) : NULL;
  if ((s->pre && !work) || alloc_input_grads(n, 3, g->device, gin)) { fdm_release(work); return -1; }
  fdm_kview vx, vw, vm, vs, vpre, vg, vwork, vgx, vgw, vgb;
  int rc = s->pre
    ? FDM_KERNEL(g->device, n->name, batch_norm_gelu_backward, &s->p, kv(s->x, &vx), kv(s->w, &vw),
                 kv(s->mean, &vm), kv(s->invstd, &vs), kv(s->pre, &vpre), kv(g, &vg), kv(work, &vwork),
                 kv(gin[0], &vgx), kv(gin[1], &vgw), kv(gin[2], &vgb))
    : FDM_KERNEL(g->device, n->name, batch_norm_backward, &s->p, kv(s->x, &vx), kv(s->w, &vw), kv(s->mean, &vm),
                 kv(s->invstd, &vs), kv(g, &vg), kv(gin[0], &vgx), kv(gin[1], &vgw), kv(gin[2], &vgb));
  fdm_release(work);
  if (rc) release_grads(3, gin);
  return rc;
}

static int check_bn_args(const char *op, fdm_tensor *x, fdm_tensor *rm, fdm_tensor *rv, fdm_tensor *w,
                         fdm_tensor *b, int training, double eps) {
  char b1[128];
  if (x->ndim < 2) return fdm_seterror("%s: expected input [N, C] or [N, C, H, W], got %s", op, SHP(x, b1));
  if (check_int_range(op, x)) return -1;
  int64_t N = x->shape[0], C = x->shape[1], S = 1;
  for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
  if (check_vec(op, "running_mean", rm, C, x) || check_vec(op, "running_var", rv, C, x) ||
      check_vec(op, "weight", w, C, x) || check_vec(op, "bias", b, C, x))
    return -1;
  if ((rm == NULL) != (rv == NULL)) return fdm_seterror("%s: give both running_mean and running_var, or neither", op);
  if (!training && !rm)
    return fdm_seterror("%s: running_mean and running_var are required when training is false", op);
  if (training && N * S <= 1)
    return fdm_seterror("%s: expected more than 1 value per channel when training, got input %s", op, SHP(x, b1));
  if (N * S * C > 0x7fffffffLL * 4) return fdm_seterror("%s: input %s too large", op, SHP(x, b1));
  if (training && rm) {
    if (!fdm_is_contiguous(rm) || !fdm_is_contiguous(rv))
      return fdm_seterror("%s: running_mean/running_var must be contiguous (they are updated in place)", op);
    if (!rm->storage || !rv->storage) return fdm_seterror("%s: running stats were freed", op);
  }
  if (eps < 0) return fdm_seterror("%s: eps must be >= 0, got %g", op, eps);
  return 0;
}

static fdm_tensor *bn_impl(const char *op, int gelu, fdm_tensor *x, fdm_tensor *rm, fdm_tensor *rv, fdm_tensor *w,
                           fdm_tensor *b, int training, double momentum, double eps) {
  fdm_tensor *chk[5] = {x, rm, rv, w, b};
  if (nn_check(op, 5, chk) || check_bn_args(op, x, rm, rv, w, b, training, eps)) return NULL;
  int64_t C = x->shape[1], S = 1;
  for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
  fdm_batch_norm_params p = {(int)x->shape[0], (int)C, (int)S, training, (float)momentum, (float)eps};
  fdm_tensor *xc = fdm_contiguous(x), *wc = contig_or_null(w), *bc = contig_or_null(b);
  /* eval mode only reads the running stats: any layout will do */
  fdm_tensor *rmc = training ? (fdm_retain(rm), rm) : contig_or_null(rm);
  fdm_tensor *rvc = training ? (fdm_retain(rv), rv) : contig_or_null(rv);
  fdm_tensor *mean = fdm_empty(FDM_FLOAT32, 1, &C, x->device), *invstd = fdm_empty(FDM_FLOAT32, 1, &C, x->device);
  fdm_tensor *out = fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device);
  fdm_tensor *pre = gelu ? fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device) : NULL;
  fdm_node *n = NULL;
  if (!xc || (w && !wc) || (b && !bc) || (rm && (!rmc || !rvc)) || !mean || !invstd || !out || (gelu && !pre))
    goto fail;
  fdm_kview vx, vw, vb, vrm, vrv, vpre, vy, vm, vs;
  int rc = gelu
    ? FDM_KERNEL(x->device, op, batch_norm_gelu_forward, &p, kv(xc, &vx), kv(wc, &vw), kv(bc, &vb),
                 kv(rmc, &vrm), kv(rvc, &vrv), kv(pre, &vpre), kv(out, &vy), kv(mean, &vm), kv(invstd, &vs))
    : FDM_KERNEL(x->device, op, batch_norm_forward, &p, kv(xc, &vx), kv(wc, &vw), kv(bc, &vb), kv(rmc, &vrm),
                 kv(rvc, &vrv), kv(out, &vy), kv(mean, &vm), kv(invstd, &vs));
  fdm_tensor *in[3] = {x, w, b};
  if (rc || fdm_node_new(op, bn_backward, 3, in, sizeof(bn_state), &n)) goto fail;
  if (n) {
    bn_state *s = n->state;
    s->p = p;
    fdm_node_save(n, &s->x, xc);
    fdm_node_save(n, &s->mean, mean);
    fdm_node_save(n, &s->invstd, invstd);
    if (gelu) fdm_node_save(n, &s->pre, pre);
    if (wc) fdm_node_save(n, &s->w, wc);
    if (fdm_node_attach(out, n)) goto fail;
  }
  goto done;
fail:
  fdm_release(out);
  out = NULL;
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

/* layer norm: p.N rows of p.S elements; w may be NULL */
typedef struct {
  fdm_tensor *x, *mean, *rstd, *w;
  fdm_norm_params p;
  int layer;
} norm_state;

static int norm_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  norm_state *s = FDM_NODE_STATE(n, norm_state);
  if (!s || alloc_input_grads(n, 3, g->device, gin)) return -1;
  fdm_kview vx, vw, vm, vr, vg, vgx, vgw, vgb;
  const fdm_kview *x = kv(s->x, &vx), *w = kv(s->w, &vw), *m = kv(s->mean, &vm), *r = kv(s->rstd, &vr);
  const fdm_kview *gy = kv(g, &vg), *gx = kv(gin[0], &vgx), *gw = kv(gin[1], &vgw), *gb = kv(gin[2], &vgb);
  int rc = s->layer ? FDM_KERNEL(g->device, n->name, layer_norm_backward, &s->p, x, w, m, r, gy, gx, gw, gb)
                    : FDM_KERNEL(g->device, n->name, group_norm_backward, &s->p, x, w, m, r, gy, gx, gw, gb);
  if (rc) release_grads(3, gin);
  return rc;
}

/* runs the group or layer norm kernel on x with nstat statistics and records the node */
static fdm_tensor *norm_run(const char *op, int layer, const fdm_norm_params *p, int64_t nstat, fdm_tensor *x,
                            fdm_tensor *w, fdm_tensor *b) {
  fdm_tensor *xc = fdm_contiguous(x), *wc = contig_or_null(w), *bc = contig_or_null(b);
  fdm_tensor *mean = fdm_empty(FDM_FLOAT32, 1, &nstat, x->device);
  fdm_tensor *rstd = fdm_empty(FDM_FLOAT32, 1, &nstat, x->device);
  fdm_tensor *out = fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device);
  fdm_node *n = NULL;
  if (!xc || (w && !wc) || (b && !bc) || !mean || !rstd || !out) goto fail;
  fdm_kview vx, vw, vb, vy, vm, vr;
  const fdm_kview *kx = kv(xc, &vx), *kw = kv(wc, &vw), *kb = kv(bc, &vb), *ky = kv(out, &vy);
  int rc = layer ? FDM_KERNEL(x->device, op, layer_norm_forward, p, kx, kw, kb, ky, kv(mean, &vm), kv(rstd, &vr))
                 : FDM_KERNEL(x->device, op, group_norm_forward, p, kx, kw, kb, ky, kv(mean, &vm), kv(rstd, &vr));
  fdm_tensor *in[3] = {x, w, b};
  if (rc || fdm_node_new(op, norm_backward, 3, in, sizeof(norm_state), &n)) goto fail;
  if (n) {
    norm_state *s = n->state;
    s->p = *p;
    s->layer = layer;
    fdm_node_save(n, &s->x, xc);
    fdm_node_save(n, &s->mean, mean);
    fdm_node_save(n, &s->rstd, rstd);
    if (wc) fdm_node_save(n, &s->w, wc);
    if (fdm_node_attach(out, n)) goto fail;
  }
  goto done;
fail:
  fdm_release(out);
  out = NULL;
done:
  fdm_release(xc); fdm_release(wc); fdm_release(bc); fdm_release(mean); fdm_release(rstd);
  return out;
}

/* group norm's input [N, C, ...], groups and weight/bias [C] checked into *p */
static int check_group_norm(const char *op, fdm_tensor *x, int groups, fdm_tensor *w, fdm_tensor *b, double eps,
                            fdm_norm_params *p) {
  char b1[128];
  if (x->ndim < 2) return fdm_seterror("%s: expected input [N, C, ...], got %s", op, SHP(x, b1));
  if (check_int_range(op, x)) return -1;
  int64_t N = x->shape[0], C = x->shape[1], S = 1;
  for (int d = 2; d < x->ndim; d++) S *= x->shape[d];
  if (groups < 1 || C % groups)
    return fdm_seterror("%s: %lld channels are not divisible into %d groups; input %s", op, (long long)C, groups,
                        SHP(x, b1));
  if (check_vec(op, "weight", w, C, x) || check_vec(op, "bias", b, C, x)) return -1;
  if (S * C > 0x7fffffffLL) return fdm_seterror("%s: input %s too large", op, SHP(x, b1));
  *p = (fdm_norm_params){(int)N, (int)C, (int)S, groups, (float)eps};
  return 0;
}

fdm_tensor *fdm_group_norm(fdm_tensor *x, int groups, fdm_tensor *w, fdm_tensor *b, double eps) {
  const char *op = "group_norm";
  fdm_tensor *chk[3] = {x, w, b};
  fdm_norm_params p;
  if (nn_check(op, 3, chk) || check_group_norm(op, x, groups, w, b, eps, &p)) return NULL;
  return norm_run(op, 0, &p, (int64_t)p.N * groups, x, w, b);
}

/* a per-(n, c) operand of group_norm_act: shape [N, C] or [N, C, 1, ...] with at most x's dims */
static int check_per_channel(const char *op, const char *what, const fdm_tensor *v, const fdm_tensor *x) {
  char b1[128], b2[128];
  if (!v) return 0;
  int ok = v->ndim >= 2 && v->ndim <= x->ndim && v->shape[0] == x->shape[0] && v->shape[1] == x->shape[1];
  for (int d = 2; ok && d < v->ndim; d++) ok = v->shape[d] == 1;
  if (!ok)
    return fdm_seterror("%s: %s has shape %s, expected [%lld, %lld] (or with trailing 1s) for input %s", op, what,
                        SHP(v, b1), (long long)x->shape[0], (long long)x->shape[1], SHP(x, b2));
  return 0;
}

/* act(t) as the unary op of the same name; t itself (retained) without one */
static fdm_tensor *apply_act(fdm_act act, fdm_tensor *t) {
  if (act == FDM_ACT_NONE) { fdm_retain(t); return t; }
  return fdm_unary(act == FDM_ACT_GELU ? FDM_GELU : FDM_SILU, t);
}

/* v [N, C, 1...] viewed with x's number of dims, to broadcast over x */
static fdm_tensor *per_channel_view(fdm_tensor *v, const fdm_tensor *x) {
  int64_t shape[FDM_MAXDIM];
  shape[0] = x->shape[0];
  shape[1] = x->shape[1];
  for (int d = 2; d < x->ndim; d++) shape[d] = 1;
  return fdm_reshape(v, x->ndim, shape);
}

/* the composite of group_norm_act, recorded op by op (their nodes give the backward) */
static fdm_tensor *group_norm_act_composite(fdm_tensor *x, int groups, fdm_tensor *w, fdm_tensor *b, double eps,
                                            fdm_tensor *scale, fdm_tensor *shift, fdm_act act) {
  fdm_tensor *h = fdm_group_norm(x, groups, w, b, eps);
  fdm_tensor *ops[2] = {scale, shift};
  for (int k = 0; k < 2 && h; k++) {
    if (!ops[k]) continue;
    fdm_tensor *v = per_channel_view(ops[k], x);
    fdm_tensor *r = v ? fdm_binary(k == 0 ? FDM_MUL : FDM_ADD, h, v) : NULL;
    fdm_release(v);
    fdm_release(h);
    h = r;
  }
  fdm_tensor *y = h ? apply_act(act, h) : NULL;
  fdm_release(h);
  return y;
}

fdm_tensor *fdm_group_norm_act(fdm_tensor *x, int groups, fdm_tensor *w, fdm_tensor *b, double eps,
                               fdm_tensor *scale, fdm_tensor *shift, fdm_act act) {
  const char *op = "group_norm_act";
  fdm_tensor *chk[5] = {x, w, b, scale, shift};
  fdm_norm_params p;
  if (nn_check(op, 5, chk) || check_group_norm(op, x, groups, w, b, eps, &p) ||
      check_per_channel(op, "scale", scale, x) || check_per_channel(op, "shift", shift, x))
    return NULL;
  if (act != FDM_ACT_NONE && act != FDM_ACT_GELU && act != FDM_ACT_SILU) {
    fdm_seterror("%s: unknown activation %d", op, (int)act);
    return NULL;
  }
  int grads = 0;
  for (int i = 0; i < 5; i++) grads |= chk[i] && chk[i]->requires_grad;
  if (grads && fdm_grad_enabled()) return group_norm_act_composite(x, groups, w, b, eps, scale, shift, act);
  fdm_tensor *xc = fdm_contiguous(x), *wc = contig_or_null(w), *bc = contig_or_null(b);
  fdm_tensor *sc = contig_or_null(scale), *shc = contig_or_null(shift);
  fdm_tensor *out = fdm_empty(FDM_FLOAT32, x->ndim, x->shape, x->device);
  if (xc && (!w || wc) && (!b || bc) && (!scale || sc) && (!shift || shc) && out) {
    fdm_kview vx, vw, vb, vs, vsh, vy;
    if (FDM_KERNEL(x->device, op, group_norm_act_forward, &p, act, kv(xc, &vx), kv(wc, &vw), kv(bc, &vb),
                   kv(sc, &vs), kv(shc, &vsh), kv(out, &vy))) {
      fdm_release(out);
      out = NULL;
    }
  } else {
    fdm_release(out);
    out = NULL;
  }
  fdm_release(xc); fdm_release(wc); fdm_release(bc); fdm_release(sc); fdm_release(shc);
  return out;
}

static int check_layer_norm_shapes(const char *op, fdm_tensor *x, int nd, const int64_t *nshape, fdm_tensor *w,
                                   fdm_tensor *b) {
  char b1[128], b2[128];
  fdm_tensor ns = {0};
  if (nd < 1 || nd > FDM_MAXDIM) return fdm_seterror("%s: normalized_shape must have 1 to %d dims", op, FDM_MAXDIM);
  ns.ndim = nd;
  memcpy(ns.shape, nshape, nd * sizeof(int64_t));
  int bad = nd > x->ndim;
  for (int i = 0; !bad && i < nd; i++) bad = x->shape[x->ndim - nd + i] != nshape[i];
  if (bad)
    return fdm_seterror("%s: normalized_shape %s does not match the last dims of input %s", op, SHP(&ns, b1),
                        SHP(x, b2));
  fdm_tensor *pv[2] = {w, b};
  const char *pn[2] = {"weight", "bias"};
  for (int k = 0; k < 2; k++)
    if (pv[k] && !fdm_same_shape(pv[k], &ns))
      return fdm_seterror("%s: %s has shape %s, expected normalized_shape %s", op, pn[k], SHP(pv[k], b1),
                          SHP(&ns, b2));
  return 0;
}

fdm_tensor *fdm_layer_norm(fdm_tensor *x, int nd, const int64_t *nshape, fdm_tensor *w, fdm_tensor *b, double eps) {
  char b1[128];
  const char *op = "layer_norm";
  fdm_tensor *chk[3] = {x, w, b};
  if (nn_check(op, 3, chk) || check_layer_norm_shapes(op, x, nd, nshape, w, b)) return NULL;
  int64_t D = 1, M = 1;
  for (int i = 0; i < nd; i++) D *= nshape[i];
  for (int i = 0; i < x->ndim - nd; i++) M *= x->shape[i];
  if (D > 0x7fffffffLL || M > 0x7fffffffLL) { fdm_seterror("%s: input %s too large", op, SHP(x, b1)); return NULL; }
  fdm_norm_params p = {(int)M, 1, (int)D, 0, (float)eps};
  return norm_run(op, 1, &p, M, x, w, b);
}

/* ======================================================================= softmax */

typedef struct { fdm_tensor *y; int64_t outer, D, inner; int log; } softmax_state;

static int softmax_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  softmax_state *s = FDM_NODE_STATE(n, softmax_state);
  if (!s || alloc_input_grads(n, 1, g->device, gin)) return -1;
  fdm_kview vy, vg, vgx;
  if (FDM_KERNEL(g->device, n->name, softmax_backward, s->outer, s->D, s->inner, s->log, kv(s->y, &vy), kv(g, &vg),
                 kv(gin[0], &vgx))) {
    release_grads(1, gin);
    return -1;
  }
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
  fdm_kview vx, vy;
  fdm_node *n = NULL;
  if (!out || (outer * D * inner > 0 &&
               FDM_KERNEL(x->device, op, softmax_forward, outer, D, inner, log, kv(xc, &vx), kv(out, &vy))) ||
      fdm_node_new(op, softmax_backward, 1, &x, sizeof(softmax_state), &n))
    goto fail;
  if (n) {
    softmax_state *s = n->state;
    s->outer = outer; s->D = D; s->inner = inner; s->log = log;
    fdm_node_save_output(n, &s->y, out);
    if (fdm_node_attach(out, n)) goto fail;
  }
  fdm_release(xc);
  return out;
fail:
  fdm_release(out); fdm_release(xc);
  return NULL;
}
