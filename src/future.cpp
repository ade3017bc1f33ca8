// Futures: completion, failure and callbacks (Nim's asyncfutures).
#include "../include/asyncdispatch/future.hpp"
#include "loop.hpp"

#include <memory>
#include <string>
#include <vector>

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

namespace {

// The traceback of e, if its type carries one. Finding out costs a throw: failures only.
AsyncTraceback* tracebackOf(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (AsyncTraceback& traced) {
    return &traced;
  } catch (...) {
    return nullptr;
  }
}

} // namespace

void FutureStateBase::fail(std::exception_ptr e, const CoroutineSite* site) {
  checkNotFinished();
  if (!e) throw ValueError("fail: the exception_ptr is empty");
  auto failure = std::make_unique<Failure>();
  failure->traced = tracebackOf(e);
  if (failure->traced != nullptr) {
    failure->chain = failure->traced->chain();
    if (site != nullptr) {
      try {
        failure->chain = std::make_shared<TracebackFrame>(
            TracebackFrame{site->procname, site->filename, site->line, std::move(failure->chain)});
      } catch (...) { // out of memory: the error itself still goes through, without this frame
      }
    }
  }
  failure->error = std::move(e);
  failure_ = failure.release();
  finished = true;
  if (!callbacks.empty()) scheduleCallbacks();
}

const std::exception_ptr& FutureStateBase::shownError() const noexcept {
  if (failure_->traced != nullptr) failure_->traced->showChain(failure_->chain);
  return failure_->error;
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

std::string formatTraceback(const TracebackFrame* outermost) {
  std::vector<const TracebackFrame*> frames;
  for (const TracebackFrame* f = outermost; f != nullptr; f = f->inner.get())
    frames.push_back(f);
  std::string text;
  for (auto f = frames.rbegin(); f != frames.rend(); ++f)
    text += std::string("  ") + (*f)->filename + "(" + std::to_string((*f)->line) + ") " +
            (*f)->procname + "\n";
  return text;
}

} // namespace detail

std::exception_ptr FutureBase::readError() const {
  const detail::FutureStateBase& s = state();
  if (!s.failed()) throw ValueError("No error in future.");
  return s.shownError();
}

void FutureBase::fail(std::exception_ptr error) const {
  state().fail(std::move(error));
}

void FutureBase::throwNil() {
  throw ValueError("Future is nil: the handle was default-constructed and refers to no future");
}

} // namespace asyncdispatch
