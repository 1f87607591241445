/*
** fdm_profile.h: per-kernel timing (fdm.profile in Lua). While it is on,
** every kernel call made through FDM_KERNEL waits for its device before and
** after the call and adds the wall time to its (op, kernel) row: what each
** kernel costs including its launch, as with CUDA_LAUNCH_BLOCKING=1, so the
** sum is larger than an unprofiled run's time. Calls made while a graph is
** being captured are counted but not timed (a capture may not wait).
*/
#ifndef FDM_PROFILE_H
#define FDM_PROFILE_H
#include "fdm.h"

extern int fdm_profile_on;

typedef struct fdm_profile_row {
  const char *op, *kernel;
  fdm_device dev;
  uint64_t calls;
  double seconds;
} fdm_profile_row;

/* monotonic wall clock in seconds: the profile's, and fdm.time's */
double fdm_clock(void);

/* starts (clearing the rows) or stops profiling */
void fdm_profile_enable(int on);
/* the rows so far, sorted by time, most first; *n their count */
const fdm_profile_row *fdm_profile_rows(int *n);

/* used by FDM_KERNEL: begin waits for dev and starts the clock; end waits
** again, adds the time to (op, kernel) and returns rc */
void fdm_profile_begin(fdm_device dev);
int fdm_profile_end(fdm_device dev, const char *op, const char *kernel, int rc);
#endif
