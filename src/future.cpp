// Futures: completion, failure and callbacks (Nim's asyncfutures).
#include "../include/asyncdispatch/future.hpp"
#include "loop.hpp"

#include <string>

namespace asyncdispatch {

namespace detail {

constinit thread_local std::uint64_t futureCounter = 0;

void FutureStateBase::throwFinishedTwice() const {
  // Nim's message, without the stack traces Nim records in debug builds.
  std::string msg = "An attempt was made to complete a Future more than once. Details:\n"
                    "  Future ID: " +
                    std::to_string(id) + "\n  Created in proc: " + fromProc + "\n";
  std::string contents;
  describeValue(contents);
  if (!contents.empty()) msg += "  Contents (string):\n    " + contents + "\n";
  throw FutureError(msg);
}

void FutureStateBase::scheduleCallbacks() {
  selfRefs = 0; // the handles the callbacks hold are ordinary references once they are queued
  callbacks.takeAll([](UniqueFunction<void()>&& cb) { enqueueCallback(std::move(cb)); });
}

void FutureStateBase::fail(std::exception_ptr e) {
  checkNotFinished();
  if (!e) throw ValueError("fail: the exception_ptr is empty");
  ::new (&error_) std::exception_ptr(std::move(e));
  finished = true;
  if (!callbacks.empty()) scheduleCallbacks();
}

void FutureStateBase::cancel() {
  if (finished) return;
  const CancelHook hook = cancelHook_;
  if (CoroutineCanceller* c = hook.coroutine()) {
    c->cancel();
    return;
  }
  if (Canceller* c = hook.canceller()) {
    c->cancel(*this);
    return;
  }
  std::string what = fromProc;
  if (hook.isDescriptor()) {
    cancelWaiting(hook.fd(), *this);
    what += "(fd " + std::to_string(hook.fd()) + ")";
  }
  fail(std::make_exception_ptr(CancelledError(what + ": cancelled")));
}

// The coroutine's own future fails when the cancellation unwinds its body, not here.
void CoroutineCanceller::cancel() {
  if (awaiting != nullptr && !awaiting->finished) {
    FutureStateBase* awaited = awaiting;
    ++awaited->refs; // cancelling may drop every other reference to it
    awaited->cancel();
    awaited->dropRef();
  } else {
    cancelRequested = true; // running, or its resumption is already queued
  }
}

void addTracebackFrame(const std::exception_ptr& e, const char* coroutine) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (AsyncTraceback& traced) {
    try {
      traced.addFrame(coroutine);
    } catch (...) { // out of memory: the error itself still goes through, without this frame
    }
  } catch (...) {
  }
}

void FutureStateBase::addCallback(UniqueFunction<void()> cb, bool holdsSelf) {
  if (finished) {
    enqueueCallback(std::move(cb));
  } else {
    callbacks.push(std::move(cb));
    if (holdsSelf && selfRefs != UINT16_MAX) ++selfRefs;
  }
}

void FutureStateBase::describeValue(std::string&) const {}

std::size_t SuspendedList::size() const noexcept {
  std::size_t n = 0;
  for (const SuspendedLink* l = head_.next; l != &head_; l = l->next)
    ++n;
  return n;
}

void SuspendedList::push(SuspendedLink& link) noexcept {
  link.prev = head_.prev;
  link.next = &head_;
  head_.prev->next = &link;
  head_.prev = &link;
}

void SuspendedList::destroyAll() noexcept {
  // Destroying one frame may destroy others (through the futures it held), which unlink
  // themselves; so always take the first that is left.
  while (!empty())
    static_cast<ResumeCoroutine*>(head_.next)->release().destroy();
}

} // namespace detail

std::exception_ptr FutureBase::readError() const {
  const detail::FutureStateBase& s = state();
  if (!s.failed()) throw ValueError("No error in future.");
  return s.error();
}

void FutureBase::fail(std::exception_ptr error) const {
  state().fail(std::move(error));
}

void FutureBase::throwNil() {
  throw ValueError("Future is nil: the handle was default-constructed and refers to no future");
}

} // namespace asyncdispatch
