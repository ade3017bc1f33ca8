# One million sleepAsync timers with random delays in [0, 1000] ms, each with a callback that
# counts fires: schedule time, time to last fire, peak RSS. `--quick` schedules 100,000.
# The delays come from the same LCG as the other versions.
import std/[asyncdispatch, monotimes, os, posix, strformat, times]

var
  n = 1_000_000
  fired = 0
  rng = 42'u64

# Knuth's MMIX LCG, seed 42: every implementation draws the same delays in the same order.
proc nextDelay(): int =
  rng = rng * 6364136223846793005'u64 + 1442695040888963407'u64
  int((rng shr 33) mod 1001)

proc report(name: string, value: float, unit: string) =
  echo &"""BENCH {{"bench":"timers","impl":"nim","name":"{name}","value":{value:.3f},"unit":"{unit}"}}"""

proc onFire() = inc fired

proc main() =
  if paramCount() > 0 and paramStr(1) == "--quick": n = 100_000
  discard getGlobalDispatcher() # made outside the timed region
  let start = getMonoTime()
  for i in 0 ..< n:
    sleepAsync(nextDelay()).addCallback(onFire)
  let scheduled = getMonoTime()
  while fired < n:
    poll()
  let last = getMonoTime()

  var usage: Rusage
  discard getrusage(RUSAGE_SELF, addr usage)
  report("schedule time", (scheduled - start).inNanoseconds.float / 1e9, "s")
  report("time to last fire", (last - start).inNanoseconds.float / 1e9, "s")
  report("peak RSS", usage.ru_maxrss.float / 1024, "MB") # ru_maxrss is in KiB on Linux

main()
