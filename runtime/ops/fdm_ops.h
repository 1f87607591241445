/*
** fdm_ops.h: tensor ops of the core (autograd-aware). Dims here are 0-based
** (bindings convert from Lua's 1-based). Every op returns a NEW reference or
** NULL with fdm_lasterror() set. Ops check dtypes/devices/shapes and name
** themselves in errors.
*/
#ifndef FDM_OPS_H
#define FDM_OPS_H
#include "fdm.h"
#include "fdm_kernels.h"   /* fdm_binop, fdm_unop */

const char *fdm_binop_name(fdm_binop op);
const char *fdm_unop_name(fdm_unop op);

/* creation and copies (op_copy.c) */
fdm_tensor *fdm_full(fdm_dtype dt, int ndim, const int64_t *shape, double v, fdm_device dev);
fdm_tensor *fdm_contiguous(fdm_tensor *t);     /* new ref; same object if already contiguous */
fdm_tensor *fdm_clone(fdm_tensor *t);
/* t on another device (new ref; the same object when already there), differentiable */
fdm_tensor *fdm_to_device(fdm_tensor *t, fdm_device dev);
/* a contiguous copy in host memory (t itself when it already is), no history:
** for bindings and writers that read the values */
fdm_tensor *fdm_host_contiguous(fdm_tensor *t);
/* a float32 contiguous version of t (new ref) */
fdm_tensor *fdm_float_contig(fdm_tensor *t);
/* elementwise (broadcasting), result dtype: bool for comparisons/logic,
** else the promoted dtype (int64 op float32 -> float32) */
fdm_tensor *fdm_binary(fdm_binop op, fdm_tensor *a, fdm_tensor *b);
fdm_tensor *fdm_binary_scalar(fdm_binop op, fdm_tensor *a, double s, int scalar_first);
fdm_tensor *fdm_unary(fdm_unop op, fdm_tensor *a);
fdm_tensor *fdm_scale(fdm_tensor *a, double s);          /* a * s */
fdm_tensor *fdm_add_scaled(fdm_tensor *a, fdm_tensor *b, double alpha); /* a + alpha*b */
fdm_tensor *fdm_clamp(fdm_tensor *a, double lo, double hi, int has_lo, int has_hi);
fdm_tensor *fdm_where(fdm_tensor *cond, fdm_tensor *a, fdm_tensor *b);
/* the guard of in-place ops: refuses freed tensors and, while grad mode is
** on, tensors that require grad */
int fdm_check_inplace(const char *op, fdm_tensor *t);
/* in place (no autograd recording; refused on tensors that need grad while grad mode is on) */
int fdm_binary_(fdm_binop op, fdm_tensor *a, fdm_tensor *b);
int fdm_binary_scalar_(fdm_binop op, fdm_tensor *a, double s);
int fdm_unary_(fdm_unop op, fdm_tensor *a);
int fdm_clamp_(fdm_tensor *a, double lo, double hi, int has_lo, int has_hi);
int fdm_copy_(fdm_tensor *dst, fdm_tensor *src);        /* broadcasts src, converts dtype */
int fdm_fill_(fdm_tensor *dst, double v);
int fdm_add_scaled_(fdm_tensor *a, fdm_tensor *b, double alpha);  /* a += alpha*b */

/* views (share storage) */
fdm_tensor *fdm_view(fdm_tensor *t, int ndim, const int64_t *shape);     /* one -1 allowed */
fdm_tensor *fdm_reshape(fdm_tensor *t, int ndim, const int64_t *shape);  /* copies if needed */
fdm_tensor *fdm_narrow(fdm_tensor *t, int dim, int64_t start, int64_t len);
fdm_tensor *fdm_slice(fdm_tensor *t, int dim, int64_t start, int64_t stop, int64_t step); /* stop exclusive */
fdm_tensor *fdm_select(fdm_tensor *t, int dim, int64_t i);
fdm_tensor *fdm_permute(fdm_tensor *t, const int *perm);
fdm_tensor *fdm_transpose(fdm_tensor *t, int d0, int d1);
fdm_tensor *fdm_expand(fdm_tensor *t, int ndim, const int64_t *shape);   /* -1 keeps a size */
fdm_tensor *fdm_squeeze(fdm_tensor *t, int dim);                          /* dim -1: all */
fdm_tensor *fdm_unsqueeze(fdm_tensor *t, int dim);
fdm_tensor *fdm_detach(fdm_tensor *t);

/* copying ops */
fdm_tensor *fdm_cat(int n, fdm_tensor *const *ts, int dim);
fdm_tensor *fdm_stack(int n, fdm_tensor *const *ts, int dim);
fdm_tensor *fdm_flip(fdm_tensor *t, int ndims, const int *dims);
fdm_tensor *fdm_roll(fdm_tensor *t, int n, const int64_t *shifts, const int *dims);
/* pads[0],pads[1] pad the last dim (left,right), pads[2],pads[3] the one before ... */
fdm_tensor *fdm_pad(fdm_tensor *t, int npad, const int64_t *pads, double value);
fdm_tensor *fdm_to_dtype(fdm_tensor *t, fdm_dtype dt);

/* reductions; ndims = 0 reduces everything */
fdm_tensor *fdm_sum(fdm_tensor *t, int ndims, const int *dims, int keepdim);
fdm_tensor *fdm_mean(fdm_tensor *t, int ndims, const int *dims, int keepdim);
fdm_tensor *fdm_var(fdm_tensor *t, int ndims, const int *dims, int correction, int keepdim);
/* max/min over a dim: values (autograd) and int64 indices (*indices, new ref, may be NULL) */
fdm_tensor *fdm_max_dim(fdm_tensor *t, int dim, int keepdim, int is_min, fdm_tensor **indices);
fdm_tensor *fdm_max_all(fdm_tensor *t, int is_min);
fdm_tensor *fdm_argmax(fdm_tensor *t, int dim, int keepdim, int is_min);   /* dim -1000: flat */
fdm_tensor *fdm_quantile(fdm_tensor *t, double q, int dim, int keepdim);   /* dim -1000: flat */
fdm_tensor *fdm_any_all(fdm_tensor *t, int is_all);

/* linear algebra: matmul with PyTorch's rules (1-D, 2-D, batched broadcast) */
fdm_tensor *fdm_matmul(fdm_tensor *a, fdm_tensor *b);

/* gather along dim with int64 index (0-based), as torch.gather */
fdm_tensor *fdm_gather(fdm_tensor *t, int dim, fdm_tensor *index);

/* rows of t along dim picked by a 1-d int64 index (0-based), as torch.index_select */
fdm_tensor *fdm_index_select(fdm_tensor *t, int dim, fdm_tensor *index);

/* random numbers (op_random.c) from the stream of core/rng.c */
fdm_tensor *fdm_randn(int ndim, const int64_t *shape, fdm_device dev);
fdm_tensor *fdm_rand(int ndim, const int64_t *shape, fdm_device dev);
fdm_tensor *fdm_randint(int64_t lo, int64_t hi, int ndim, const int64_t *shape, fdm_device dev);
fdm_tensor *fdm_randperm(int64_t n, fdm_device dev);
/* Adam/AdamW update of parameter p with gradient g and moments m, v (vmax:
** AMSGrad, or NULL), all in place (op_optim.c) */
int fdm_adam_step_(fdm_tensor *p, fdm_tensor *g, fdm_tensor *m, fdm_tensor *v, fdm_tensor *vmax,
                   const fdm_adam_params *a);
/* the same step for n parameters on one device in one kernel call (multi-tensor
** Adam); vmax NULL or n tensors */
int fdm_adam_multi_step_(int n, fdm_tensor *const *p, fdm_tensor *const *g, fdm_tensor *const *m,
                         fdm_tensor *const *v, fdm_tensor *const *vmax, const fdm_adam_params *a);
/* the same with the learning rate and step read from one-element tensors on
** the parameters' device (float32 lr, int64 step): a graph replays it with
** the values they hold then (a->lr and a->step are ignored) */
int fdm_adam_multi_step_at_(int n, fdm_tensor *const *p, fdm_tensor *const *g, fdm_tensor *const *m,
                            fdm_tensor *const *v, fdm_tensor *const *vmax, const fdm_adam_params *a,
                            fdm_tensor *lr, fdm_tensor *step);
/* counter (a one-element int64 tensor) += delta by a kernel on its device (op_graph.c) */
int fdm_counter_add_(fdm_tensor *counter, int64_t delta);
fdm_tensor *fdm_arange(double start, double stop, double step, fdm_dtype dt, fdm_device dev);
fdm_tensor *fdm_linspace(double start, double stop, int64_t n, fdm_dtype dt, fdm_device dev);
#endif
