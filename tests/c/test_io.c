/* test_io.c: the file formats at the C level (no Lua, no tensors):
** PNG, JPEG, safetensors, IDX (+gzip), GIF, grids, plots, atomic writes, and
** regression inputs for the fuzz targets. */
#include <gif_lib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>
#include <zlib.h>
#include <math.h>
#include <cairo.h>
#include <jpeglib.h>
#include "fdm_io.h"

static int fails = 0, checks = 0;
#define CHECK(c) do { checks++; if (!(c)) { fails++; fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n", __FILE__, __LINE__, #c, fdm_lasterror()); } } while (0)

static char tmpdir[256];

static void test_png(void) {
  for (int c = 1; c <= 4; c++) {
    fdm_image im = {7, 5, c, malloc(7 * 5 * c)};
    for (int i = 0; i < 7 * 5 * c; i++) im.px[i] = (uint8_t)(i * 37);
    fdm_membuf b = {0};
    CHECK(fdm_png_encode(&im, &b) == 0);
    fdm_image out;
    CHECK(fdm_png_decode(b.data, b.len, FDM_PNG_MAX_PIXELS, &out) == 0);
    CHECK(out.w == 7 && out.h == 5 && out.c == (c == 2 ? 4 : c));
    if (c != 2) CHECK(memcmp(out.px, im.px, (size_t)7 * 5 * c) == 0);
    else CHECK(out.px[0] == im.px[0] && out.px[1] == im.px[0] && out.px[3] == im.px[1]);
    /* every truncation fails cleanly */
    for (size_t k = 0; k < b.len; k++) {
      fdm_image t;
      CHECK(fdm_png_decode(b.data, k, FDM_PNG_MAX_PIXELS, &t) != 0);
    }
    /* a flipped byte in IDAT is caught (CRC) */
    b.data[b.len - 16] ^= 0x55;
    fdm_image t;
    CHECK(fdm_png_decode(b.data, b.len, FDM_PNG_MAX_PIXELS, &t) != 0);
    fdm_membuf_free(&b); fdm_image_free(&out); free(im.px);
  }
  const char junk[] = "not a png at all";
  fdm_image t;
  CHECK(fdm_png_decode((const uint8_t *)junk, sizeof junk, FDM_PNG_MAX_PIXELS, &t) != 0);
  CHECK(strstr(fdm_lasterror(), "not a PNG") != NULL);
  /* file API + atomic writer */
  char path[512];
  snprintf(path, sizeof path, "%s/a.png", tmpdir);
  fdm_image im = {3, 2, 3, (uint8_t *)"abcdefghijklmnopqr"};
  CHECK(fdm_png_write(path, &im) == 0);
  fdm_image r;
  CHECK(fdm_png_read(path, &r) == 0 && r.w == 3 && r.h == 2 && r.c == 3 && memcmp(r.px, im.px, 18) == 0);
  fdm_image_free(&r);
  CHECK(fdm_png_read("/nonexistent/x.png", &r) != 0);
}

/* a w x h JPEG of `comps` components in colour space cs, made with libjpeg
** itself (the tests' CMYK file: cjpeg cannot write one) */
static unsigned char *make_jpeg(int w, int h, int comps, J_COLOR_SPACE cs, unsigned long *n) {
  struct jpeg_compress_struct ci;
  struct jpeg_error_mgr em;
  unsigned char *out = NULL;
  ci.err = jpeg_std_error(&em);
  jpeg_create_compress(&ci);
  jpeg_mem_dest(&ci, &out, n);
  ci.image_width = (JDIMENSION)w; ci.image_height = (JDIMENSION)h;
  ci.input_components = comps; ci.in_color_space = cs;
  jpeg_set_defaults(&ci);
  jpeg_start_compress(&ci, TRUE);
  unsigned char *row = malloc((size_t)w * comps);
  while (ci.next_scanline < ci.image_height) {
    for (int i = 0; i < w * comps; i++) row[i] = (unsigned char)(i * 7 + ci.next_scanline * 13);
    JSAMPROW r = row;
    jpeg_write_scanlines(&ci, &r, 1);
  }
  jpeg_finish_compress(&ci);
  jpeg_destroy_compress(&ci);
  free(row);
  return out;
}

static void test_jpeg(void) {
  unsigned long n;
  fdm_image im;
  unsigned char *rgb = make_jpeg(13, 9, 3, JCS_RGB, &n);
  CHECK(fdm_image_kind(rgb, n) == FDM_IMAGE_JPEG);
  CHECK(fdm_jpeg_decode(rgb, n, FDM_JPEG_MAX_PIXELS, &im) == 0 && im.w == 13 && im.h == 9 && im.c == 3);
  fdm_image_free(&im);
  /* the pixel limit is checked from the header, before decoding */
  CHECK(fdm_jpeg_decode(rgb, n, 100, &im) != 0 && strstr(fdm_lasterror(), "too large") != NULL);
  /* every truncation is an error (never exit(), never gray rows) */
  for (unsigned long k = 0; k + 2 < n; k++) {
    if (fdm_jpeg_decode(rgb, k, FDM_JPEG_MAX_PIXELS, &im) == 0) { CHECK(!"a truncated JPEG decoded"); fdm_image_free(&im); }
  }
  free(rgb);
  unsigned char *gray = make_jpeg(8, 8, 1, JCS_GRAYSCALE, &n);
  CHECK(fdm_jpeg_decode(gray, n, FDM_JPEG_MAX_PIXELS, &im) == 0 && im.c == 1);
  fdm_image_free(&im);
  free(gray);
  unsigned char *cmyk = make_jpeg(8, 8, 4, JCS_CMYK, &n);
  CHECK(fdm_jpeg_decode(cmyk, n, FDM_JPEG_MAX_PIXELS, &im) != 0 && strstr(fdm_lasterror(), "CMYK") != NULL);
  free(cmyk);
  static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };
  CHECK(fdm_image_kind(png_sig, 8) == FDM_IMAGE_PNG);
  CHECK(fdm_image_kind((const uint8_t *)"GIF89a", 6) == FDM_IMAGE_UNKNOWN);
  CHECK(fdm_jpeg_decode((const uint8_t *)"GIF89a", 6, FDM_JPEG_MAX_PIXELS, &im) != 0 && strstr(fdm_lasterror(), "not a JPEG") != NULL);
}

static size_t build_st(uint8_t *out, const char *json, const void *data, size_t dn) {
  uint64_t hl = strlen(json);
  memcpy(out, &hl, 8);
  memcpy(out + 8, json, hl);
  if (dn) memcpy(out + 8 + hl, data, dn);
  return 8 + hl + dn;
}

static int st_ok(const char *json, size_t dn) {
  static uint8_t buf[1 << 16], zeros[4096];
  size_t n = build_st(buf, json, zeros, dn);
  fdm_st_file f;
  int r = fdm_st_parse(buf, n, &f);
  if (r == 0) fdm_st_free(&f);
  return r == 0;
}

static void test_safetensors(void) {
  float a[6] = {1, 2, 3, 4, 5, 6};
  int64_t b[2] = {-7, 1LL << 40};
  uint8_t c[3] = {1, 0, 1};
  int64_t sa[2] = {2, 3}, sb[1] = {2}, sc[1] = {3};
  fdm_st_tensor ts[3] = {
    {"zeta", FDM_FLOAT32, 2, sa, a}, {"alpha", FDM_INT64, 1, sb, b}, {"m\"q", FDM_BOOL, 1, sc, c}};
  fdm_st_meta meta[1] = {{"format", "pt"}};
  char path[512];
  snprintf(path, sizeof path, "%s/t.safetensors", tmpdir);
  CHECK(fdm_st_write(path, 3, ts, 1, meta) == 0);
  uint8_t *buf; size_t n;
  CHECK(fdm_read_file(path, 1 << 20, &buf, &n) == 0);
  uint64_t hl; memcpy(&hl, buf, 8);
  CHECK(hl % 8 == 0);
  fdm_st_file f;
  CHECK(fdm_st_parse(buf, n, &f) == 0);
  CHECK(f.n == 3 && f.nmeta == 1 && strcmp(f.meta[0].value, "pt") == 0);
  /* sorted by dtype size desc, then name: alpha (8), zeta (4), m"q (1) */
  for (int i = 0; i < f.n; i++) {
    const fdm_st_entry *e = &f.e[i];
    if (strcmp(e->name, "zeta") == 0) {
      float o[6]; fdm_st_convert(&f, e, o);
      CHECK(e->dtype == FDM_ST_F32 && e->ndim == 2 && memcmp(o, a, sizeof a) == 0 && e->begin == 16);
    } else if (strcmp(e->name, "alpha") == 0) {
      int64_t o[2]; fdm_st_convert(&f, e, o);
      CHECK(e->dtype == FDM_ST_I64 && o[0] == -7 && o[1] == 1LL << 40 && e->begin == 0);
    } else {
      CHECK(strcmp(e->name, "m\"q") == 0 && e->dtype == FDM_ST_BOOL && e->begin == 40);
    }
  }
  fdm_st_free(&f);
  for (size_t k = 0; k < n; k++) {   /* every truncation fails */
    CHECK(fdm_st_parse(buf, k, &f) != 0);
  }
  free(buf);
  /* conversions of the other dtypes */
  {
    static uint8_t fb[256];
    double d[2] = {1.5, -2.25};
    size_t fn = build_st(fb, "{\"x\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", d, 16);
    CHECK(fdm_st_parse(fb, fn, &f) == 0);
    float o[2]; fdm_st_convert(&f, &f.e[0], o);
    CHECK(o[0] == 1.5f && o[1] == -2.25f);
    fdm_st_free(&f);
    int16_t s16[3] = {-3, 300, 7};
    fn = build_st(fb, "{\"x\":{\"dtype\":\"I16\",\"shape\":[3],\"data_offsets\":[0,6]}}", s16, 6);
    CHECK(fdm_st_parse(fb, fn, &f) == 0);
    int64_t q[3]; fdm_st_convert(&f, &f.e[0], q);
    CHECK(q[0] == -3 && q[1] == 300 && q[2] == 7);
    fdm_st_free(&f);
    uint8_t f8[2] = {0x38, 0xC0};  /* E4M3: 1.0, -2.0 */
    fn = build_st(fb, "{\"x\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", f8, 2);
    CHECK(fdm_st_parse(fb, fn, &f) == 0);
    fdm_st_convert(&f, &f.e[0], o);
    CHECK(o[0] == 1.0f && o[1] == -2.0f);
    fdm_st_free(&f);
  }
  /* header validation */
  CHECK(st_ok("{}", 0));
  CHECK(st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}  ", 1));
  CHECK(st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[0,0]},\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0));
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},}", 2));   /* trailing comma */
  CHECK(!st_ok("{\"a\":{\"dtype\":\"X9\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2));
  CHECK(strstr(fdm_lasterror(), "unknown dtype") != NULL);
  CHECK(!st_ok("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8));    /* size mismatch */
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 1));     /* beyond data */
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 3));
  CHECK(strstr(fdm_lasterror(), "overlap") != NULL);
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4));
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1));
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,0]}}", 0));
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1));
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", 1));
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1));
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1));
  CHECK(!st_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1));
  CHECK(!st_ok("{\"__metadata__\":{\"k\":1}}", 0));
  CHECK(!st_ok("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1));
  CHECK(!st_ok("{\"\\ud800\":{}}", 0));
  CHECK(!st_ok("{\"\xff\":{}}", 0));
  CHECK(!st_ok("{} x", 0));
  CHECK(!st_ok("{\"a\":01}", 0));
  CHECK(!st_ok("{\"__metadata__\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0));
  CHECK(strstr(fdm_lasterror(), "deep") != NULL);
  /* absurd header sizes */
  uint8_t hb[16] = {0};
  uint64_t big = 1ULL << 62; memcpy(hb, &big, 8); memcpy(hb + 8, "{}      ", 8);
  CHECK(fdm_st_parse(hb, 16, &f) != 0 && strstr(fdm_lasterror(), "absurd"));
  big = 9; memcpy(hb, &big, 8);
  CHECK(fdm_st_parse(hb, 16, &f) != 0 && strstr(fdm_lasterror(), "exceeds"));
  big = 0xFFFFFFFFFFFFFFFFULL; memcpy(hb, &big, 8);
  CHECK(fdm_st_parse(hb, 16, &f) != 0);
}

static size_t gz(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
  z_stream z; memset(&z, 0, sizeof z);
  deflateInit2(&z, 6, Z_DEFLATED, 16 + 15, 8, Z_DEFAULT_STRATEGY);
  z.next_in = (Bytef *)in; z.avail_in = (uInt)n; z.next_out = out; z.avail_out = (uInt)cap;
  deflate(&z, Z_FINISH);
  size_t r = z.total_out;
  deflateEnd(&z);
  return r;
}

static void test_idx(void) {
  uint8_t f[4 + 8 + 6] = {0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 250};
  fdm_idx_info info;
  CHECK(fdm_idx_parse(f, sizeof f, &info) == 0 && info.ndim == 2 && info.shape[0] == 2 && info.shape[1] == 3);
  uint8_t o[6]; fdm_idx_convert(&info, f, o);
  CHECK(o[5] == 250 && fdm_idx_target(info.type) == FDM_UINT8);
  for (size_t k = 0; k < sizeof f; k++) CHECK(fdm_idx_parse(f, k, &info) != 0);
  uint8_t more[sizeof f + 1]; memcpy(more, f, sizeof f); more[sizeof f] = 0;
  CHECK(fdm_idx_parse(more, sizeof more, &info) != 0);
  uint8_t i32[4 + 4 + 8] = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 1, 0};
  int64_t q[2];
  CHECK(fdm_idx_parse(i32, sizeof i32, &info) == 0);
  fdm_idx_convert(&info, i32, q);
  CHECK(q[0] == -2 && q[1] == 256);
  uint8_t f32[4 + 4 + 4] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0};
  float fv;
  CHECK(fdm_idx_parse(f32, sizeof f32, &info) == 0);
  fdm_idx_convert(&info, f32, &fv);
  CHECK(fv == 1.5f);
  uint8_t bad[8] = {0, 0, 0x07, 1, 0, 0, 0, 0};
  CHECK(fdm_idx_parse(bad, 8, &info) != 0);
  bad[2] = 0x08; bad[3] = 0;
  CHECK(fdm_idx_parse(bad, 4, &info) != 0);
  uint8_t huge[4 + 12] = {0, 0, 0x0E, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  CHECK(fdm_idx_parse(huge, sizeof huge, &info) != 0);
  /* gzip */
  uint8_t z[256], *u; size_t un;
  size_t zn = gz(f, sizeof f, z, sizeof z);
  CHECK(fdm_gunzip(z, zn, 1 << 20, &u, &un) == 0 && un == sizeof f && memcmp(u, f, un) == 0);
  free(u);
  CHECK(fdm_gunzip(z, zn, sizeof f, &u, &un) == 0 && un == sizeof f);   /* exactly the limit */
  free(u);
  CHECK(fdm_gunzip(z, zn, sizeof f - 1, &u, &un) != 0);
  for (size_t k = 0; k < zn; k++) CHECK(fdm_gunzip(z, k, 1 << 20, &u, &un) != 0);
  z[zn] = 'x';
  CHECK(fdm_gunzip(z, zn + 1, 1 << 20, &u, &un) != 0);
  size_t zn2 = gz(f, 7, z, sizeof z);
  zn2 += gz(f + 7, sizeof f - 7, z + zn2, sizeof z - zn2);
  CHECK(fdm_gunzip(z, zn2, 1 << 20, &u, &un) == 0 && un == sizeof f && memcmp(u, f, un) == 0);
  free(u);
  char path[512];
  snprintf(path, sizeof path, "%s/x.idx.gz", tmpdir);
  CHECK(fdm_write_file_atomic(path, z, zn2) == 0);
  CHECK(fdm_read_maybe_gz(path, 1 << 20, &u, &un) == 0 && un == sizeof f);
  free(u);
}

typedef struct { const uint8_t *p; size_t n, pos; } gifsrc;
static int gif_in(GifFileType *g, GifByteType *d, int n) {
  gifsrc *s = g->UserData;
  if ((size_t)n > s->n - s->pos) n = (int)(s->n - s->pos);
  memcpy(d, s->p + s->pos, (size_t)n); s->pos += (size_t)n;
  return n;
}

static void test_gif(void) {
  fdm_image fr[3];
  for (int i = 0; i < 3; i++) {
    fr[i].w = 6; fr[i].h = 4; fr[i].c = i == 2 ? 4 : 3;
    fr[i].px = malloc(6 * 4 * 4);
    for (int k = 0; k < 6 * 4 * fr[i].c; k++) fr[i].px[k] = (uint8_t)(k * 11 + i * 50);
  }
  fdm_membuf b = {0};
  CHECK(fdm_gif_encode(fr, 3, 80, 0, 2, &b) == 0);
  CHECK(b.len > 6 && memcmp(b.data, "GIF89a", 6) == 0);
  gifsrc s = {b.data, b.len, 0};
  int err;
  GifFileType *g = DGifOpen(&s, gif_in, &err);
  CHECK(g != NULL);
  if (g) {
    CHECK(DGifSlurp(g) == GIF_OK);
    CHECK(g->ImageCount == 3 && g->SWidth == 12 && g->SHeight == 8);
    GraphicsControlBlock gcb;
    CHECK(DGifSavedExtensionToGCB(g, 1, &gcb) == GIF_OK && gcb.DelayTime == 8);
    DGifCloseFile(g, &err);
  }
  fdm_membuf_free(&b);
  fr[1].w = 5;
  CHECK(fdm_gif_encode(fr, 3, 80, 0, 1, &b) != 0);
  fdm_membuf_free(&b);
  for (int i = 0; i < 3; i++) free(fr[i].px);
}

static void test_draw(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/grid.png", tmpdir);
  fdm_image ims[5];
  for (int i = 0; i < 5; i++) {
    ims[i].w = 8; ims[i].h = 8; ims[i].c = i % 2 ? 1 : 3;
    ims[i].px = malloc(8 * 8 * 3);
    memset(ims[i].px, i * 40, 8 * 8 * 3);
  }
  const char *rows[] = {"row one", "row \xff two"};
  const char *cols[] = {"a", "b", "c"};
  const char *caps[] = {"0", "1", "2", "3", "4"};
  fdm_grid_opts o = {3, 0, rows, 2, cols, 3, caps, 5, "title", NULL};
  CHECK(fdm_draw_grid(path, ims, 5, &o) == 0);
  fdm_image r;
  CHECK(fdm_png_read(path, &r) == 0 && r.c == 3 && r.w > 3 * 64 && r.h > 2 * 64);
  /* the first cell is at the top-left of the image area, black (value 0) */
  fdm_image_free(&r);
  fdm_grid_opts plain = {0};
  CHECK(fdm_draw_grid(path, ims, 5, &plain) == 0);
  CHECK(fdm_png_read(path, &r) == 0 && r.w == 4 + 3 * (64 + 4) && r.h == 4 + 2 * (64 + 4));
  if (r.px) CHECK(r.px[(4 * r.w + 4) * 3] == 0 && r.px[0] == 255);
  fdm_image_free(&r);
  for (int i = 0; i < 5; i++) free(ims[i].px);

  double y1[50], y2[50], x[50];
  for (int i = 0; i < 50; i++) { x[i] = i * 10; y1[i] = 3.0 / (i + 1); y2[i] = 0.5 * exp(-i / 10.0) + 1e-3; }
  y2[7] = NAN;
  fdm_plot_series s[3] = {{"loss", x, y1, 50}, {"val", NULL, y2, 50}, {NULL, NULL, y1, 1}};
  fdm_plot_opts po = {0, 0, 1, "Training", "step", "loss"};
  snprintf(path, sizeof path, "%s/plot.png", tmpdir);
  CHECK(fdm_plot_curves(path, s, 3, &po) == 0);
  CHECK(fdm_png_read(path, &r) == 0 && r.w == 800 && r.h == 500);
  fdm_image_free(&r);
  po.logy = 0; po.width = 300; po.height = 200;
  CHECK(fdm_plot_curves(path, s, 3, &po) == 0);
  CHECK(fdm_png_read(path, &r) == 0 && r.w == 300 && r.h == 200);
  fdm_image_free(&r);
  CHECK(fdm_plot_curves(path, s, 0, &po) == 0);   /* no data: empty axes */
  double flat[3] = {2, 2, 2}, neg[3] = {-1, -2, -3}, bigv[2] = {1e16, 1e16 + 4};
  fdm_plot_series f1 = {"flat", NULL, flat, 3}, f2 = {"neg", NULL, neg, 3}, f3 = {"big", NULL, bigv, 2};
  po.logy = 1;
  CHECK(fdm_plot_curves(path, &f1, 1, &po) == 0);
  CHECK(fdm_plot_curves(path, &f2, 1, &po) == 0);
  po.logy = 0;
  CHECK(fdm_plot_curves(path, &f3, 1, &po) == 0);
}

static void test_atomic(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/nodir/f.bin", tmpdir);
  CHECK(fdm_write_file_atomic(path, "x", 1) != 0);
  CHECK(strstr(fdm_lasterror(), "nodir") != NULL);
  snprintf(path, sizeof path, "%s/s.bin", tmpdir);
  fdm_atomic_file *f = fdm_atomic_open(path);
  CHECK(f != NULL);
  fprintf(fdm_atomic_stream(f), "hello %d", 42);
  CHECK(access(path, F_OK) != 0);   /* nothing visible before commit */
  CHECK(fdm_atomic_commit(f) == 0);
  uint8_t *b; size_t n;
  CHECK(fdm_read_file(path, 100, &b, &n) == 0 && n == 8 && memcmp(b, "hello 42", 8) == 0);
  free(b);
  f = fdm_atomic_open(path);
  fdm_atomic_write(f, "zzz", 3);
  fdm_atomic_abort(f);
  CHECK(fdm_read_file(path, 100, &b, &n) == 0 && n == 8);
  free(b);
  /* no temporaries left behind */
  DIR *d = opendir(tmpdir);
  struct dirent *e;
  int tmps = 0;
  while (d && (e = readdir(d))) tmps += strstr(e->d_name, ".tmp.") != NULL;
  if (d) closedir(d);
  CHECK(tmps == 0);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/fdm_test_io.XXXXXX");
  if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
  test_png();
  test_jpeg();
  test_safetensors();
  test_idx();
  test_gif();
  test_draw();
  test_atomic();
  cairo_debug_reset_static_data();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmpdir);
  printf("test_io: %d checks, %d failures\n", checks, fails);
  return fails != 0;
}
