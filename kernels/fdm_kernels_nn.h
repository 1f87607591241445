/*
** fdm_kernels_nn.h: the neural-network part of the kernel table (see
** fdm_kernels.h for the rules). Tensor operands are contiguous float32 views
** in NCHW layout unless noted; weights of linear and convolutions may be
** float16 or bfloat16 (converted to float32 block by block inside the
** kernel; accumulation is float32). Optional operands are NULL. Gradient
** outputs are overwritten, not accumulated. "work" is scratch memory the op
** allocates from the device (its size in floats from the *_work kernel).
**
** autocast (fdm_conv_params.autocast, linear's first argument): FDM_FLOAT32
** (the zero value) computes in float32; FDM_BFLOAT16/FDM_FLOAT16 computes the
** products (forward, data and weight gradients) with x, w and gy rounded to
** that dtype and float32 accumulation, as torch.autocast. Outputs, gradients,
** the bias add and the bias gradient (the sum of the float32 gy) stay float32.
*/
#ifndef FDM_KERNELS_NN_H
#define FDM_KERNELS_NN_H
#include "fdm.h"

typedef struct {
  int N, C, H, W;        /* input */
  int K;                 /* output channels */
  int kh, kw, sh, sw, ph, pw, dh, dw, groups;
  int OH, OW;            /* output spatial size (computed by the op) */
  fdm_dtype autocast;    /* operands' rounding (above) */
} fdm_conv_params;

typedef struct {
  int NC, H, W, OH, OW;  /* planes and sizes */
  int kh, kw, sh, sw, ph, pw;
} fdm_pool_params;

/* interpolation of NC planes H x W -> OH x OW, nearest or bilinear.
** scaled: PyTorch's scale_factor path, source index from the step rh/rw
** (1/scale, per output pixel); else the size path (align_corners applies
** to bilinear) */
typedef struct {
  int NC, H, W, OH, OW;
  int bilinear, align_corners;
  int scaled;
  float rh, rw;
} fdm_resize_params;

/* batch norm over x [N, C, S]; training: batch statistics and running-stat
** update (unbiased var, momentum); eval: running statistics. The backward
** of a training pass differentiates through the batch statistics. */
typedef struct {
  int N, C, S;
  int training;
  float momentum, eps;
} fdm_batch_norm_params;

/* group norm over x [N, C, S] in G groups; layer norm: groups = 0, x [M, D] as N = M, S = D */
typedef struct {
  int N, C, S, G;
  float eps;
} fdm_norm_params;

/* the activation fused after a normalisation (group_norm_act) */
typedef enum { FDM_ACT_NONE, FDM_ACT_GELU, FDM_ACT_SILU } fdm_act;

/* torchvision gaussian blur of P planes H x W, reflect padding, separable
** kernels wx [kx] (along W) and wy [ky] (along H) */
typedef struct {
  int64_t P;
  int H, W, kx, ky;
} fdm_blur_params;

#define FDM_NN_KERNELS(X)                                                                    \
  /* y [M, OUT] = x [M, IN] w[OUT, IN]^T (+ b); w float32/float16/bfloat16 */               \
  X(linear_forward, (fdm_dtype autocast, int64_t M, int64_t IN, int64_t OUT, const fdm_kview *x, const fdm_kview *w, \
                     const fdm_kview *b, const fdm_kview *y))                                  \
  /* gx [M, IN], gw [OUT, IN] (float32 even for a half w), gb [OUT]: any may be NULL */      \
  X(linear_backward, (fdm_dtype autocast, int64_t M, int64_t IN, int64_t OUT, const fdm_kview *x, const fdm_kview *w, \
                      const fdm_kview *gy, const fdm_kview *gx, const fdm_kview *gw,            \
                      const fdm_kview *gb))                                                   \
  X(conv2d_work, (const fdm_conv_params *p, size_t *floats))                                 \
  X(conv2d_forward, (const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w,         \
                     const fdm_kview *b, const fdm_kview *y, const fdm_kview *work))            \
  X(conv2d_backward, (const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w,        \
                      const fdm_kview *gy, const fdm_kview *gx, const fdm_kview *gw,            \
                      const fdm_kview *gb, const fdm_kview *work))                             \
  X(conv_transpose2d_work, (const fdm_conv_params *p, size_t *floats))                       \
  X(conv_transpose2d_forward, (const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w, \
                               const fdm_kview *b, const fdm_kview *y, const fdm_kview *work))  \
  X(conv_transpose2d_backward, (const fdm_conv_params *p, const fdm_kview *x,                 \
                                const fdm_kview *w, const fdm_kview *gy, const fdm_kview *gx,   \
                                const fdm_kview *gw, const fdm_kview *gb, const fdm_kview *work)) \
  X(avg_pool2d_forward, (const fdm_pool_params *p, const fdm_kview *x, const fdm_kview *y))    \
  X(avg_pool2d_backward, (const fdm_pool_params *p, const fdm_kview *gy, const fdm_kview *gx)) \
  /* idx: int64 argmax position inside each input plane */                                   \
  X(max_pool2d_forward, (const fdm_pool_params *p, const fdm_kview *x, const fdm_kview *y,     \
                         const fdm_kview *idx))                                               \
  X(max_pool2d_backward, (const fdm_pool_params *p, const fdm_kview *gy, const fdm_kview *idx, \
                          const fdm_kview *gx))                                               \
  X(resize_forward, (const fdm_resize_params *p, const fdm_kview *x, const fdm_kview *y))      \
  X(resize_backward, (const fdm_resize_params *p, const fdm_kview *gy, const fdm_kview *gx))   \
  /* weight/bias/running stats [C] or NULL; save_mean/save_invstd [C] */                     \
  X(batch_norm_forward, (const fdm_batch_norm_params *p, const fdm_kview *x,                  \
                         const fdm_kview *weight, const fdm_kview *bias,                       \
                         const fdm_kview *running_mean, const fdm_kview *running_var,          \
                         const fdm_kview *y, const fdm_kview *save_mean,                       \
                         const fdm_kview *save_invstd))                                       \
  /* y = gelu(bn(x)), pre = bn(x) (kept for backward) */                                     \
  X(batch_norm_gelu_forward, (const fdm_batch_norm_params *p, const fdm_kview *x,             \
                              const fdm_kview *weight, const fdm_kview *bias,                  \
                              const fdm_kview *running_mean, const fdm_kview *running_var,     \
                              const fdm_kview *pre, const fdm_kview *y,                        \
                              const fdm_kview *save_mean, const fdm_kview *save_invstd))       \
  X(batch_norm_backward, (const fdm_batch_norm_params *p, const fdm_kview *x,                 \
                          const fdm_kview *weight, const fdm_kview *save_mean,                 \
                          const fdm_kview *save_invstd, const fdm_kview *gy, const fdm_kview *gx, \
                          const fdm_kview *gweight, const fdm_kview *gbias))                   \
  /* gy is the gradient of gelu(pre); work: scratch of x's size for the gradient of pre */    \
  X(batch_norm_gelu_backward, (const fdm_batch_norm_params *p, const fdm_kview *x,            \
                               const fdm_kview *weight, const fdm_kview *save_mean,            \
                               const fdm_kview *save_invstd, const fdm_kview *pre,             \
                               const fdm_kview *gy, const fdm_kview *work, const fdm_kview *gx, \
                               const fdm_kview *gweight, const fdm_kview *gbias))              \
  /* mean/rstd [N*G] (layer norm: [M]) */                                                     \
  X(group_norm_forward, (const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight, \
                         const fdm_kview *bias, const fdm_kview *y, const fdm_kview *mean,      \
                         const fdm_kview *rstd))                                              \
  X(group_norm_backward, (const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight, \
                          const fdm_kview *mean, const fdm_kview *rstd, const fdm_kview *gy,    \
                          const fdm_kview *gx, const fdm_kview *gweight, const fdm_kview *gbias)) \
  /* y = act(group_norm(x) * scale + shift): scale/shift [N*C] (one per (n, c)) or NULL; inference     \
  ** only (the op runs the composite when gradients are wanted) */                             \
  X(group_norm_act_forward, (const fdm_norm_params *p, fdm_act act, const fdm_kview *x,        \
                             const fdm_kview *weight, const fdm_kview *bias, const fdm_kview *scale, \
                             const fdm_kview *shift, const fdm_kview *y))                      \
  X(layer_norm_forward, (const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight, \
                         const fdm_kview *bias, const fdm_kview *y, const fdm_kview *mean,      \
                         const fdm_kview *rstd))                                              \
  X(layer_norm_backward, (const fdm_norm_params *p, const fdm_kview *x, const fdm_kview *weight, \
                          const fdm_kview *mean, const fdm_kview *rstd, const fdm_kview *gy,    \
                          const fdm_kview *gx, const fdm_kview *gweight, const fdm_kview *gbias)) \
  /* softmax over the middle axis of [outer, D, inner]; backward from y */                   \
  X(softmax_forward, (int64_t outer, int64_t D, int64_t inner, int log, const fdm_kview *x,   \
                      const fdm_kview *y))                                                    \
  X(softmax_backward, (int64_t outer, int64_t D, int64_t inner, int log, const fdm_kview *y,  \
                       const fdm_kview *gy, const fdm_kview *gx))                              \
  /* wx [kx], wy [ky]: host arrays */                                                       \
  X(blur_forward, (const fdm_blur_params *p, const float *wx, const float *wy,               \
                   const fdm_kview *x, const fdm_kview *y))                                    \
  X(blur_backward, (const fdm_blur_params *p, const float *wx, const float *wy,              \
                    const fdm_kview *gy, const fdm_kview *gx))                                 \
  /* out [.., n] int64 (zeroed by the op) gets 1 at each label (int64, values in [0, n),  \
  ** checked by the op) */                                                                   \
  X(one_hot, (const fdm_kview *out, const fdm_kview *labels, int64_t n))
#endif
