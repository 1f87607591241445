/*
** profile.c: per-kernel timing rows (fdm_profile.h). Rows are keyed by the
** (op, kernel, device) triple; op and kernel are string literals of the call
** sites, compared by content.
*/
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "fdm_profile.h"
#include "fdm_backend.h"

#define MAX_ROWS 512

int fdm_profile_on = 0;
static fdm_profile_row rows[MAX_ROWS];
static int nrows = 0;
static double t_begin;
static int timing;          /* whether the pending call is timed (not inside a capture) */

double fdm_clock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void fdm_profile_enable(int on) {
  fdm_profile_on = on != 0;
  if (on) nrows = 0;
}

static int by_time(const void *a, const void *b) {
  double x = ((const fdm_profile_row *)a)->seconds, y = ((const fdm_profile_row *)b)->seconds;
  return x < y ? 1 : x > y ? -1 : 0;
}

const fdm_profile_row *fdm_profile_rows(int *n) {
  qsort(rows, (size_t)nrows, sizeof rows[0], by_time);
  *n = nrows;
  return rows;
}

static void wait_for(fdm_device dev) {
  const fdm_backend *be = fdm_backend_get(dev);
  if (be) (void)be->synchronize();
}

void fdm_profile_begin(fdm_device dev) {
  timing = !fdm_backend_capturing(dev);
  if (timing) wait_for(dev);
  t_begin = fdm_clock();
}

int fdm_profile_end(fdm_device dev, const char *op, const char *kernel, int rc) {
  double dt = 0;
  if (timing) {
    wait_for(dev);
    dt = fdm_clock() - t_begin;
  }
  fdm_profile_row *r = NULL;
  for (int i = 0; i < nrows && !r; i++)
    if (rows[i].dev == dev && strcmp(rows[i].kernel, kernel) == 0 && strcmp(rows[i].op, op) == 0) r = &rows[i];
  if (!r && nrows < MAX_ROWS) {
    r = &rows[nrows++];
    *r = (fdm_profile_row){op, kernel, dev, 0, 0};
  }
  if (r) {
    r->calls++;
    r->seconds += dt;
  }
  return rc;
}
