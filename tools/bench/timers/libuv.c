/* One million libuv timers (one uv_timer_t each, in one array) with random delays in
 * [0, 1000] ms, each counting its fire: schedule time, time to last fire, peak RSS.
 * `--quick` schedules 100,000. The delays come from the same LCG as the other versions. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <uv.h>

static int n;
static int fired;
static double lastFire;

/* Knuth's MMIX LCG, seed 42: every implementation draws the same delays in the same order. */
static uint64_t rng = 42;
static int nextDelay(void) {
  rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return (int)((rng >> 33) % 1001);
}

static double now(void) {
  return uv_hrtime() / 1e9;
}

static void onTimer(uv_timer_t* timer) {
  (void)timer;
  if (++fired == n) lastFire = now();
}

static void report(const char* name, double value, const char* unit) {
  printf("BENCH {\"bench\":\"timers\",\"impl\":\"libuv\",\"name\":\"%s\",\"value\":%.3f,"
         "\"unit\":\"%s\"}\n",
         name, value, unit);
}

int main(int argc, char** argv) {
  n = argc > 1 && strcmp(argv[1], "--quick") == 0 ? 100000 : 1000000;
  uv_loop_t* loop = uv_default_loop();
  uv_timer_t* timers = malloc(sizeof(uv_timer_t) * n);
  if (timers == NULL) return 1;

  double start = now();
  for (int i = 0; i < n; ++i) {
    uv_timer_init(loop, &timers[i]);
    uv_timer_start(&timers[i], onTimer, nextDelay(), 0);
  }
  double scheduled = now();
  uv_run(loop, UV_RUN_DEFAULT); /* returns once every timer has fired */

  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  report("schedule time", scheduled - start, "s");
  report("time to last fire", lastFire - start, "s");
  report("peak RSS", usage.ru_maxrss / 1024.0, "MB"); /* ru_maxrss is in KiB on Linux */
  free(timers);
  return fired == n ? 0 : 1;
}
