/*
** fdm_graph.h: graphs (op_graph.c). A graph records the device work of one
** run of a function (a training step, a sampler step) and replays it. The
** function's run during the capture counts as its first run: fdm_graph_end
** launches what was recorded once.
**
** Random draws inside it read (seed, offset) from a small device tensor that
** the graph owns, so every replay draws where the host's random stream is
** then, exactly the numbers an eager run would draw there, and the host's
** stream advances by what one run draws.
**
** Emulated graphs (emulate = 1, any device) run the same bookkeeping with
** the function run again in place of each replay (fdm_graph_rerun_begin /
** _end around it): the test suite drives the graph code paths on the CPU
** and the fake device that way.
*/
#ifndef FDM_GRAPH_H
#define FDM_GRAPH_H
#include "fdm.h"

typedef struct fdm_graph fdm_graph;

/* starts recording on dev; NULL with the error set (a device without graphs
** and emulate = 0, a capture already running) */
fdm_graph *fdm_graph_begin(fdm_device dev, int emulate);
/* after the function ran: ends the capture and runs it once; -1 on failure
** (the graph can then only be freed) */
int fdm_graph_end(fdm_graph *g);
/* the function failed: ends the capture, discarding it */
void fdm_graph_abort(fdm_graph *g);
int fdm_graph_replay(fdm_graph *g);
/* emulated graphs: around the function's next run, which stands for a replay */
int fdm_graph_rerun_begin(fdm_graph *g);
int fdm_graph_rerun_end(fdm_graph *g, int ok);
int fdm_graph_emulated(const fdm_graph *g);
fdm_device fdm_graph_device(const fdm_graph *g);
/* the graph being captured (or rerun), NULL when none */
const fdm_graph *fdm_graph_current(void);
void fdm_graph_free(fdm_graph *g);   /* NULL-safe; aborts a capture in progress */
#endif
