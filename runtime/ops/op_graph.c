/* op_graph.c: graphs over a backend's graph functions (fdm_graph.h). The
** random stream's bookkeeping: the graph's rng tensor holds {seed, offset}
** on the device; a run's draws read it (device-offset mode, core/rng.c), and
** a kernel recorded at the end of the run advances its offset by the blocks
** drawn, so consecutive replays continue the stream on their own. Before a
** replay the host rewrites the tensor only when its stream moved otherwise
** (eager draws in between, a new seed). */
#include <stdlib.h>
#include "fdm_internal.h"
#include "fdm_graph.h"

struct fdm_graph {
  fdm_device dev;
  const fdm_backend *be;
  void *handle;            /* the backend's graph; NULL when emulated */
  int emulate;
  int ready;               /* captured and replayable */
  fdm_tensor *rng;         /* int64 [2] on dev: {seed, offset} */
  uint64_t seed, offset;   /* what rng holds after the last run */
  uint64_t blocks;         /* random blocks one run draws */
};

static fdm_graph *current;

const fdm_graph *fdm_graph_current(void) { return current; }
int fdm_graph_emulated(const fdm_graph *g) { return g->emulate; }
fdm_device fdm_graph_device(const fdm_graph *g) { return g->dev; }

int fdm_counter_add_(fdm_tensor *counter, int64_t delta) {
  if (fdm_backend_check("counter_add_", 1, &counter)) return -1;
  if (counter->dtype != FDM_INT64 || fdm_numel(counter) != 1)
    return fdm_seterror("counter_add_: a one-element int64 tensor expected, got %lld elements of %s",
                        (long long)fdm_numel(counter), fdm_dtype_name(counter->dtype));
  fdm_kview v = fdm_kview_of(counter);
  if (FDM_KERNEL(counter->device, "counter_add_", counter_add, &v, delta)) return -1;
  fdm_bump_version(counter);
  return 0;
}

/* writes the host stream's (seed, offset) into g->rng when it differs from what the graph left there */
static int sync_rng(fdm_graph *g) {
  uint64_t seed, offset;
  fdm_rng_get(&seed, &offset);
  if (g->ready && seed == g->seed && offset == g->offset) return 0;
  int64_t host[2] = {(int64_t)seed, (int64_t)offset};
  int64_t shape = 2;
  fdm_tensor *src = fdm_from_external(FDM_INT64, 1, &shape, FDM_CPU, host, sizeof host, NULL, NULL);
  if (!src) return -1;
  int rc = fdm_transfer_bytes(g->rng, src);
  fdm_release(src);
  if (rc == 0) { g->seed = seed; g->offset = offset; }
  return rc;
}

/* the start of a run (capture or emulated replay): copies to and from the
** device are refused and draws read the device offset from here on */
static int run_begin(fdm_graph *g) {
  if (current) return fdm_seterror("graph: a graph is already being captured or run (graphs do not nest)");
  if (sync_rng(g)) return -1;
  current = g;
  fdm_backend_set_capturing(g->dev);
  fdm_rng_device_begin(g->rng);
  return 0;
}

static uint64_t run_stop(void) {
  current = NULL;
  fdm_backend_set_capturing(FDM_NDEVICE);
  return fdm_rng_device_end();
}

/* the end of a run that succeeded: record the offset's advance (a kernel, part
** of the graph), then the host stream moves by the same blocks */
static int advance(fdm_graph *g) {
  fdm_tensor *off = fdm_narrow(g->rng, 0, 1, 1);
  int rc = off ? fdm_counter_add_(off, (int64_t)g->blocks) : -1;
  fdm_release(off);
  return rc;
}

static void advance_host(fdm_graph *g) {
  g->offset = fdm_rng_take(g->blocks) + g->blocks;
}

fdm_graph *fdm_graph_begin(fdm_device dev, int emulate) {
  const fdm_backend *be = fdm_backend_get(dev);
  if (!be) return NULL;
  if (!emulate && !be->graph_begin) {
    fdm_seterror("graph: graphs need a device that supports them (cuda); device '%s' has none",
                 fdm_device_name(dev));
    return NULL;
  }
  fdm_graph *g = calloc(1, sizeof *g);
  if (!g) { fdm_seterror("graph: out of memory"); return NULL; }
  g->dev = dev;
  g->be = be;
  g->emulate = emulate;
  int64_t two = 2;
  g->rng = fdm_empty(FDM_INT64, 1, &two, dev);
  if (!g->rng || run_begin(g)) { fdm_graph_free(g); return NULL; }
  if (!emulate) {
    g->handle = be->graph_begin();
    if (!g->handle) { run_stop(); fdm_graph_free(g); return NULL; }
  }
  return g;
}

int fdm_graph_end(fdm_graph *g) {
  if (current != g || g->ready) return fdm_seterror("graph: not being captured");
  g->blocks = fdm_rng_device_take(0);
  int rc = advance(g);
  run_stop();
  if (rc == 0 && !g->emulate) {
    rc = g->be->graph_end(g->handle);
    if (rc == 0) rc = g->be->graph_replay(g->handle);
  }
  if (rc) return -1;
  g->ready = 1;
  advance_host(g);
  return 0;
}

void fdm_graph_abort(fdm_graph *g) {
  if (current != g) return;
  run_stop();
  if (g->handle) { g->be->graph_free(g->handle); g->handle = NULL; }
}

int fdm_graph_replay(fdm_graph *g) {
  if (!g->ready) return fdm_seterror("graph: not captured (its capture failed or it was freed)");
  if (g->emulate) return fdm_seterror("graph: an emulated graph is replayed by running its function again");
  if (current) return fdm_seterror("graph: cannot replay a graph while another is being captured");
  if (sync_rng(g) || g->be->graph_replay(g->handle)) return -1;
  advance_host(g);
  return 0;
}

int fdm_graph_rerun_begin(fdm_graph *g) {
  if (!g->ready || !g->emulate) return fdm_seterror("graph: not an emulated graph ready to run again");
  return run_begin(g);
}

int fdm_graph_rerun_end(fdm_graph *g, int ok) {
  if (current != g) return fdm_seterror("graph: not running");
  uint64_t blocks = fdm_rng_device_take(0);
  int rc = 0;
  if (ok && blocks != g->blocks)
    rc = fdm_seterror("graph: this run drew %llu random blocks, the captured run %llu: a replay repeats "
                      "exactly the captured work", (unsigned long long)blocks, (unsigned long long)g->blocks);
  if (ok && rc == 0) rc = advance(g);
  run_stop();
  if (!ok || rc) { g->ready = 0; return ok ? -1 : 0; }
  advance_host(g);
  return 0;
}

void fdm_graph_free(fdm_graph *g) {
  if (!g) return;
  fdm_graph_abort(g);
  if (g->handle) g->be->graph_free(g->handle);
  fdm_release(g->rng);
  free(g);
}
