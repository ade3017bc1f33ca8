// The loop, written once for every family: Nim's runOnce (poll) as its five phases, and the
// registry calls around it (register_, unregister, closeSocket, addRead, addWrite ...). What
// depends on the kernel is the family's (src/family.hpp): the wait, what a report runs, how a
// handle is watched and forgotten.
#include <array>
#include <exception>
#include <ostream>

#include "family.hpp"
#include "loop.hpp"
#include "sockets.hpp"

namespace asyncdispatch {

namespace {

using detail::Family;

// The socket calls (closeSocket, addRead, addWrite) refuse a descriptor that is not registered,
// and the key of a timer, signal, process or event, which is the library's, by name.
void checkSocket(const Dispatcher& p, const char* op, AsyncFD fd) {
  if (Family::isCustomKey(p, fd))
    throw ValueError(detail::where(op, fd) +
                     ": the descriptor of a timer, signal, process or event, not a socket");
  if (!Family::contains(p, fd))
    throw ValueError(detail::where(op, fd) + ": File descriptor not registered.");
}

// Phase 3: each report runs what it made ready. A report is taken from the kernel once (a
// completion is dequeued, a timer's or event's counter read), so one whose callback throws does
// not stop the rest: the first exception leaves poll once every report has run.
void processEvents(Dispatcher& p, std::span<const Family::Report> reports) {
  std::exception_ptr failure;
  for (const Family::Report& report : reports) {
    try {
      Family::processEvent(p, report);
    } catch (...) {
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

} // namespace

namespace detail {

bool cancelWaiting(std::intptr_t fd, const FutureStateBase& fut) {
  return Family::cancelWaiting(currentDispatcher(), AsyncFD(fd), fut);
}

Future<void> connectAddress(AsyncFD socket, const AddrInfo& target) {
  return Family::connectAddress(socket, target);
}

} // namespace detail

// Nim's poll, that is one runOnce: the five phases of a pass, top to bottom.
void poll(int timeout) {
  // A callback that polls (waitFor inside a callback) would run this pass's reports and callbacks
  // from the middle of their own dispatch; Nim lets it and breaks in subtle ways. Refused here.
  const detail::PassGuard pass;
  Dispatcher& p = detail::currentDispatcher();
  if (!hasPendingOperations()) throw ValueError("No handles or timers registered in dispatcher.");

  // 1. How long the kernel may block: not at all when callbacks are queued or a timer is due.
  const int wait = detail::adjustTimeout(p, timeout);

  // 2. Wait for the kernel's reports (ready keys, or completions), 64 at most, into an array
  // made once per thread.
  thread_local std::array<Family::Report, 64> reports;
  const int ready = Family::waitForEvents(p, wait, reports);

  // 3. Run what each report made ready (it completes futures: their callbacks get queued).
  processEvents(p, std::span<const Family::Report>(reports.data(), ready));

  // 4. Complete the timers that are due.
  detail::processTimers(p);

  // 5. Run the queued callbacks: this is where coroutines resume.
  detail::processPendingCallbacks(p);
}

bool hasPendingOperations() {
  const Dispatcher& p = detail::currentDispatcher();
  return Family::hasPendingIo(p) || p.timers.size() > p.cancelledTimers || !p.callbacks.empty();
}

int activeDescriptors() {
  return Family::armedCount(detail::currentDispatcher());
}

void register_(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  if (Family::contains(p, fd))
    throw ValueError(detail::where("register_", fd) + ": descriptor already registered");
  Family::registerHandle(p, fd);
}

// Beyond Nim, operations still waiting on fd fail (Nim drops them); a timer's, signal's,
// process's or event's key just stops, as in Nim.
void unregister(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  if (Family::isCustomKey(p, fd)) return Family::unregisterCustom(p, fd);
  if (!Family::contains(p, fd))
    throw ValueError(detail::where("unregister", fd) + ": descriptor not registered");
  PData pending = Family::forget(p, fd, "unregistered");
  detail::abandonCallbacks(fd, pending, "unregistered");
}

bool contains(const PDispatcher& disp, AsyncFD fd) {
  return disp && Family::contains(*disp, fd);
}

// POSIX leaves the descriptor closed even when close fails (but for EBADF), so the pending
// operations are failed whatever close says, and only then is its error reported.
void closeSocket(AsyncFD fd) {
  Dispatcher& p = detail::currentDispatcher();
  checkSocket(p, "closeSocket", fd);
  PData pending = Family::forget(p, fd, "closed");
  const int closeError = Family::closeHandle(p, fd);
  const int stubborn = detail::abandonCallbacks(fd, pending, "closed");
  if (closeError != 0) throw OSError(closeError, detail::where("closeSocket", fd));
  if (stubborn > 0) throw ValueError("Expecting async operations to stop when fd has closed.");
}

void addRead(AsyncFD fd, Callback cb) {
  detail::checkCallback("addRead", cb);
  Dispatcher& p = detail::currentDispatcher();
  checkSocket(p, "addRead", fd);
  Family::addCallback(p, "addRead", fd, &PData::readCBs, std::move(cb));
}

void addWrite(AsyncFD fd, Callback cb) {
  detail::checkCallback("addWrite", cb);
  Dispatcher& p = detail::currentDispatcher();
  checkSocket(p, "addWrite", fd);
  Family::addCallback(p, "addWrite", fd, &PData::writeCBs, std::move(cb));
}

void dumpDispatcher(std::ostream& os, const PDispatcher& disp) {
  if (!disp) throw ValueError("dumpDispatcher: the dispatcher is nil");
  os << "p: PDispatcher {\n";
  Family::dump(*disp, os);
  detail::dumpTimersAndCallbacks(os, *disp);
  os << "}\n";
}

} // namespace asyncdispatch
