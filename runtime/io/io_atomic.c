/*
** io_atomic.c: atomic file writes (temp file in the same directory, fsync,
** rename, fsync of the directory), whole-file reads and memory buffers.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fdm_io.h"

int fdm_membuf_append(fdm_membuf *b, const void *p, size_t n) {
  if (n > SIZE_MAX - b->len) return fdm_seterror("out of memory");
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) {
      if (cap > SIZE_MAX / 2) { cap = b->len + n; break; }
      cap *= 2;
    }
    uint8_t *d = realloc(b->data, cap);
    if (!d) return fdm_seterror("out of memory (%zu bytes)", cap);
    b->data = d; b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void fdm_membuf_free(fdm_membuf *b) {
  free(b->data);
  b->data = NULL; b->len = b->cap = 0;
}

struct fdm_atomic_file {
  FILE *fp;
  char *path, *tmp;
};

fdm_atomic_file *fdm_atomic_open(const char *path) {
  if (!path || !*path) { fdm_seterror("empty file name"); return NULL; }
  fdm_atomic_file *f = calloc(1, sizeof *f);
  size_t n = strlen(path);
  if (f) { f->path = strdup(path); f->tmp = malloc(n + 16); }
  if (!f || !f->path || !f->tmp) {
    if (f) { free(f->path); free(f->tmp); free(f); }
    fdm_seterror("out of memory");
    return NULL;
  }
  snprintf(f->tmp, n + 16, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(f->tmp);
  if (fd < 0) {
    fdm_seterror("cannot create a temporary file next to '%s': %s", path, strerror(errno));
    free(f->path); free(f->tmp); free(f);
    return NULL;
  }
  /* mkstemp creates 0600; give the file the usual permissions */
  mode_t um = umask(022); umask(um);
  (void)fchmod(fd, 0666 & ~um);
  f->fp = fdopen(fd, "wb");
  if (!f->fp) {
    fdm_seterror("cannot open '%s': %s", f->tmp, strerror(errno));
    close(fd); unlink(f->tmp);
    free(f->path); free(f->tmp); free(f);
    return NULL;
  }
  return f;
}

FILE *fdm_atomic_stream(fdm_atomic_file *f) { return f->fp; }

int fdm_atomic_write(fdm_atomic_file *f, const void *buf, size_t n) {
  if (n && fwrite(buf, 1, n, f->fp) != n)
    return fdm_seterror("cannot write '%s': %s", f->path, strerror(errno));
  return 0;
}

void fdm_atomic_abort(fdm_atomic_file *f) {
  if (!f) return;
  if (f->fp) fclose(f->fp);
  unlink(f->tmp);
  free(f->path); free(f->tmp); free(f);
}

static void fsync_dir(const char *path) {
  char *d = strdup(path);
  if (!d) return;
  char *slash = strrchr(d, '/');
  const char *dir = ".";
  if (slash == d) dir = "/";
  else if (slash) { *slash = 0; dir = d; }
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) { (void)fsync(fd); close(fd); }
  free(d);
}

int fdm_atomic_commit(fdm_atomic_file *f) {
  int err = 0;
  if (fflush(f->fp) != 0 || ferror(f->fp)) err = errno ? errno : EIO;
  if (!err && fsync(fileno(f->fp)) != 0 && errno != EINVAL) err = errno;
  if (fclose(f->fp) != 0 && !err) err = errno ? errno : EIO;
  f->fp = NULL;
  if (err) {
    fdm_seterror("cannot write '%s': %s", f->path, strerror(err));
    fdm_atomic_abort(f);
    return -1;
  }
  if (rename(f->tmp, f->path) != 0) {
    fdm_seterror("cannot rename the temporary file to '%s': %s", f->path, strerror(errno));
    fdm_atomic_abort(f);
    return -1;
  }
  fsync_dir(f->path);
  free(f->path); free(f->tmp); free(f);
  return 0;
}

int fdm_write_file_atomic(const char *path, const void *buf, size_t n) {
  fdm_atomic_file *f = fdm_atomic_open(path);
  if (!f) return -1;
  if (fdm_atomic_write(f, buf, n) != 0) { fdm_atomic_abort(f); return -1; }
  return fdm_atomic_commit(f);
}

int fdm_read_file(const char *path, size_t max, uint8_t **buf, size_t *n) {
  *buf = NULL; *n = 0;
  FILE *fp = fopen(path, "rb");
  if (!fp) return fdm_seterror("cannot open: %s", strerror(errno));
  struct stat st;
  if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(fp);
    return fdm_seterror("not a regular file");
  }
  if ((uint64_t)st.st_size > (uint64_t)max) {
    fclose(fp);
    return fdm_seterror("file too large (%lld bytes, limit %zu)", (long long)st.st_size, max);
  }
  size_t sz = (size_t)st.st_size;
  uint8_t *d = malloc(sz ? sz : 1);
  if (!d) { fclose(fp); return fdm_seterror("out of memory (%zu bytes)", sz); }
  size_t got = fread(d, 1, sz, fp);
  int bad = ferror(fp);
  fclose(fp);
  if (bad || got != sz) { free(d); return fdm_seterror("read error"); }
  *buf = d; *n = sz;
  return 0;
}

void fdm_image_free(fdm_image *im) {
  if (!im) return;
  free(im->px);
  im->px = NULL; im->w = im->h = im->c = 0;
}

size_t fdm_mem_available(void) {
  FILE *fp = fopen("/proc/meminfo", "r");
  if (fp) {
    char line[128];
    unsigned long long kb;
    while (fgets(line, sizeof line, fp))
      if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { fclose(fp); return (size_t)kb * 1024; }
    fclose(fp);
  }
  long pages = sysconf(_SC_AVPHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
  if (pages > 0 && psz > 0) return (size_t)pages * (size_t)psz;
  return (size_t)1 << 32;   /* unknown: assume 4 GiB */
}

/* ---- decoding into an interleaved 8-bit image (PNG and JPEG share it) ---- */
typedef struct { fdm_image *im; } image_sink;

static int image_begin(void *ud, int w, int h, int c, size_t scratch) {
  (void)scratch;
  fdm_image *im = ((image_sink *)ud)->im;
  im->px = malloc((size_t)w * h * c);
  if (!im->px) return fdm_seterror("out of memory (%dx%d image)", w, h);
  im->w = w; im->h = h; im->c = c;
  return 0;
}

static void image_row(void *ud, int y, const uint8_t *row) {
  fdm_image *im = ((image_sink *)ud)->im;
  memcpy(im->px + (size_t)y * im->w * im->c, row, (size_t)im->w * im->c);
}

int fdm_image_decode(fdm_image_decoder decode_to, const uint8_t *buf, size_t n, size_t max_pixels,
                     fdm_image *out) {
  memset(out, 0, sizeof *out);
  image_sink is = { out };
  fdm_png_sink sink = { image_begin, image_row, &is };
  if (decode_to(buf, n, max_pixels, &sink) != 0) { fdm_image_free(out); return -1; }
  return 0;
}

int fdm_image_read(const char *path, fdm_image_decoder decode_to, size_t max_pixels, fdm_image *out) {
  uint8_t *buf; size_t n;
  memset(out, 0, sizeof *out);
  if (fdm_read_file(path, (size_t)1 << 31, &buf, &n) != 0) return -1;
  int r = fdm_image_decode(decode_to, buf, n, max_pixels, out);
  free(buf);
  return r;
}
