/* convt2.h: ConvTranspose2d kernel 4, stride 2, padding 1 (the UNets' UpConv)
** as four stride-1 2x2 convolutions, one per output phase, each through
** Winograd F(2x2, 2x2) (convt2.c). Used by conv.c where cpu_convt2_use says so. */
#ifndef CPU_CONVT2_H
#define CPU_CONVT2_H
#include <stddef.h>
#include "cpu_nn.h"

/* the shape qualifies: k4 s2 p1, dilation 1, groups 1, output exactly 2H x 2W */
int cpu_convt2_ok(const cpu_conv_params *p);
/* which pass takes the sub-pixel path: qualifies, and measured faster there
** (or forced). what: 0 forward, 1 data gradient, 2 weight gradient */
int cpu_convt2_use(const cpu_conv_params *p, int what);
/* tests: 1 forces the sub-pixel path wherever it qualifies, 0 forbids it,
** -1 restores the automatic choice (FDM_CONVT2=0|1 in the environment forces too) */
void cpu_convt2_force(int mode);
/* floats of scratch for any of the three passes */
size_t cpu_convt2_work(const cpu_conv_params *p);
/* y [N,K,2H,2W] = conv_transpose2d(x [N,C,H,W], w [C,K,4,4]) + b (NULL: none) */
void cpu_convt2_forward(const cpu_conv_params *p, const float *x, const float *w, const float *b,
                        float *y, float *work);
/* gx [N,C,H,W] from gy [N,K,2H,2W] (overwritten) */
void cpu_convt2_data_grad(const cpu_conv_params *p, const float *w, const float *gy, float *gx,
                          float *work);
/* gw [C,K,4,4] from x and gy (overwritten) */
void cpu_convt2_weight_grad(const cpu_conv_params *p, const float *x, const float *gy, float *gw,
                            float *work);
#endif
