/* rng.c: the state of the random number stream: a seed and the offset (in
** 128-bit Philox blocks) of the next draw. The draws themselves are kernels
** (kernels/cpu/random.c); element i of a draw depends on (seed, offset, i)
** only, so every device and thread count gives the same numbers. */
#include "fdm.h"

static uint64_t rng_seed = 0x5eed, rng_offset = 0;

void fdm_manual_seed(uint64_t seed) { rng_seed = seed; rng_offset = 0; }
void fdm_rng_get(uint64_t *seed, uint64_t *offset) { *seed = rng_seed; *offset = rng_offset; }
void fdm_rng_set(uint64_t seed, uint64_t offset) { rng_seed = seed; rng_offset = offset; }

uint64_t fdm_rng_take(uint64_t blocks) {
  uint64_t start = rng_offset;
  rng_offset += blocks;
  return start;
}

/* Device-offset mode (graphs, runtime/ops/op_graph.c): while a state tensor
** is set, draws read (seed, offset) from it on the device, so a replayed
** graph draws where the stream is then, not where it was when captured.
** The draws of one run reserve blocks counted from the state's offset. */
static fdm_tensor *dev_state;
static uint64_t dev_taken;

void fdm_rng_device_begin(fdm_tensor *state) {
  fdm_retain(state);
  fdm_release(dev_state);
  dev_state = state;
  dev_taken = 0;
}

uint64_t fdm_rng_device_end(void) {
  fdm_release(dev_state);
  dev_state = NULL;
  return dev_taken;
}

fdm_tensor *fdm_rng_device_state(void) { return dev_state; }

uint64_t fdm_rng_device_take(uint64_t blocks) {
  uint64_t start = dev_taken;
  dev_taken += blocks;
  return start;
}
