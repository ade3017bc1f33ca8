# The micro-benchmarks of tools/bench/micro/asyncdispatch.cpp, written against Nim's own
# asyncdispatch, under the same names. Build with -d:release -d:danger.
import std/[asyncdispatch, json, math, monotimes, os, times]

let quick = paramCount() >= 1 and paramStr(1) == "--quick"
var sink = 0

proc report(name: string, value: float, unit: string) =
  echo "BENCH ", %*{"bench": "micro", "impl": "nim", "name": name, "value": round(value, 2),
                   "unit": unit}

# Finds the n for which `run(n)` (n operations) lasts about the time box, then reports the best of
# five runs at that n, in ns per operation.
proc measure(name: string, run: proc (n: int)) =
  let box = if quick: 20e6 else: 300e6 # ns
  proc timed(n: int): float =
    let start = getMonoTime()
    run(n)
    float((getMonoTime() - start).inNanoseconds)
  var n = 1000
  var ns = timed(n)
  while ns < box / 10:
    n *= 4
    ns = timed(n)
  n = int(float(n) * box / ns)
  var best = Inf
  for _ in 1..5:
    best = min(best, timed(n) / float(n))
  report(name, best, "ns")

# Nim's await always yields, and the async machinery resumes at once when the future has finished.
proc awaitFinished(done: Future[int], n: int): Future[int] {.async.} =
  var sum = 0
  for _ in 0..<n:
    sum += await done
  return sum

proc immediate(v: int): Future[int] {.async.} =
  return v

proc awaitImmediate(n: int): Future[int] {.async.} =
  var sum = 0
  for i in 0..<n:
    sum += await immediate(i)
  return sum

proc callSoonOneByOne(n: int) =
  var ran = 0
  for _ in 0..<n:
    callSoon(proc () = inc ran)
    poll(0)
  sink += ran

# One poll runs the whole batch: Nim's callback phase runs until the queue is empty.
proc callSoonBatch(n: int) =
  const batch = 1000
  var ran = 0
  var done = 0
  while done < n:
    for _ in 0..<batch:
      callSoon(proc () = inc ran)
    done += batch
    while ran < done:
      poll(0)
  sink += ran

proc main() =
  let done = newFuture[int]("done")
  done.complete(1)
  measure("co_await finished future", proc (n: int) = sink += waitFor awaitFinished(done, n))
  measure("co_await immediate coroutine", proc (n: int) = sink += waitFor awaitImmediate(n))
  measure("callSoon round trip", callSoonOneByOne)
  measure("callSoon batch", callSoonBatch)
  if hasPendingOperations():
    quit("micro_nim: the dispatcher did not end empty", 1)
  stderr.writeLine("micro_nim: checksum ", sink)

main()
