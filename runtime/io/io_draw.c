/*
** io_draw.c: image grids and line plots drawn with cairo (toy text API,
** sans-serif font), written as PNG through the atomic writer.
*/
#include <cairo.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_io.h"

static cairo_status_t png_sink(void *closure, const unsigned char *d, unsigned int n) {
  return fdm_membuf_append(closure, d, n) == 0 ? CAIRO_STATUS_SUCCESS : CAIRO_STATUS_WRITE_ERROR;
}

static int save_surface(cairo_surface_t *s, const char *path) {
  fdm_membuf b = {0};
  cairo_surface_flush(s);
  cairo_status_t st = cairo_surface_write_to_png_stream(s, png_sink, &b);
  if (st != CAIRO_STATUS_SUCCESS) {
    fdm_membuf_free(&b);
    return fdm_seterror("cairo: %s", cairo_status_to_string(st));
  }
  int r = fdm_write_file_atomic(path, b.data, b.len);
  fdm_membuf_free(&b);
  return r;
}

/* cairo refuses invalid UTF-8: copy s with bad bytes replaced by '?' */
static char *clean_utf8(const char *s) {
  if (!s) s = "";
  size_t n = strlen(s);
  char *o = malloc(n + 1);
  if (!o) return NULL;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    int ok = len > 0 && i + (size_t)len <= n;
    unsigned cp = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (int k = 1; ok && k < len; k++) {
      if (((unsigned char)s[i + k] & 0xC0) != 0x80) ok = 0;
      else cp = cp << 6 | ((unsigned char)s[i + k] & 0x3Fu);
    }
    if (ok && len > 1) {
      unsigned min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
      if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) ok = 0;
    }
    if (ok && c < 0x20) { o[i] = ' '; i++; continue; }
    if (!ok) { o[i] = '?'; i++; continue; }
    memcpy(o + i, s + i, (size_t)len);
    i += (size_t)len;
  }
  o[n] = 0;
  return o;
}

static double text_width(cairo_t *cr, const char *s) {
  char *c = clean_utf8(s);
  if (!c) return 0;
  cairo_text_extents_t e;
  cairo_text_extents(cr, c, &e);
  free(c);
  return e.x_advance;
}

/* draws s with its baseline at y; align 0 left, 1 center, 2 right of x */
static void draw_text(cairo_t *cr, const char *s, double x, double y, int align) {
  char *c = clean_utf8(s);
  if (!c) return;
  cairo_text_extents_t e;
  cairo_text_extents(cr, c, &e);
  double dx = align == 1 ? -e.x_advance / 2 : align == 2 ? -e.x_advance : 0;
  cairo_move_to(cr, x + dx, y);
  cairo_show_text(cr, c);
  free(c);
}

static void set_font(cairo_t *cr, double size, int bold) {
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

/* ------------------------------------------------------------------ */
/* grids                                                                */

int fdm_draw_grid(const char *path, const fdm_image *ims, int n, const fdm_grid_opts *o) {
  if (n < 1) return fdm_seterror("no images");
  int mh = 0, mw = 0;
  for (int i = 0; i < n; i++) {
    if (ims[i].c < 1 || ims[i].c > 4 || ims[i].w < 1 || ims[i].h < 1)
      return fdm_seterror("image %d: bad size %dx%d with %d channels", i + 1, ims[i].w, ims[i].h, ims[i].c);
    if (ims[i].h > mh) mh = ims[i].h;
    if (ims[i].w > mw) mw = ims[i].w;
  }
  int ncol = o->nrow > 0 ? o->nrow : (int)ceil(sqrt((double)n));
  if (ncol > n) ncol = n;
  int nrows = (n + ncol - 1) / ncol;
  int big = mh > mw ? mh : mw;
  int scale = o->scale > 0 ? o->scale : (big >= 64 ? 1 : (64 + big - 1) / big);
  if ((int64_t)mw * scale > 8192 || (int64_t)mh * scale > 8192) return fdm_seterror("scaled cells exceed 8192 px");
  int cw = mw * scale, ch = mh * scale, pad = 4;
  double fs = 13;
  cairo_surface_t *probe = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
  cairo_t *pc = cairo_create(probe);
  set_font(pc, fs, 0);
  double left = 0;
  if (o->row_captions)
    for (int r = 0; r < nrows && r < o->nrow_captions; r++) {
      double tw = text_width(pc, o->row_captions[r]);
      if (tw > left) left = tw;
    }
  cairo_destroy(pc); cairo_surface_destroy(probe);
  if (left > 0) left = ceil(left) + 10;
  if (left > 400) left = 400;
  int title_h = o->title && *o->title ? (int)(fs * 1.6 + 8) : 0;
  int colcap_h = o->col_captions && o->ncol_captions > 0 ? (int)(fs + 8) : 0;
  int cap_h = o->captions && o->ncaptions > 0 ? (int)(fs + 6) : 0;
  int top = title_h + colcap_h;
  int64_t W64 = (int64_t)left + (int64_t)ncol * (cw + pad) + pad;
  int64_t H64 = (int64_t)top + (int64_t)nrows * (ch + pad + cap_h) + pad;
  if (W64 > 32767 || H64 > 32767)
    return fdm_seterror("grid of %lldx%lld pixels is too large (cairo limit 32767)", (long long)W64, (long long)H64);
  int W = (int)W64, H = (int)H64;
  cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
  if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(s);
    return fdm_seterror("cairo: cannot create a %dx%d surface", W, H);
  }
  cairo_surface_flush(s);
  uint8_t *data = cairo_image_surface_get_data(s);
  int stride = cairo_image_surface_get_stride(s);
  memset(data, 255, (size_t)stride * H);
  for (int i = 0; i < n; i++) {
    const fdm_image *im = &ims[i];
    int r = i / ncol, c = i % ncol;
    /* center images smaller than the cell */
    int x0 = (int)left + pad + c * (cw + pad) + (mw - im->w) * scale / 2;
    int y0 = top + pad + r * (ch + pad + cap_h) + (mh - im->h) * scale / 2;
    for (int y = 0; y < im->h * scale; y++) {
      uint32_t *dst = (uint32_t *)(data + (size_t)(y0 + y) * stride) + x0;
      const uint8_t *row = im->px + (size_t)(y / scale) * im->w * im->c;
      for (int x = 0; x < im->w * scale; x++) {
        const uint8_t *p = row + (size_t)(x / scale) * im->c;
        uint32_t R, G, B;
        switch (im->c) {
        case 1: R = G = B = p[0]; break;
        case 2: R = G = B = (p[0] * p[1] + 255 * (255 - p[1]) + 127) / 255; break;
        case 3: R = p[0]; G = p[1]; B = p[2]; break;
        default:
          R = (p[0] * p[3] + 255 * (255 - p[3]) + 127) / 255;
          G = (p[1] * p[3] + 255 * (255 - p[3]) + 127) / 255;
          B = (p[2] * p[3] + 255 * (255 - p[3]) + 127) / 255;
        }
        dst[x] = R << 16 | G << 8 | B;
      }
    }
  }
  cairo_surface_mark_dirty(s);
  cairo_t *cr = cairo_create(s);
  cairo_set_source_rgb(cr, 0, 0, 0);
  if (title_h) {
    set_font(cr, fs * 1.3, 1);
    draw_text(cr, o->title, W / 2.0, fs * 1.3 + 4, 1);
  }
  set_font(cr, fs, 0);
  if (colcap_h)
    for (int c = 0; c < ncol && c < o->ncol_captions; c++) {
      double cx = left + pad + c * (cw + pad) + cw / 2.0;
      cairo_save(cr);
      cairo_rectangle(cr, left + pad + c * (cw + pad), title_h, cw + pad, colcap_h);
      cairo_clip(cr);
      draw_text(cr, o->col_captions[c], cx, title_h + fs + 2, 1);
      cairo_restore(cr);
    }
  if (o->row_captions)
    for (int r = 0; r < nrows && r < o->nrow_captions; r++) {
      double cy = top + pad + r * (ch + pad + cap_h) + ch / 2.0 + fs / 3.0;
      draw_text(cr, o->row_captions[r], left - 6, cy, 2);
    }
  if (cap_h)
    for (int i = 0; i < n && i < o->ncaptions; i++) {
      int r = i / ncol, c = i % ncol;
      double x = left + pad + c * (cw + pad);
      double y = top + pad + r * (ch + pad + cap_h) + ch;
      cairo_save(cr);
      cairo_rectangle(cr, x, y, cw + pad, cap_h + pad);
      cairo_clip(cr);
      draw_text(cr, o->captions[i], x + cw / 2.0, y + fs + 1, 1);
      cairo_restore(cr);
    }
  cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  int ret = st == CAIRO_STATUS_SUCCESS ? save_surface(s, path) : fdm_seterror("cairo: %s", cairo_status_to_string(st));
  cairo_surface_destroy(s);
  return ret;
}

/* ------------------------------------------------------------------ */
/* plots                                                                */

static const double palette[10][3] = {
  {0.122, 0.467, 0.706}, {1.000, 0.498, 0.055}, {0.173, 0.627, 0.173}, {0.839, 0.153, 0.157},
  {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294}, {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498},
  {0.737, 0.741, 0.133}, {0.090, 0.745, 0.812},
};

static double nice_step(double range, int target) {
  double raw = range / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static void fmt_num(char *b, size_t n, double v, double step) {
  if (fabs(v) < step * 1e-9) v = 0;
  double a = fabs(v);
  if (a != 0 && (a >= 1e5 || a < 1e-3)) snprintf(b, n, "%.3g", v);
  else {
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (dec > 6) dec = 6;
    snprintf(b, n, "%.*f", dec, v);
  }
}

int fdm_plot_curves(const char *path, const fdm_plot_series *sr, int ns, const fdm_plot_opts *o) {
  int W = o->width > 0 ? o->width : 800, H = o->height > 0 ? o->height : 500;
  if (W < 100 || H < 80 || W > 16384 || H > 16384) return fdm_seterror("bad plot size %dx%d", W, H);
  int logy = o->logy;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY, ypos = INFINITY;
  for (int k = 0; k < ns; k++)
    for (int i = 0; i < sr[k].n; i++) {
      double x = sr[k].x ? sr[k].x[i] : i + 1, y = sr[k].y[i];
      if (!isfinite(x) || !isfinite(y)) continue;
      if (x < xmin) xmin = x;
      if (x > xmax) xmax = x;
      if (y < ymin) ymin = y;
      if (y > ymax) ymax = y;
      if (y > 0 && y < ypos) ypos = y;
    }
  int empty = !(xmin <= xmax);
  if (empty) { xmin = 0; xmax = 1; ymin = 0; ymax = 1; }
  if (logy && !(ypos < INFINITY)) logy = 0;   /* nothing positive: linear */
  if (logy) ymin = ypos;
  if (xmin == xmax) { xmin -= 0.5; xmax += 0.5; }
  /* y range: decades for log, padded nice bounds for linear */
  double ylo, yhi, ystep = 1, xstep;
  if (logy) {
    ylo = floor(log10(ymin)); yhi = ceil(log10(ymax));
    if (yhi <= ylo) yhi = ylo + 1;
  } else {
    if (ymin == ymax) { double d = fabs(ymin) > 0 ? fabs(ymin) * 0.1 : 0.5; ymin -= d; ymax += d; }
    ystep = nice_step(ymax - ymin, 6);
    ylo = floor(ymin / ystep) * ystep; yhi = ceil(ymax / ystep) * ystep;
  }
  xstep = nice_step(xmax - xmin, 8);
  if (!isfinite(xstep) || !isfinite(ystep) || xstep <= 0 || ystep <= 0 || !isfinite(xmax - xmin) ||
      (!logy && !isfinite(yhi - ylo)))
    return fdm_seterror("plot_curves: data range too large to plot");

  cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
  cairo_t *cr = cairo_create(s);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  double fs = 12;
  double ml = 70, mr = 20, mt = o->title && *o->title ? 40 : 20, mb = o->xlabel && *o->xlabel ? 55 : 40;
  if (o->ylabel && *o->ylabel) ml += 18;
  double px0 = ml, px1 = W - mr, py0 = H - mb, py1 = mt;  /* plot box: y grows up */
#define MAPX(x) (px0 + ((x) - xmin) / (xmax - xmin) * (px1 - px0))
#define MAPY(y) (logy ? py0 + (log10(y) - ylo) / (yhi - ylo) * (py1 - py0) \
                      : py0 + ((y) - ylo) / (yhi - ylo) * (py1 - py0))
  char buf[64];
  set_font(cr, fs, 0);
  cairo_set_line_width(cr, 1);
  /* y grid and tick labels */
  if (logy) {
    int nd = (int)(yhi - ylo), every = nd > 10 ? (nd + 9) / 10 : 1;
    for (int d = (int)ylo; d <= (int)yhi; d++) {
      double py = py0 + (d - ylo) / (yhi - ylo) * (py1 - py0);
      if ((d - (int)ylo) % every == 0) {
        cairo_set_source_rgb(cr, 0.85, 0.85, 0.85);
        cairo_move_to(cr, px0, py); cairo_line_to(cr, px1, py); cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        snprintf(buf, sizeof buf, "1e%d", d);
        if (d >= -3 && d <= 4) snprintf(buf, sizeof buf, "%g", pow(10, d));
        draw_text(cr, buf, px0 - 6, py + fs / 3, 2);
      }
      if (nd <= 6 && d < (int)yhi)
        for (int m = 2; m <= 9; m++) {   /* minor ticks */
          double my = py0 + (d + log10(m) - ylo) / (yhi - ylo) * (py1 - py0);
          cairo_set_source_rgb(cr, 0.94, 0.94, 0.94);
          cairo_move_to(cr, px0, my); cairo_line_to(cr, px1, my); cairo_stroke(cr);
          cairo_set_source_rgb(cr, 0, 0, 0);
          cairo_move_to(cr, px0 - 3, my); cairo_line_to(cr, px0, my); cairo_stroke(cr);
        }
    }
  } else {
    int nt = (int)fmin(100, round((yhi - ylo) / ystep));
    for (int t = 0; t <= nt; t++) {
      double v = ylo + t * ystep;
      double py = MAPY(v);
      cairo_set_source_rgb(cr, 0.85, 0.85, 0.85);
      cairo_move_to(cr, px0, py); cairo_line_to(cr, px1, py); cairo_stroke(cr);
      cairo_set_source_rgb(cr, 0, 0, 0);
      fmt_num(buf, sizeof buf, v, ystep);
      draw_text(cr, buf, px0 - 6, py + fs / 3, 2);
    }
  }
  /* x ticks */
  double x0t = ceil(xmin / xstep) * xstep;
  int nxt = (int)fmin(100, floor((xmax - x0t) / xstep + 1e-6));
  for (int t = 0; t <= nxt; t++) {
    double v = x0t + t * xstep;
    double px = MAPX(v);
    cairo_set_source_rgb(cr, 0.85, 0.85, 0.85);
    cairo_move_to(cr, px, py0); cairo_line_to(cr, px, py1); cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, px, py0); cairo_line_to(cr, px, py0 + 4); cairo_stroke(cr);
    fmt_num(buf, sizeof buf, v, xstep);
    draw_text(cr, buf, px, py0 + fs + 6, 1);
  }
  /* axes box */
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_rectangle(cr, px0, py1, px1 - px0, py0 - py1);
  cairo_stroke(cr);
  /* series, clipped to the plot box */
  cairo_save(cr);
  cairo_rectangle(cr, px0, py1, px1 - px0, py0 - py1);
  cairo_clip(cr);
  cairo_set_line_width(cr, 1.6);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (int k = 0; k < ns; k++) {
    const double *c = palette[k % 10];
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    int pen = 0, npts = 0;
    double lx = 0, ly = 0;
    for (int i = 0; i < sr[k].n; i++) {
      double x = sr[k].x ? sr[k].x[i] : i + 1, y = sr[k].y[i];
      if (!isfinite(x) || !isfinite(y) || (logy && y <= 0)) { pen = 0; continue; }
      lx = MAPX(x); ly = MAPY(y);
      if (pen) cairo_line_to(cr, lx, ly); else cairo_move_to(cr, lx, ly);
      pen = 1; npts++;
    }
    cairo_stroke(cr);
    if (npts == 1) { cairo_arc(cr, lx, ly, 3, 0, 2 * M_PI); cairo_fill(cr); }
  }
  cairo_restore(cr);
#undef MAPX
#undef MAPY
  /* labels */
  cairo_set_source_rgb(cr, 0, 0, 0);
  if (o->title && *o->title) { set_font(cr, 15, 1); draw_text(cr, o->title, (px0 + px1) / 2, 26, 1); }
  set_font(cr, 13, 0);
  if (o->xlabel && *o->xlabel) draw_text(cr, o->xlabel, (px0 + px1) / 2, H - 12, 1);
  if (o->ylabel && *o->ylabel) {
    cairo_save(cr);
    cairo_translate(cr, 18, (py0 + py1) / 2);
    cairo_rotate(cr, -M_PI / 2);
    draw_text(cr, o->ylabel, 0, 0, 1);
    cairo_restore(cr);
  }
  /* legend (top right inside the box) */
  int named = 0;
  double lw = 0;
  set_font(cr, fs, 0);
  for (int k = 0; k < ns; k++)
    if (sr[k].name && *sr[k].name) {
      named++;
      double tw = text_width(cr, sr[k].name);
      if (tw > lw) lw = tw;
    }
  if (named) {
    double bw = lw + 42, bh = named * (fs + 6) + 8, bx = px1 - bw - 8, by = py1 + 8;
    cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
    cairo_rectangle(cr, bx, by, bw, bh);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
    cairo_set_line_width(cr, 1);
    cairo_stroke(cr);
    int row = 0;
    for (int k = 0; k < ns; k++) {
      if (!sr[k].name || !*sr[k].name) continue;
      double y = by + 4 + row * (fs + 6) + (fs + 6) / 2;
      const double *c = palette[k % 10];
      cairo_set_source_rgb(cr, c[0], c[1], c[2]);
      cairo_set_line_width(cr, 2);
      cairo_move_to(cr, bx + 6, y); cairo_line_to(cr, bx + 30, y); cairo_stroke(cr);
      cairo_set_source_rgb(cr, 0, 0, 0);
      draw_text(cr, sr[k].name, bx + 36, y + fs / 3, 0);
      row++;
    }
  }
  cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  int ret = st == CAIRO_STATUS_SUCCESS ? save_surface(s, path) : fdm_seterror("cairo: %s", cairo_status_to_string(st));
  cairo_surface_destroy(s);
  return ret;
}
