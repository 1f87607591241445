/* op_optim.c: the fused optimizer step behind fdm.optim.Adam / AdamW: one
** kernel pass over each parameter and its moment buffers, in place; the
** _at_ form reads the learning rate and step from device tensors (graphs). */
#include <stdlib.h>
#include "fdm_internal.h"

/* t must be a contiguous float32 tensor shaped like the parameter, on its device */
static int check_like(const fdm_tensor *t, const fdm_tensor *p, const char *what) {
  char b1[128], b2[128];
  if (!t->storage || t->dtype != FDM_FLOAT32 || !fdm_is_contiguous(t) || !fdm_same_shape(t, p) ||
      t->device != p->device)
    return fdm_seterror("adam_step_: %s must be a contiguous float32 tensor shaped like the parameter "
                        "on its device (%s %s on %s, parameter %s %s on %s)", what,
                        fdm_shapestr(t, b1, sizeof b1), fdm_dtype_name(t->dtype), fdm_device_name(t->device),
                        fdm_shapestr(p, b2, sizeof b2), fdm_dtype_name(p->dtype), fdm_device_name(p->device));
  return 0;
}

int fdm_adam_step_(fdm_tensor *p, fdm_tensor *g, fdm_tensor *m, fdm_tensor *v, fdm_tensor *vmax,
                   const fdm_adam_params *a) {
  fdm_tensor *chk[2] = {p, g};
  if (fdm_backend_check("adam_step_", 2, chk)) return -1;
  if (p->dtype != FDM_FLOAT32 || !fdm_is_contiguous(p))
    return fdm_seterror("adam_step_: the parameter must be a contiguous float32 tensor, got %s",
                        fdm_dtype_name(p->dtype));
  if (check_like(m, p, "exp_avg") || check_like(v, p, "exp_avg_sq") ||
      (vmax && check_like(vmax, p, "max_exp_avg_sq")))
    return -1;
  if (a->step < 1) return fdm_seterror("adam_step_: step must be >= 1, got %lld", (long long)a->step);
  fdm_tensor *gc = fdm_float_contig(g);
  if (!gc) return -1;
  int rc = 0;
  if (!fdm_same_shape(gc, p)) {
    char b1[128], b2[128];
    rc = fdm_seterror("adam_step_: gradient shape %s differs from the parameter's %s",
                      fdm_shapestr(gc, b1, sizeof b1), fdm_shapestr(p, b2, sizeof b2));
  } else {
    fdm_kview vp = fdm_kview_of(p), vg = fdm_kview_of(gc), vm = fdm_kview_of(m), vv = fdm_kview_of(v), vx;
    if (vmax) vx = fdm_kview_of(vmax);
    rc = FDM_KERNEL(p->device, "adam_step_", adam, a, &vp, &vg, &vm, &vv, vmax ? &vx : NULL);
  }
  fdm_release(gc);
  if (rc == 0) {
    fdm_bump_version(p); fdm_bump_version(m); fdm_bump_version(v);
    if (vmax) fdm_bump_version(vmax);
  }
  return rc;
}

/* lr / step of adam_multi_at: one-element tensors of the dtype on the parameters' device */
static int check_scalar(const fdm_tensor *t, fdm_dtype dt, fdm_device dev, const char *what) {
  if (!t->storage || t->dtype != dt || fdm_numel(t) != 1 || t->device != dev)
    return fdm_seterror("adam_step_: %s must be a one-element %s tensor on the parameters' device '%s' "
                        "(got %lld elements of %s on '%s')", what, fdm_dtype_name(dt), fdm_device_name(dev),
                        (long long)fdm_numel(t), fdm_dtype_name(t->dtype), fdm_device_name(t->device));
  return 0;
}

/* lr_t and step_t NULL: the adam_multi kernel with a->lr, a->step; else adam_multi_at */
static int multi_step(int n, fdm_tensor *const *p, fdm_tensor *const *g, fdm_tensor *const *m,
                      fdm_tensor *const *v, fdm_tensor *const *vmax, const fdm_adam_params *a,
                      fdm_tensor *lr_t, fdm_tensor *step_t) {
  if (n <= 0) return 0;
  if (!lr_t && a->step < 1) return fdm_seterror("adam_step_: step must be >= 1, got %lld", (long long)a->step);
  fdm_device dev = p[0]->device;
  if (lr_t && (check_scalar(lr_t, FDM_FLOAT32, dev, "lr") || check_scalar(step_t, FDM_INT64, dev, "step")))
    return -1;
  for (int i = 0; i < n; i++) {
    fdm_tensor *chk[2] = {p[i], g[i]};
    if (fdm_backend_check("adam_step_", 2, chk)) return -1;
    if (p[i]->device != dev)
      return fdm_seterror("adam_step_: parameters on different devices (%s and %s)", fdm_device_name(dev),
                          fdm_device_name(p[i]->device));
    if (p[i]->dtype != FDM_FLOAT32 || !fdm_is_contiguous(p[i]))
      return fdm_seterror("adam_step_: parameter %d must be a contiguous float32 tensor, got %s", i + 1,
                          fdm_dtype_name(p[i]->dtype));
    if (check_like(m[i], p[i], "exp_avg") || check_like(v[i], p[i], "exp_avg_sq") ||
        (vmax && check_like(vmax[i], p[i], "max_exp_avg_sq")))
      return -1;
  }
  fdm_kview *views = malloc((size_t)n * 5 * sizeof *views);
  fdm_tensor **gc = calloc((size_t)n, sizeof *gc);
  int rc = 0;
  if (!views || !gc) rc = fdm_seterror("adam_step_: out of memory for %d parameters", n);
  for (int i = 0; i < n && rc == 0; i++) {
    gc[i] = fdm_float_contig(g[i]);
    if (!gc[i]) { rc = -1; break; }
    if (!fdm_same_shape(gc[i], p[i])) {
      char b1[128], b2[128];
      rc = fdm_seterror("adam_step_: gradient shape %s differs from the parameter's %s",
                        fdm_shapestr(gc[i], b1, sizeof b1), fdm_shapestr(p[i], b2, sizeof b2));
      break;
    }
    views[i] = fdm_kview_of(p[i]);
    views[n + i] = fdm_kview_of(gc[i]);
    views[2 * n + i] = fdm_kview_of(m[i]);
    views[3 * n + i] = fdm_kview_of(v[i]);
    if (vmax) views[4 * n + i] = fdm_kview_of(vmax[i]);
  }
  if (rc == 0 && lr_t) {
    fdm_kview vl = fdm_kview_of(lr_t), vs = fdm_kview_of(step_t);
    rc = FDM_KERNEL(dev, "adam_step_", adam_multi_at, a, &vl, &vs, n, views, views + n, views + 2 * n,
                    views + 3 * n, vmax ? views + 4 * n : NULL);
  } else if (rc == 0) {
    rc = FDM_KERNEL(dev, "adam_step_", adam_multi, a, n, views, views + n, views + 2 * n, views + 3 * n,
                    vmax ? views + 4 * n : NULL);
  }
  if (gc) for (int i = 0; i < n; i++) fdm_release(gc[i]);
  free(gc);
  free(views);
  if (rc == 0)
    for (int i = 0; i < n; i++) {
      fdm_bump_version(p[i]); fdm_bump_version(m[i]); fdm_bump_version(v[i]);
      if (vmax) fdm_bump_version(vmax[i]);
    }
  return rc;
}

int fdm_adam_multi_step_(int n, fdm_tensor *const *p, fdm_tensor *const *g, fdm_tensor *const *m,
                         fdm_tensor *const *v, fdm_tensor *const *vmax, const fdm_adam_params *a) {
  return multi_step(n, p, g, m, v, vmax, a, NULL, NULL);
}

int fdm_adam_multi_step_at_(int n, fdm_tensor *const *p, fdm_tensor *const *g, fdm_tensor *const *m,
                            fdm_tensor *const *v, fdm_tensor *const *vmax, const fdm_adam_params *a,
                            fdm_tensor *lr, fdm_tensor *step) {
  if (!lr || !step) return fdm_seterror("adam_step_: lr and step tensors expected");
  return multi_step(n, p, g, m, v, vmax, a, lr, step);
}
