/* op_elementwise.c: broadcasting binary ops, unary ops, clamp, where, and
** their in-place forms and gradients. Arithmetic runs in float32 or int64. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"

static const char *binop_names[FDM_NBINOP] = {
  "add", "sub", "mul", "div", "pow", "maximum", "minimum",
  "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or"};
static const char *unop_names[FDM_NUNOP] = {
  "neg", "abs", "sqrt", "rsqrt", "exp", "log", "sin", "cos", "square", "sign", "relu",
  "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "logical_not", "reciprocal"};

const char *fdm_binop_name(fdm_binop op) { return (unsigned)op < FDM_NBINOP ? binop_names[op] : "?"; }
const char *fdm_unop_name(fdm_unop op) { return (unsigned)op < FDM_NUNOP ? unop_names[op] : "?"; }

static int is_compare(fdm_binop op) { return op >= FDM_EQ; }

int fdm_broadcast_shape(const char *op, const fdm_tensor *a, const fdm_tensor *b, int64_t *out) {
  int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int d = 0; d < nd; d++) {
    int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
    int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
    if (sa != sb && sa != 1 && sb != 1) {
      char b1[128], b2[128];
      return fdm_seterror("%s: shapes %s and %s cannot be broadcast together (dim %d: %lld vs %lld)",
                          op, fdm_shapestr(a, b1, sizeof b1), fdm_shapestr(b, b2, sizeof b2),
                          d + 1, (long long)sa, (long long)sb);
    }
    out[d] = sa == 1 ? sb : sa;
  }
  return nd;
}

static fdm_dtype compute_dtype(const char *op, const fdm_tensor *a, const fdm_tensor *b, int *err) {
  *err = 0;
  const fdm_tensor *ts[2] = {a, b};
  for (int i = 0; i < 2; i++)
    if (ts[i] && (ts[i]->dtype == FDM_FLOAT16 || ts[i]->dtype == FDM_BFLOAT16)) {
      *err = fdm_check_float(op, ts[i]);
      return FDM_FLOAT32;
    }
  if (a->dtype == FDM_FLOAT32 || (b && b->dtype == FDM_FLOAT32)) return FDM_FLOAT32;
  return FDM_INT64;
}

/* t converted to dt when needed (new ref) */
static fdm_tensor *as_dtype(fdm_tensor *t, fdm_dtype dt) {
  if (t->dtype == dt) { fdm_retain(t); return t; }
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *r = fdm_to_dtype(t, dt);
  fdm_set_grad_enabled(prev);
  return r;
}

/* out = op(a, b) through the device's kernel; a and b already in the compute dtype */
static int run_binary(fdm_binop op, fdm_tensor *out, fdm_tensor *a, fdm_tensor *b) {
  fdm_kview vo = fdm_kview_of(out);
  fdm_kview va = fdm_kview_bcast(a, out->ndim, out->shape), vb = fdm_kview_bcast(b, out->ndim, out->shape);
  return FDM_KERNEL(out->device, fdm_binop_name(op), binary, op, &vo, &va, &vb);
}

/* ---- autograd for binary ops ---- */
typedef struct {
  fdm_binop op;
  fdm_tensor *a, *b;     /* the operands in the compute dtype */
  fdm_tensor *out;       /* div and pow: the result */
} binary_state;

static int binary_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  binary_state *s = FDM_NODE_STATE(n, binary_state);
  if (!s) return -1;
  fdm_binop op = s->op;
  fdm_tensor *a = s->a, *b = s->b, *out = s->out;
  int need_a = fdm_node_needs(n, 0), need_b = fdm_node_needs(n, 1);
  fdm_tensor *ga = NULL, *gb = NULL, *t = NULL, *u = NULL;
  switch (op) {
    case FDM_ADD: ga = g; gb = g; fdm_retain(g); fdm_retain(g); break;
    case FDM_SUB: ga = g; fdm_retain(g); if (need_b) gb = fdm_unary(FDM_NEG, g); break;
    case FDM_MUL:
      if (need_a) ga = fdm_binary(FDM_MUL, g, b);
      if (need_b) gb = fdm_binary(FDM_MUL, g, a);
      break;
    case FDM_DIV:
      if (need_a) ga = fdm_binary(FDM_DIV, g, b);
      if (need_b) {   /* -g * out / b */
        t = fdm_binary(FDM_MUL, g, out); u = t ? fdm_binary(FDM_DIV, t, b) : NULL;
        gb = u ? fdm_unary(FDM_NEG, u) : NULL;
      }
      break;
    case FDM_POW:
      if (need_a) {   /* g * b * a^(b-1) */
        t = fdm_binary_scalar(FDM_SUB, b, 1.0, 0);
        u = t ? fdm_binary(FDM_POW, a, t) : NULL;
        fdm_release(t); t = u ? fdm_binary(FDM_MUL, u, b) : NULL;
        ga = t ? fdm_binary(FDM_MUL, g, t) : NULL;
        fdm_release(t); fdm_release(u); t = u = NULL;
      }
      if (need_b) {   /* g * out * log(a) */
        t = fdm_unary(FDM_LOG, a);
        u = t ? fdm_binary(FDM_MUL, out, t) : NULL;
        gb = u ? fdm_binary(FDM_MUL, g, u) : NULL;
      }
      break;
    case FDM_MAXIMUM: case FDM_MINIMUM: {
      /* the gradient goes to the chosen operand; ties split it in half, as PyTorch */
      fdm_tensor *m = fdm_binary(op == FDM_MAXIMUM ? FDM_GT : FDM_LT, a, b);
      fdm_tensor *e = fdm_binary(FDM_EQ, a, b);
      fdm_tensor *mf = m ? fdm_to_dtype(m, FDM_FLOAT32) : NULL, *ef = e ? fdm_to_dtype(e, FDM_FLOAT32) : NULL;
      fdm_tensor *wa = (mf && ef) ? fdm_add_scaled(mf, ef, 0.5) : NULL;
      if (wa && need_a) ga = fdm_binary(FDM_MUL, g, wa);
      if (wa && need_b) {
        fdm_tensor *wb = fdm_binary_scalar(FDM_SUB, wa, 1.0, 1);
        gb = wb ? fdm_binary(FDM_MUL, g, wb) : NULL;
        fdm_release(wb);
      }
      fdm_release(m); fdm_release(e); fdm_release(mf); fdm_release(ef); fdm_release(wa);
      break;
    }
    default: return fdm_seterror("%s is not differentiable", fdm_binop_name(op));
  }
  fdm_release(t); fdm_release(u);
  int rc = 0;
  if (need_a) { if (!ga) rc = -1; else { gin[0] = fdm_reduce_to_input(n, 0, ga); if (!gin[0]) rc = -1; } }
  if (need_b && rc == 0) { if (!gb) rc = -1; else { gin[1] = fdm_reduce_to_input(n, 1, gb); if (!gin[1]) rc = -1; } }
  fdm_release(ga); fdm_release(gb);
  return rc;
}

fdm_tensor *fdm_binary(fdm_binop op, fdm_tensor *a, fdm_tensor *b) {
  const char *name = fdm_binop_name(op);
  fdm_tensor *chk[2] = {a, b};
  if (fdm_backend_check(name, 2, chk)) return NULL;
  int64_t shape[FDM_MAXDIM];
  int nd = fdm_broadcast_shape(name, a, b, shape), err;
  if (nd < 0) return NULL;
  fdm_dtype cd = compute_dtype(name, a, b, &err);
  if (err) return NULL;
  if (op == FDM_AND || op == FDM_OR) cd = (a->dtype == FDM_FLOAT32 || b->dtype == FDM_FLOAT32) ? FDM_FLOAT32 : FDM_INT64;
  if (op == FDM_DIV) cd = FDM_FLOAT32;   /* true division, as PyTorch's / */
  fdm_tensor *ca = as_dtype(a, cd), *cb = ca ? as_dtype(b, cd) : NULL, *out = NULL;
  if (!cb) goto done;
  out = fdm_empty(is_compare(op) ? FDM_BOOL : cd, nd, shape, a->device);
  if (!out) goto done;
  if (run_binary(op, out, ca, cb)) { fdm_release(out); out = NULL; goto done; }
  if (!is_compare(op) && cd == FDM_FLOAT32) {
    fdm_tensor *in[2] = {a, b};
    fdm_node *node;
    if (fdm_node_new(name, binary_backward, 2, in, sizeof(binary_state), &node)) { fdm_release(out); out = NULL; goto done; }
    if (node) {
      binary_state *s = node->state;
      s->op = op;
      fdm_node_save(node, &s->a, ca); fdm_node_save(node, &s->b, cb);
      if (op == FDM_DIV || op == FDM_POW) fdm_node_save_output(node, &s->out, out);
    }
    if (fdm_node_attach(out, node)) { fdm_release(out); out = NULL; }
  }
done:
  fdm_release(ca); fdm_release(cb);
  return out;
}

static fdm_tensor *scalar_like(const fdm_tensor *a, double s) {
  int integral = (s == floor(s) && fabs(s) < 9.0e15);
  fdm_dtype dt = (a->dtype == FDM_INT64 || a->dtype == FDM_UINT8 || a->dtype == FDM_BOOL) && integral
                 ? FDM_INT64 : FDM_FLOAT32;
  return fdm_full(dt, 0, NULL, s, a->device);
}

fdm_tensor *fdm_binary_scalar(fdm_binop op, fdm_tensor *a, double s, int scalar_first) {
  fdm_tensor *st = scalar_like(a, s);
  if (!st) return NULL;
  fdm_tensor *r = scalar_first ? fdm_binary(op, st, a) : fdm_binary(op, a, st);
  fdm_release(st);
  return r;
}

fdm_tensor *fdm_scale(fdm_tensor *a, double s) { return fdm_binary_scalar(FDM_MUL, a, s, 0); }

fdm_tensor *fdm_add_scaled(fdm_tensor *a, fdm_tensor *b, double alpha) {
  if (alpha == 1.0) return fdm_binary(FDM_ADD, a, b);
  fdm_tensor *sb = fdm_scale(b, alpha);
  if (!sb) return NULL;
  fdm_tensor *r = fdm_binary(FDM_ADD, a, sb);
  fdm_release(sb);
  return r;
}

int fdm_check_inplace(const char *op, fdm_tensor *t) {
  if (!t->storage) return fdm_seterror("%s: tensor was freed (t:free()) and cannot be used", op);
  if (fdm_grad_enabled() && t->requires_grad)
    return fdm_seterror("%s: in-place operation on a tensor that requires grad; "
                        "use fdm.no_grad(function() ... end) or t:detach()", op);
  for (int d = 0; d < t->ndim && fdm_numel(t) > 0; d++)
    if (t->stride[d] == 0 && t->shape[d] > 1)
      return fdm_seterror("%s: the tensor is an expanded view (dim %d has stride 0): several of its "
                          "elements share one memory location; clone it first", op, d + 1);
  return 0;
}

int fdm_binary_(fdm_binop op, fdm_tensor *a, fdm_tensor *b) {
  const char *name = fdm_binop_name(op);
  fdm_tensor *chk[2] = {a, b};
  char iname[32];
  snprintf(iname, sizeof iname, "%s_", name);
  name = iname;
  if (fdm_check_inplace(name, a) || fdm_backend_check(name, 2, chk)) return -1;
  if (is_compare(op)) return fdm_seterror("%s_: comparisons have no in-place form", name);
  if (a->dtype != FDM_FLOAT32 && a->dtype != FDM_INT64)
    return fdm_seterror("%s_: in-place arithmetic needs a float32 or int64 tensor, got %s", name,
                        fdm_dtype_name(a->dtype));
  int64_t shape[FDM_MAXDIM];
  int nd = fdm_broadcast_shape(name, a, b, shape);
  if (nd < 0) return -1;
  if (nd != a->ndim || memcmp(shape, a->shape, nd * sizeof *shape) != 0) {
    char b1[128], b2[128];
    return fdm_seterror("%s_: the result shape would be broadcast beyond the in-place tensor's "
                        "(%s with %s)", name, fdm_shapestr(a, b1, sizeof b1), fdm_shapestr(b, b2, sizeof b2));
  }
  if (a->dtype == FDM_INT64 && (b->dtype == FDM_FLOAT32 || op == FDM_DIV))
    return fdm_seterror("%s_: result type float32 cannot be cast to the int64 in-place tensor", name);
  fdm_tensor *cb = as_dtype(b, a->dtype);
  if (!cb) return -1;
  /* an operand that overlaps the destination is copied first */
  if (cb->storage == a->storage && cb != a) { fdm_tensor *c = fdm_clone(cb); fdm_release(cb); cb = c; if (!cb) return -1; }
  int rc = run_binary(op, a, a, cb);
  fdm_release(cb);
  if (rc == 0) fdm_bump_version(a);
  return rc;
}

int fdm_binary_scalar_(fdm_binop op, fdm_tensor *a, double s) {
  fdm_tensor *st = fdm_full(a->dtype == FDM_INT64 ? FDM_INT64 : FDM_FLOAT32, 0, NULL, s, a->device);
  if (!st) return -1;
  int rc = fdm_binary_(op, a, st);
  fdm_release(st);
  return rc;
}

int fdm_add_scaled_(fdm_tensor *a, fdm_tensor *b, double alpha) {
  fdm_tensor *chk[2] = {a, b};
  if (a->dtype == FDM_FLOAT32 && b->dtype == FDM_FLOAT32 && fdm_same_shape(a, b) &&
      a->storage && b->storage && a->storage != b->storage &&
      fdm_check_inplace("add_", a) == 0 && fdm_backend_check("add_", 2, chk) == 0) {
    fdm_kview va = fdm_kview_of(a), vb = fdm_kview_of(b);
    if (FDM_KERNEL(a->device, "add_", axpy, &va, &vb, alpha)) return -1;
    fdm_bump_version(a);
    return 0;
  }
  if (alpha == 1.0) return fdm_binary_(FDM_ADD, a, b);
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *sb = fdm_scale(b, alpha);
  fdm_set_grad_enabled(prev);
  if (!sb) return -1;
  int rc = fdm_binary_(FDM_ADD, a, sb);
  fdm_release(sb);
  return rc;
}

/* ---- unary ---- */
typedef struct { fdm_unop op; fdm_tensor *x, *y; } unary_state;

static int unary_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  unary_state *s = FDM_NODE_STATE(n, unary_state);
  if (!s) return -1;
  fdm_tensor *gx = fdm_empty_like(s->x);
  if (!gx) return -1;
  fdm_kview vgx = fdm_kview_of(gx), vx = fdm_kview_of(s->x), vy = fdm_kview_of(s->y), vg = fdm_kview_of(g);
  if (FDM_KERNEL(gx->device, fdm_unop_name(s->op), unary_backward, s->op, &vgx, &vx, &vy, &vg)) {
    fdm_release(gx);
    return -1;
  }
  gin[0] = gx;
  return 0;
}

/* out = op(c) for a contiguous c */
static int run_unary(fdm_unop op, fdm_tensor *out, fdm_tensor *c) {
  fdm_kview vo = fdm_kview_of(out), vc = fdm_kview_of(c);
  return FDM_KERNEL(out->device, fdm_unop_name(op), unary, op, &vo, &vc);
}

fdm_tensor *fdm_unary(fdm_unop op, fdm_tensor *a) {
  const char *name = fdm_unop_name(op);
  if (fdm_backend_check(name, 1, &a)) return NULL;
  if (op == FDM_NOT) {
    fdm_tensor *z = fdm_full(a->dtype == FDM_FLOAT32 ? FDM_FLOAT32 : FDM_INT64, 0, NULL, 0, a->device);
    fdm_tensor *r = z ? fdm_binary(FDM_EQ, a, z) : NULL;
    fdm_release(z);
    return r;
  }
  int int_ok = (op == FDM_NEG || op == FDM_ABS || op == FDM_SIGN || op == FDM_SQUARE || op == FDM_RELU);
  if (a->dtype == FDM_FLOAT16 || a->dtype == FDM_BFLOAT16) { fdm_check_float(name, a); return NULL; }
  if (a->dtype != FDM_FLOAT32 && int_ok) {
    fdm_tensor *ca = as_dtype(a, FDM_INT64);
    if (!ca) return NULL;
    fdm_tensor *c = fdm_contiguous(ca), *out = c ? fdm_empty_like(c) : NULL;
    if (out && run_unary(op, out, c)) { fdm_release(out); out = NULL; }
    fdm_release(ca); fdm_release(c);
    return out;
  }
  fdm_tensor *ca = as_dtype(a, FDM_FLOAT32);
  fdm_tensor *c = ca ? fdm_contiguous(ca) : NULL, *out = c ? fdm_empty_like(c) : NULL;
  fdm_release(ca);
  if (!out) { fdm_release(c); return NULL; }
  if (run_unary(op, out, c)) { fdm_release(out); fdm_release(c); return NULL; }
  if (op != FDM_SIGN) {
    fdm_node *node;
    if (fdm_node_new(name, unary_backward, 1, &a, sizeof(unary_state), &node)) { fdm_release(out); out = NULL; }
    else if (node) {
      unary_state *s = node->state;
      s->op = op;
      fdm_node_save(node, &s->x, c); fdm_node_save_output(node, &s->y, out);
    }
    if (out && fdm_node_attach(out, node)) { fdm_release(out); out = NULL; }
  }
  fdm_release(c);
  return out;
}

int fdm_unary_(fdm_unop op, fdm_tensor *a) {
  char name[32];
  snprintf(name, sizeof name, "%s_", fdm_unop_name(op));
  if (fdm_check_inplace(name, a)) return -1;
  int prev = fdm_set_grad_enabled(0);
  fdm_tensor *r = fdm_unary(op, a);
  fdm_set_grad_enabled(prev);
  if (!r) return -1;
  int rc = fdm_copy_(a, r);
  fdm_release(r);
  return rc;
}

/* ---- clamp ---- */
typedef struct { double lo, hi; int has_lo, has_hi; fdm_tensor *x; } clamp_state;

static int clamp_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  clamp_state *s = FDM_NODE_STATE(n, clamp_state);
  if (!s) return -1;
  fdm_tensor *gx = fdm_empty_like(s->x);
  if (!gx) return -1;
  fdm_kview vgx = fdm_kview_of(gx), vx = fdm_kview_of(s->x), vg = fdm_kview_of(g);
  if (FDM_KERNEL(gx->device, "clamp", clamp_backward, &vgx, &vx, &vg, s->lo, s->hi, s->has_lo, s->has_hi)) {
    fdm_release(gx);
    return -1;
  }
  gin[0] = gx;
  return 0;
}

fdm_tensor *fdm_clamp(fdm_tensor *a, double lo, double hi, int has_lo, int has_hi) {
  if (fdm_backend_check("clamp", 1, &a)) return NULL;
  if (a->dtype == FDM_INT64) {
    fdm_tensor *r = fdm_clone(a);
    if (r && fdm_clamp_(r, lo, hi, has_lo, has_hi)) { fdm_release(r); return NULL; }
    return r;
  }
  if (fdm_check_float("clamp", a)) return NULL;
  fdm_tensor *c = fdm_contiguous(a), *out = c ? fdm_empty_like(c) : NULL;
  if (!out) { fdm_release(c); return NULL; }
  fdm_kview vo = fdm_kview_of(out), vc = fdm_kview_of(c);
  fdm_node *node = NULL;
  if (FDM_KERNEL(out->device, "clamp", clamp, &vo, &vc, lo, hi, has_lo, has_hi) ||
      fdm_node_new("clamp", clamp_backward, 1, &a, sizeof(clamp_state), &node)) {
    fdm_release(out); fdm_release(c);
    return NULL;
  }
  if (node) {
    clamp_state *s = node->state;
    s->lo = lo; s->hi = hi; s->has_lo = has_lo; s->has_hi = has_hi;
    fdm_node_save(node, &s->x, c);
  }
  if (fdm_node_attach(out, node)) { fdm_release(out); out = NULL; }
  fdm_release(c);
  return out;
}

int fdm_clamp_(fdm_tensor *a, double lo, double hi, int has_lo, int has_hi) {
  if (fdm_check_inplace("clamp_", a)) return -1;
  if (has_lo && fdm_binary_scalar_(FDM_MAXIMUM, a, lo)) return -1;
  if (has_hi && fdm_binary_scalar_(FDM_MINIMUM, a, hi)) return -1;
  return 0;
}

/* ---- where ---- */
typedef struct { fdm_tensor *cond; } where_state;

static int where_backward(fdm_node *n, fdm_tensor *g, fdm_tensor **gin) {
  where_state *s = FDM_NODE_STATE(n, where_state);
  if (!s) return -1;
  fdm_tensor *z = fdm_zeros(FDM_FLOAT32, 0, NULL, g->device);
  if (!z) return -1;
  int rc = 0;
  for (int i = 1; i <= 2 && rc == 0; i++) {
    if (!fdm_node_needs(n, i)) continue;
    fdm_tensor *w = i == 1 ? fdm_where(s->cond, g, z) : fdm_where(s->cond, z, g);
    gin[i] = w ? fdm_reduce_to_input(n, i, w) : NULL;
    fdm_release(w);
    if (!gin[i]) rc = -1;
  }
  fdm_release(z);
  return rc;
}

fdm_tensor *fdm_where(fdm_tensor *cond, fdm_tensor *a, fdm_tensor *b) {
  fdm_tensor *chk[3] = {cond, a, b};
  if (fdm_backend_check("where", 3, chk)) return NULL;
  if (cond->dtype != FDM_BOOL)
    { fdm_seterror("where: condition must be a bool tensor, got %s", fdm_dtype_name(cond->dtype)); return NULL; }
  int64_t s1[FDM_MAXDIM], shape[FDM_MAXDIM];
  int nd1 = fdm_broadcast_shape("where", a, b, s1), err;
  if (nd1 < 0) return NULL;
  fdm_tensor tmp = {0};
  tmp.ndim = nd1; memcpy(tmp.shape, s1, sizeof s1);
  int nd = fdm_broadcast_shape("where", cond, &tmp, shape);
  if (nd < 0) return NULL;
  fdm_dtype cd = compute_dtype("where", a, b, &err);
  if (err) return NULL;
  fdm_tensor *ca = as_dtype(a, cd), *cb = ca ? as_dtype(b, cd) : NULL, *out = NULL;
  if (cb) out = fdm_empty(cd, nd, shape, a->device);
  if (out) {
    fdm_kview vo = fdm_kview_of(out), vc = fdm_kview_bcast(cond, nd, shape);
    fdm_kview va = fdm_kview_bcast(ca, nd, shape), vb = fdm_kview_bcast(cb, nd, shape);
    if (FDM_KERNEL(out->device, "where", where, &vo, &vc, &va, &vb)) { fdm_release(out); out = NULL; }
  }
  if (out && cd == FDM_FLOAT32) {
    fdm_tensor *in[3] = {cond, a, b};
    fdm_node *node;
    if (fdm_node_new("where", where_backward, 3, in, sizeof(where_state), &node)) { fdm_release(out); out = NULL; }
    else {
      if (node) fdm_node_save(node, &((where_state *)node->state)->cond, cond);
      if (fdm_node_attach(out, node)) { fdm_release(out); out = NULL; }
    }
  }
  fdm_release(ca); fdm_release(cb);
  return out;
}
