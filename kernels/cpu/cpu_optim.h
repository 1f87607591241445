/* cpu_optim.h: fused optimizer updates (one pass over each parameter). */
#ifndef CPU_OPTIM_H
#define CPU_OPTIM_H
#include <stdint.h>
#include "fdm_kernels.h"   /* fdm_adam_params */

typedef fdm_adam_params cpu_adam_params;

/* Adam/AdamW as torch.optim (1.13, single-tensor path), elementwise:
** p, m, v updated in place; vmax non-NULL selects AMSGrad. */
void cpu_adam_step(int64_t n, const cpu_adam_params *a, float *p, const float *g, float *m,
                   float *v, float *vmax);
#endif
