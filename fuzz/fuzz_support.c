/* fuzz_support.c: the two error functions of the runtime (fdm_error.c),
** so the fuzz targets link only the parsers. */
#include <stdarg.h>
#include <stdio.h>
#include "fdm.h"

static _Thread_local char err[512];

int fdm_seterror(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, sizeof err, fmt, ap);
  va_end(ap);
  return -1;
}

const char *fdm_lasterror(void) { return err; }
