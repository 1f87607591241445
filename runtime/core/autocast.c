/* autocast.c: the autocast state (see fdm.h); the rounding it asks for is
** dtype.c's fdm_round_to (the base layer, which the kernels may call).
** Thread-local like grad mode, so a thread's region never leaks into another. */
#include "fdm.h"

static _Thread_local fdm_dtype autocast = FDM_FLOAT32;

fdm_dtype fdm_autocast_dtype(void) { return autocast; }

int fdm_set_autocast(fdm_dtype d, fdm_dtype *prev) {
  if (d != FDM_FLOAT32 && d != FDM_BFLOAT16 && d != FDM_FLOAT16)
    return fdm_seterror("autocast: dtype must be bfloat16 or float16 (float32 turns it off), got %s",
                        fdm_dtype_name(d));
  if (prev) *prev = autocast;
  autocast = d;
  return 0;
}
