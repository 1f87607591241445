/* winograd.h: F(2x2, 3x3) and F(4x4, 3x3) convolution used by conv.c for 3x3 stride-1
** convs. m is the output tile size (2 or 4) of every call. */
#ifndef CPU_WINOGRAD_H
#define CPU_WINOGRAD_H
#include <stddef.h>
#include "cpu_nn.h"

int cpu_winograd_ok(const cpu_conv_params *p);
/* the tile size for this conv (FDM_WINOGRAD_TILE=2|4 forces one) */
int cpu_winograd_tile(const cpu_conv_params *p);
/* whether this conv has enough tiles for Winograd to beat im2col (always, with a tile size forced) */
int cpu_winograd_worth(const cpu_conv_params *p);
/* tests: 2 or 4 forces that tile size from now on, 0 restores the automatic choice */
void cpu_winograd_force_tile(int m);
/* floats of the transformed weights U: (m+2)^2 * K * C */
size_t cpu_winograd_ufloats(int m, int K, int C);
/* floats of scratch: transformed weights (ufloats) followed by the per-thread slots */
size_t cpu_winograd_work(const cpu_conv_params *p);
/* U = G g G^T of every filter: w [K][C][3][3]; with transpose_flip, w is the
** forward weight [C][K][3][3] of the conv whose data gradient is wanted, and
** each filter is taken transposed and rotated by 180 degrees */
void cpu_winograd_weights(int m, int K, int C, const float *w, int transpose_flip, float *U);
/* y [N,K,OH,OW] = conv(x [N,C,H,W], weights U, pad ph/pw) + bias (NULL: none) */
void cpu_winograd_conv(int m, int N, int C, int H, int W, int K, int ph, int pw, int OH, int OW,
                       const float *x, const float *U, const float *bias, float *y, float *work);
/* gw [K,C,3,3] = the weight gradient of that conv from x and gy [N,K,OH,OW] (overwritten) */
void cpu_winograd_weight_grad(int m, int N, int C, int H, int W, int K, int ph, int pw, int OH, int OW,
                              const float *x, const float *gy, float *gw, float *work);
#endif
