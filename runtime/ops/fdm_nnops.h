/*
** fdm_nnops.h: neural-network ops of the core (runtime/ops/op_nn*.c), bound to
** Lua as fdm.F.* by runtime/lua/lnnops.c. Dims are 0-based. Every op returns a
** NEW reference, or NULL with fdm_lasterror() set (naming the op and the
** shapes involved). Ops record autograd nodes; optional tensors may be NULL.
** Tensors are float32 on any available device (a device without the kernel
** gives a clear error); the weights of linear, conv2d and conv_transpose2d
** may also be float16/bfloat16 (inference: no gradient for them).
*/
#ifndef FDM_NNOPS_H
#define FDM_NNOPS_H
#include "fdm.h"
#include "fdm_kernels.h"   /* fdm_act */

typedef enum { FDM_REDUCE_NONE = 0, FDM_REDUCE_MEAN, FDM_REDUCE_SUM } fdm_reduction;
typedef enum { FDM_INTERP_NEAREST = 0, FDM_INTERP_BILINEAR } fdm_interp_mode;

/* {h, w} pairs; groups >= 1. output_padding is for conv_transpose2d only. */
typedef struct {
  int stride[2], padding[2], dilation[2], output_padding[2];
  int groups;
} fdm_conv_opts;
void fdm_conv_opts_default(fdm_conv_opts *o);   /* stride 1, padding 0, dilation 1, groups 1 */

/* x [..., in] @ w[out, in]^T + b[out] -> [..., out] */
fdm_tensor *fdm_linear(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b);
/* a [B, n, m] @ b [B, m, p] -> [B, n, p] (no broadcasting) */
fdm_tensor *fdm_bmm(fdm_tensor *a, fdm_tensor *b);

/* x [N, C, H, W] (or [C, H, W]), w [K, C/groups, kh, kw], b [K] */
fdm_tensor *fdm_conv2d(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b, const fdm_conv_opts *o);
/* x [N, C, H, W] (or [C, H, W]), w [C, K/groups, kh, kw], b [K] */
fdm_tensor *fdm_conv_transpose2d(fdm_tensor *x, fdm_tensor *w, fdm_tensor *b, const fdm_conv_opts *o);

/* x [N, C, H, W] or [C, H, W]; k/stride/padding {h, w}; stride NULL = kernel size */
fdm_tensor *fdm_avg_pool2d(fdm_tensor *x, const int *k, const int *stride, const int *padding);
fdm_tensor *fdm_max_pool2d(fdm_tensor *x, const int *k, const int *stride, const int *padding);

/* x [N, C, H, W] -> [N, C, oh, ow]. scale_h/scale_w > 0: the scale_factor the
** caller gave (PyTorch then maps indices with 1/scale), 0: size was given. */
fdm_tensor *fdm_interpolate(fdm_tensor *x, int64_t oh, int64_t ow, double scale_h, double scale_w,
                            fdm_interp_mode mode, int align_corners);

/* x [N, C, ...]; running stats [C] (updated in place when training; may be
** NULL in training), weight/bias [C] or NULL */
fdm_tensor *fdm_batch_norm(fdm_tensor *x, fdm_tensor *running_mean, fdm_tensor *running_var,
                           fdm_tensor *weight, fdm_tensor *bias, int training, double momentum,
                           double eps);
/* gelu(batch_norm(...)) (exact GELU), fused */
fdm_tensor *fdm_batch_norm_gelu(fdm_tensor *x, fdm_tensor *running_mean, fdm_tensor *running_var,
                                fdm_tensor *weight, fdm_tensor *bias, int training, double momentum,
                                double eps);
/* x [N, C, ...], groups divides C, weight/bias [C] or NULL */
fdm_tensor *fdm_group_norm(fdm_tensor *x, int groups, fdm_tensor *weight, fdm_tensor *bias, double eps);
/* act(group_norm(x) * scale + shift), scale/shift [N, C] (or [N, C, 1, ...]) or NULL: one fused pass
** without gradients, the composite of the four ops (and their autograd) with them */
fdm_tensor *fdm_group_norm_act(fdm_tensor *x, int groups, fdm_tensor *weight, fdm_tensor *bias, double eps,
                               fdm_tensor *scale, fdm_tensor *shift, fdm_act act);
/* normalises over the last nd dims, which must equal nshape; weight/bias of shape nshape or NULL */
fdm_tensor *fdm_layer_norm(fdm_tensor *x, int nd, const int64_t *nshape, fdm_tensor *weight,
                           fdm_tensor *bias, double eps);

fdm_tensor *fdm_gelu(fdm_tensor *x, int tanh_approx);
fdm_tensor *fdm_softmax(fdm_tensor *x, int dim, int log);
/* training and p > 0: zeroes elements with probability p, scales the rest by 1/(1-p) */
fdm_tensor *fdm_dropout(fdm_tensor *x, double p, int training);

fdm_tensor *fdm_mse_loss(fdm_tensor *a, fdm_tensor *b, fdm_reduction red);
/* logits [N, C] or [C], labels int64 [N] or [] with values in [0, C) */
fdm_tensor *fdm_cross_entropy(fdm_tensor *logits, fdm_tensor *labels, fdm_reduction red);
/* int64 labels of any shape -> int64 [..., n]; n < 0: max(labels) + 1 */
fdm_tensor *fdm_one_hot(fdm_tensor *labels, int64_t n);
/* torchvision's gaussian_blur on x [..., H, W]: kernel (kx along W, ky along H), odd sizes,
** sigmas (sx, sy) > 0, reflect padding; differentiable */
fdm_tensor *fdm_gaussian_blur(fdm_tensor *x, int kx, int ky, double sx, double sy);
/* softmax(q k^T / sqrt(d) [+ mask]) v; mask bool (false -> -inf) or float (added), broadcast */
fdm_tensor *fdm_scaled_dot_product_attention(fdm_tensor *q, fdm_tensor *k, fdm_tensor *v,
                                             fdm_tensor *mask);
/* shared by op_nn*.c: every operand (NULL skipped) is a float32 tensor on one
** available device; -1 with the error set otherwise */
int nn_check(const char *op, int n, fdm_tensor *const *ts);

#endif
