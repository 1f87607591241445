/*
** cpu_nn.h: CPU kernels for neural-network ops. Plain functions over
** contiguous float32 NCHW buffers; the caller (runtime/ops/op_*.c) checks shapes,
** allocates every buffer (outputs, gradients and the scratch "work" whose
** size the matching *_work function returns, in floats) and owns them.
** These raw kernels never fail and never allocate (except the blur's
** per-plane scratch); they know nothing of Lua or tensors. The kernel-table
** entries (cpu_kernel_<slot>, cpu_kernels.h) unpack fdm_views into them.
** Gradient outputs are OVERWRITTEN (not accumulated) unless noted.
** Threading: OpenMP over both cores and OpenBLAS sgemm; results do not
** depend on the thread count beyond float summation order.
*/
#ifndef CPU_NN_H
#define CPU_NN_H
#include <stdint.h>
#include <stddef.h>
#include "fdm_kernels_nn.h"

/* the kernel table's conv geometry (output size computed by the caller) */
typedef fdm_conv_params cpu_conv_params;

/* float32 copy of elements [first, first + n) of a contiguous float32,
** float16 or bfloat16 view (half weights of linear and conv) */
void cpu_weights_to_float(const fdm_kview *w, int64_t first, int64_t n, float *dst);
/* conv2d: x [N,C,H,W], w [K, C/groups, kh, kw], b [K] or NULL, y [N,K,OH,OW] */
size_t cpu_conv2d_work(const cpu_conv_params *p);
void cpu_conv2d_forward(const cpu_conv_params *p, const float *x, const float *w,
                        const float *b, float *y, float *work);
/* any of gx, gw, gb may be NULL (not needed) */
void cpu_conv2d_backward(const cpu_conv_params *p, const float *x, const float *w,
                         const float *gy, float *gx, float *gw, float *gb, float *work);

/* conv_transpose2d: x [N,C,H,W], w [C, K/groups, kh, kw] (PyTorch layout),
** b [K] or NULL, y [N,K,OH,OW] with OH = (H-1)*sh - 2*ph + dh*(kh-1) + oph + 1 */
size_t cpu_conv_transpose2d_work(const cpu_conv_params *p);
void cpu_conv_transpose2d_forward(const cpu_conv_params *p, const float *x, const float *w,
                                  const float *b, float *y, float *work);
void cpu_conv_transpose2d_backward(const cpu_conv_params *p, const float *x, const float *w,
                                   const float *gy, float *gx, float *gw, float *gb, float *work);

/* pooling: x [N*C planes of H x W] -> y [N*C planes of OH x OW].
** avg: count_include_pad = true (PyTorch default). max: idx stores the argmax
** position inside each input plane (for backward). */
void cpu_avg_pool2d_forward(int NC, int H, int W, int OH, int OW, int kh, int kw,
                            int sh, int sw, int ph, int pw, const float *x, float *y);
void cpu_avg_pool2d_backward(int NC, int H, int W, int OH, int OW, int kh, int kw,
                             int sh, int sw, int ph, int pw, const float *gy, float *gx);
void cpu_max_pool2d_forward(int NC, int H, int W, int OH, int OW, int kh, int kw,
                            int sh, int sw, int ph, int pw, const float *x, float *y, int64_t *idx);
void cpu_max_pool2d_backward(int NC, int H, int W, int OH, int OW,
                             const float *gy, const int64_t *idx, float *gx);

/* upsampling, PyTorch semantics. nearest: src = floor(dst * in/out).
** bilinear: align_corners as in torch.nn.functional.interpolate. */
void cpu_upsample_nearest_forward(int NC, int H, int W, int OH, int OW, const float *x, float *y);
void cpu_upsample_nearest_backward(int NC, int H, int W, int OH, int OW, const float *gy, float *gx);
void cpu_upsample_bilinear_forward(int NC, int H, int W, int OH, int OW, int align_corners,
                                   const float *x, float *y);
void cpu_upsample_bilinear_backward(int NC, int H, int W, int OH, int OW, int align_corners,
                                    const float *gy, float *gx);
/* PyTorch's scale_factor path: source indices from the step rh/rw (1/scale)
** rather than in/out. backward = 0: y = f(x); backward = 1: x = f^T(y)
** (x is then the gradient being written, y the incoming one) */
void cpu_resize_scaled(int NC, int H, int W, int OH, int OW, float rh, float rw, int bilinear,
                       int backward, float *x, float *y);

/* torchvision's separable gaussian blur of P planes H x W with reflect
** padding: wx [kx] along W, wy [ky] along H. backward = 0: y = blur(x);
** backward = 1: x = blur^T(y). Returns -1 (error set) when scratch runs out. */
int cpu_blur_planes(int64_t P, int H, int W, int kx, int ky, const float *wx, const float *wy,
                    int backward, float *x, float *y);

/* batch norm over x [N, C, S] (S = H*W, 1 for 1-D input).
** training: computes batch mean and biased var, writes save_mean / save_invstd [C],
** and updates running_mean/var (if non-NULL) with momentum using the UNBIASED var.
** eval: uses running stats (save_* are still filled: mean and 1/sqrt(var+eps)).
** weight/bias may be NULL (affine = false). */
void cpu_batch_norm_forward(int N, int C, int S, const float *x, const float *weight,
                            const float *bias, float *running_mean, float *running_var,
                            int training, float momentum, float eps, float *y,
                            float *save_mean, float *save_invstd);
/* gweight/gbias may be NULL. training selects batch-stat vs running-stat backward. */
void cpu_batch_norm_backward(int N, int C, int S, const float *x, const float *weight,
                             const float *save_mean, const float *save_invstd, int training,
                             const float *gy, float *gx, float *gweight, float *gbias);
/* fused batch norm + exact GELU (the UNet's Conv->BN->GELU): y = gelu(bn(x)); also
** writes the pre-activation bn(x) into pre (needed by backward). */
void cpu_batch_norm_gelu_forward(int N, int C, int S, const float *x, const float *weight,
                                 const float *bias, float *running_mean, float *running_var,
                                 int training, float momentum, float eps, float *pre, float *y,
                                 float *save_mean, float *save_invstd);

/* group norm: x [N, C, S], G groups, weight/bias [C] or NULL; mean/rstd [N*G] */
void cpu_group_norm_forward(int N, int C, int S, int G, const float *x, const float *weight,
                            const float *bias, float eps, float *y, float *mean, float *rstd);
/* y = act(group_norm(x) * scale + shift); scale, shift [N*C] or NULL (1, 0) */
void cpu_group_norm_act_forward(int N, int C, int S, int G, fdm_act act, const float *x, const float *weight,
                                const float *bias, const float *scale, const float *shift, float eps, float *y);
void cpu_group_norm_backward(int N, int C, int S, int G, const float *x, const float *weight,
                             const float *mean, const float *rstd, const float *gy,
                             float *gx, float *gweight, float *gbias);
/* layer norm over the last D elements of M rows; weight/bias [D] or NULL */
void cpu_layer_norm_forward(int M, int D, const float *x, const float *weight,
                            const float *bias, float eps, float *y, float *mean, float *rstd);
void cpu_layer_norm_backward(int M, int D, const float *x, const float *weight,
                             const float *mean, const float *rstd, const float *gy,
                             float *gx, float *gweight, float *gbias);

/* softmax over the middle axis of [outer, D, inner] */
void cpu_softmax_forward(int64_t outer, int64_t D, int64_t inner, int log, const float *x, float *y);
/* gx from y (the forward output) and gy */
void cpu_softmax_backward(int64_t outer, int64_t D, int64_t inner, int log, const float *y,
                          const float *gy, float *gx);

/* exact-erf GELU and its derivative, vectorisable */
void cpu_gelu_forward(int64_t n, const float *x, float *y);
void cpu_gelu_backward(int64_t n, const float *x, const float *gy, float *gx);
/* y = act(y) in place over n elements, on the calling thread (for use inside parallel loops) */
void cpu_act_inplace(fdm_act act, int64_t n, float *y);

#endif
