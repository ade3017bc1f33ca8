// Timers, user events and processes of the IOCP backend (Nim's addTimer, AsyncEvent, addProcess;
// on Windows each waits with RegisterWaitForSingleObject and posts to ioPort). Not yet on Windows
// (issue 5): each throws OSError(ERROR_CALL_NOT_IMPLEMENTED) naming itself. addSignal is final:
// Windows has no POSIX signals and Nim has no addSignal there.
#include "../../include/asyncdispatch/events.hpp"

#include <string>

#include "../../src/loop.hpp"

namespace asyncdispatch {

namespace detail {

// What the handles of one AsyncEvent share; empty until events exist on Windows.
struct AsyncEventState {};

} // namespace detail

namespace {

[[noreturn]] void notYet(const char* op) {
  throw OSError(ERROR_CALL_NOT_IMPLEMENTED, op, "not yet on Windows");
}

} // namespace

void addTimer(int, bool, Callback) {
  notYet("addTimer");
}

AsyncEvent newAsyncEvent() {
  notYet("newAsyncEvent");
}

void trigger(AsyncEvent) {
  notYet("trigger");
}

void addEvent(AsyncEvent, Callback) {
  notYet("addEvent");
}

void unregister(AsyncEvent) {
  notYet("unregister(AsyncEvent)");
}

void close(AsyncEvent) {
  notYet("close(AsyncEvent)");
}

void addProcess(int, Callback) {
  notYet("addProcess");
}

void addSignal(int, Callback) {
  throw OSError(ERROR_NOT_SUPPORTED, "addSignal", "not supported on Windows");
}

} // namespace asyncdispatch
