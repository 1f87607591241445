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

/* Width of the ink and advance of s: what a line needs so that nothing of
** it falls outside its box (bold glyphs may overhang their advance). */
static double line_width(cairo_t *cr, const char *s) {
  char *c = clean_utf8(s);
  if (!c) return 0;
  cairo_text_extents_t e;
  cairo_text_extents(cr, c, &e);
  free(c);
  double right = e.x_advance > e.x_bearing + e.width ? e.x_advance : e.x_bearing + e.width;
  double left = e.x_bearing < 0 ? e.x_bearing : 0;
  return right - left;
}

/* a wrapped text: its lines (each malloc'ed) */
typedef struct { char **line; int n; } wrapped;

static void wrapped_free(wrapped *w) {
  for (int i = 0; i < w->n; i++) free(w->line[i]);
  free(w->line);
  w->line = NULL; w->n = 0;
}

static int wrapped_push(wrapped *w, const char *s, size_t len) {
  char **nl = realloc(w->line, (size_t)(w->n + 1) * sizeof *nl);
  if (!nl) return -1;
  w->line = nl;
  char *c = malloc(len + 1);
  if (!c) return -1;
  memcpy(c, s, len);
  c[len] = 0;
  w->line[w->n++] = c;
  return 0;
}

static size_t utf8_len(unsigned char c) {
  return c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
}

/* Breaks s into lines no wider than maxw: at spaces, and inside a word only
** when the word alone is wider (at a character boundary). At least one line. */
static int wrap_text(cairo_t *cr, const char *s, double maxw, wrapped *out) {
  out->line = NULL; out->n = 0;
  char *c = clean_utf8(s);
  if (!c) return -1;
  size_t n = strlen(c), i = 0;
  char *cur = malloc(n + 1);   /* the line being built */
  if (!cur) { free(c); return -1; }
  size_t cl = 0;
  int rc = 0;
  while (i < n && rc == 0) {
    while (i < n && c[i] == ' ') i++;
    size_t w0 = i;
    while (i < n && c[i] != ' ') i++;
    if (i == w0) break;
    /* try the line plus this word */
    size_t keep = cl;
    if (cl) cur[cl++] = ' ';
    memcpy(cur + cl, c + w0, i - w0);
    cl += i - w0;
    cur[cl] = 0;
    if (line_width(cr, cur) <= maxw) continue;
    cl = keep;   /* does not fit: the line ends before the word */
    cur[cl] = 0;
    if (cl) { rc = wrapped_push(out, cur, cl); cl = 0; }
    /* the word on a new line, split by characters while it is too wide */
    size_t p = w0;
    while (p < i && rc == 0) {
      size_t take = 0, best = 0;
      while (p + take < i) {
        size_t step = utf8_len((unsigned char)c[p + take]);
        memcpy(cur, c + p, take + step);
        cur[take + step] = 0;
        if (line_width(cr, cur) > maxw && take > 0) break;
        take += step;
        best = take;
      }
      if (p + best >= i) {   /* the rest of the word starts the next line */
        memcpy(cur, c + p, best);
        cl = best;
        cur[cl] = 0;
      } else {
        rc = wrapped_push(out, c + p, best);
      }
      p += best;
    }
  }
  if (rc == 0 && (cl || out->n == 0)) rc = wrapped_push(out, cur, cl);
  free(cur);
  free(c);
  if (rc != 0) wrapped_free(out);
  return rc;
}

static int layout_add_text(fdm_grid_layout *l, int kind, int index, const char *text,
                           double x, double y, double w, double h) {
  if (!l) return 0;
  fdm_grid_text *nt = realloc(l->texts, (size_t)(l->ntexts + 1) * sizeof *nt);
  if (!nt) return -1;
  l->texts = nt;
  fdm_grid_text *t = &l->texts[l->ntexts];
  t->text = malloc(strlen(text) + 1);
  if (!t->text) return -1;
  strcpy(t->text, text);
  t->kind = kind; t->index = index; t->x = x; t->y = y; t->w = w; t->h = h;
  l->ntexts++;
  return 0;
}

void fdm_grid_layout_free(fdm_grid_layout *l) {
  if (!l) return;
  for (int i = 0; i < l->ntexts; i++) free(l->texts[i].text);
  free(l->texts);
  free(l->cells);
  memset(l, 0, sizeof *l);
}

/* Draws one line: align 0 left of x, 1 centered on x, 2 right of x; baseline
** at y. Records its ink extents in the layout. */
static int draw_line(cairo_t *cr, fdm_grid_layout *l, int kind, int index, const char *s,
                     double x, double y, int align) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s, &e);
  double w = line_width(cr, s), left = e.x_bearing < 0 ? e.x_bearing : 0;
  double x0 = align == 1 ? x - w / 2 : align == 2 ? x - w : x;   /* left edge of the box */
  cairo_move_to(cr, x0 - left, y);
  cairo_show_text(cr, s);
  if (e.width <= 0 || e.height <= 0) return 0;   /* spaces only: nothing drawn */
  return layout_add_text(l, kind, index, s, x0 - left + e.x_bearing, y + e.y_bearing, e.width, e.height);
}

/* wraps every string of list[0..n-1] to maxw; returns the largest number of lines */
static int wrap_all(cairo_t *cr, const char *const *list, int n, double maxw, wrapped *out) {
  int most = 0;
  for (int i = 0; i < n; i++) {
    if (wrap_text(cr, list[i], maxw, &out[i]) != 0) {
      for (int k = 0; k < i; k++) wrapped_free(&out[k]);
      return -1;
    }
    if (out[i].n > most) most = out[i].n;
  }
  return most;
}

/* the widest of the strings (0 when none) */
static double widest(cairo_t *cr, const char *const *list, int n) {
  double w = 0;
  for (int i = 0; i < n; i++) {
    double t = line_width(cr, list[i]);
    if (t > w) w = t;
  }
  return w;
}

#define GRID_CAPTION_MAX 240.0  /* a column widens up to this for its captions; beyond, they wrap */
#define GRID_ROWCAP_MAX 300.0   /* row captions wrap beyond this */
#define GRID_TITLE_MAX 960.0    /* the canvas widens up to this for the title; beyond, it wraps */

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
  int cw = mw * scale, ch = mh * scale, pad = 4, margin = 6;
  double fs = 13, tfs = fs * 1.3;
  double lh = ceil(fs * 1.3), tlh = ceil(tfs * 1.25);   /* line heights */
  int ncap = o->captions ? (o->ncaptions < n ? o->ncaptions : n) : 0;
  int ncc = o->col_captions ? (o->ncol_captions < ncol ? o->ncol_captions : ncol) : 0;
  int nrc = o->row_captions ? (o->nrow_captions < nrows ? o->nrow_captions : nrows) : 0;
  const char *title = o->title && *o->title ? o->title : NULL;

  /* measure: column width, left margin for row captions, wrapped lines */
  wrapped *caps = calloc((size_t)(ncap + ncc + nrc + 1), sizeof *caps);
  if (!caps) return fdm_seterror("out of memory");
  wrapped *cols = caps + ncap, *rows = cols + ncc, *tl = rows + nrc;
  int ret = -1, ok = 1;
  cairo_surface_t *probe = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
  cairo_t *pc = cairo_create(probe);
  set_font(pc, fs, 0);
  double need = widest(pc, o->captions, ncap), needc = widest(pc, o->col_captions, ncc);
  if (needc > need) need = needc;
  double colw = cw;   /* the width given to each column's text and image */
  if (need + 4 > colw) colw = fmin(ceil(need + 4), fmax(cw, GRID_CAPTION_MAX));
  double rcw = fmin(ceil(widest(pc, o->row_captions, nrc)), GRID_ROWCAP_MAX);
  int cap_lines = ncap ? wrap_all(pc, o->captions, ncap, colw - 4, caps) : 0;
  int cc_lines = ncc && cap_lines >= 0 ? wrap_all(pc, o->col_captions, ncc, colw - 4, cols) : 0;
  int rc_lines = nrc && cap_lines >= 0 && cc_lines >= 0 ? wrap_all(pc, o->row_captions, nrc, rcw, rows) : 0;
  if (cap_lines < 0 || cc_lines < 0 || rc_lines < 0) ok = 0;
  double left = nrc && rcw > 0 ? rcw + 2 * margin : 0;
  double gw = left + ncol * (colw + pad) + pad;   /* the grid's width */
  double W = gw;
  int title_lines = 0;
  if (ok && title) {
    set_font(pc, tfs, 1);
    double tw = line_width(pc, title);
    if (tw + 2 * margin > W) W = fmax(gw, fmin(ceil(tw + 2 * margin), GRID_TITLE_MAX));
    title_lines = wrap_text(pc, title, W - 2 * margin, tl) == 0 ? tl->n : (ok = 0);
  }
  cairo_destroy(pc); cairo_surface_destroy(probe);
  if (!ok) { fdm_seterror("out of memory"); goto done; }
  double title_h = title_lines ? title_lines * tlh + 8 : 0;
  double colcap_h = cc_lines ? cc_lines * lh + 4 : 0;
  double cap_h = cap_lines ? cap_lines * lh + 2 : 0;
  double rowh = fmax(ch, rc_lines * lh);   /* row captions taller than the images stretch the row */
  double top = title_h + colcap_h, gx = floor((W - gw) / 2);
  int64_t W64 = (int64_t)ceil(W);
  int64_t H64 = (int64_t)ceil(top + nrows * (rowh + pad + cap_h) + pad);
  if (W64 > 32767 || H64 > 32767) {
    fdm_seterror("grid of %lldx%lld pixels is too large (cairo limit 32767)", (long long)W64, (long long)H64);
    goto done;
  }
  int Wi = (int)W64, Hi = (int)H64;
  cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, Wi, Hi);
  if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(s);
    fdm_seterror("cairo: cannot create a %dx%d surface", Wi, Hi);
    goto done;
  }
  fdm_grid_layout *L = o->layout;
  if (L) {
    memset(L, 0, sizeof *L);
    L->width = Wi; L->height = Hi;
    L->cells = calloc((size_t)n, sizeof *L->cells);
    if (!L->cells) { cairo_surface_destroy(s); fdm_seterror("out of memory"); goto done; }
    L->ncells = n;
  }
  cairo_surface_flush(s);
  uint8_t *data = cairo_image_surface_get_data(s);
  int stride = cairo_image_surface_get_stride(s);
  memset(data, 255, (size_t)stride * Hi);
  for (int i = 0; i < n; i++) {
    const fdm_image *im = &ims[i];
    int r = i / ncol, c = i % ncol;
    /* images centered in their column and row */
    int x0 = (int)(gx + left + pad + c * (colw + pad) + (colw - im->w * scale) / 2);
    int y0 = (int)(top + pad + r * (rowh + pad + cap_h) + (rowh - im->h * scale) / 2);
    if (L) { L->cells[i][0] = x0; L->cells[i][1] = y0; L->cells[i][2] = im->w * scale; L->cells[i][3] = im->h * scale; }
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
  int lerr = 0;
  if (title_lines) {
    set_font(cr, tfs, 1);
    for (int k = 0; k < tl->n; k++)
      lerr |= draw_line(cr, L, FDM_TEXT_TITLE, 0, tl->line[k], Wi / 2.0, 4 + tfs + k * tlh, 1);
  }
  set_font(cr, fs, 0);
  for (int c = 0; c < ncc; c++) {
    double cx = gx + left + pad + c * (colw + pad) + colw / 2.0;
    double y = title_h + colcap_h - 4 - (cols[c].n - 1) * lh - (lh - fs) / 2;   /* bottom-aligned over the column */
    for (int k = 0; k < cols[c].n; k++)
      lerr |= draw_line(cr, L, FDM_TEXT_COL, c, cols[c].line[k], cx, y + k * lh, 1);
  }
  for (int r = 0; r < nrc; r++) {
    double block = rows[r].n * lh;
    double y = top + pad + r * (rowh + pad + cap_h) + (rowh - block) / 2 + fs;
    for (int k = 0; k < rows[r].n; k++)
      lerr |= draw_line(cr, L, FDM_TEXT_ROW, r, rows[r].line[k], gx + left - margin, y + k * lh, 2);
  }
  for (int i = 0; i < ncap; i++) {
    int r = i / ncol, c = i % ncol;
    double cx = gx + left + pad + c * (colw + pad) + colw / 2.0;
    double y = top + pad + r * (rowh + pad + cap_h) + rowh + fs + 1;
    for (int k = 0; k < caps[i].n; k++)
      lerr |= draw_line(cr, L, FDM_TEXT_CAPTION, i, caps[i].line[k], cx, y + k * lh, 1);
  }
  cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  if (lerr) ret = fdm_seterror("out of memory");
  else ret = st == CAIRO_STATUS_SUCCESS ? save_surface(s, path) : fdm_seterror("cairo: %s", cairo_status_to_string(st));
  cairo_surface_destroy(s);
  if (ret != 0 && L) fdm_grid_layout_free(L);
done:
  for (int i = 0; i < ncap + ncc + nrc + 1; i++) wrapped_free(&caps[i]);
  free(caps);
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
