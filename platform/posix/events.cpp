// Timers, user events, signals and processes for the user (Nim's addTimer, AsyncEvent,
// addProcess and addSignal), written once over the selector contract: each is a key with one
// callback, run by processCustomCallbacks (src/dispatch.hpp) when its key is reported.
#include "../../include/asyncdispatch/events.hpp"

#include <string>
#include <string_view>
#include <utility>

#include "../../src/loop.hpp"
#include "../../src/trigger_gate.hpp"

namespace asyncdispatch {

namespace detail {

// What the handles of one AsyncEvent share: the backend's SelectEvent, and the gate that lets
// trigger race close (src/trigger_gate.hpp).
struct AsyncEventState {
  SelectEvent ev;
  TriggerGate gate;
};

} // namespace detail

namespace {

using detail::AsyncEventState;
using detail::TriggerPass;

Selector<PData>& selector() {
  return detail::currentDispatcher().selector;
}

// A key's data: its one callback, where Nim keeps it too (readList[0]).
PData customData(Callback cb) {
  PData data;
  data.readCBs.push_back(std::move(cb));
  return data;
}

std::string renamed(std::string text, std::string_view from, std::string_view to) {
  if (text.starts_with(from)) text.replace(0, from.size(), to);
  return text;
}

// Runs a backend call whose errors name the contract function ("registerSignal(signal 99):
// ..."); the user called `op`, so they are rethrown under that name.
template <class F>
decltype(auto) underName(const char* op, const char* backendOp, F&& call) {
  try {
    return call();
  } catch (const ValueError& e) {
    throw ValueError(renamed(e.what(), backendOp, op));
  } catch (const OSError& e) {
    const std::string text = renamed(e.what(), backendOp, op);
    const std::size_t colon = text.find(": ");
    if (colon == std::string::npos) throw OSError(e.code().value(), text);
    throw OSError(e.code().value(), text.substr(0, colon), text.substr(colon + 2));
  }
}

// The shared state of an event handle that is neither nil nor closed.
AsyncEventState& openState(const char* op, const std::shared_ptr<AsyncEventState>& state) {
  if (!state) throw ValueError(std::string(op) + ": AsyncEvent is nil");
  if (state->ev.getFd() == InvalidIdent)
    throw ValueError(std::string(op) + ": the AsyncEvent is closed");
  return *state;
}

// Sets the key's AsyncFD once the backend has said which descriptor the key is.
void setKeyFd(Selector<PData>& s, SocketHandle fd) {
  s.getData(fd).fd = AsyncFD(fd);
}

} // namespace

void addTimer(int timeout, bool oneshot, Callback cb) {
  detail::checkCallback("addTimer", cb);
  Selector<PData>& s = selector();
  setKeyFd(s, underName("addTimer", "registerTimer", [&] {
             return s.registerTimer(timeout, oneshot, customData(std::move(cb)));
           }));
}

AsyncEvent newAsyncEvent() {
  return AsyncEvent(underName("newAsyncEvent", "newSelectEvent",
                              [] { return std::make_shared<AsyncEventState>(); }));
}

// Nim's trigger, through the gate (see AsyncEventState); the one call safe from any thread.
void trigger(AsyncEvent ev) {
  if (!ev.state_) throw ValueError("trigger: AsyncEvent is nil");
  AsyncEventState& state = *ev.state_;
  if (!state.gate.enter()) throw ValueError("trigger: the AsyncEvent is closed");
  const TriggerPass pass(state.gate);
  state.ev.trigger();
}

void addEvent(AsyncEvent ev, Callback cb) {
  detail::checkCallback("addEvent", cb);
  AsyncEventState& state = openState("addEvent", ev.state_);
  Selector<PData>& s = selector();
  const SocketHandle fd = state.ev.getFd();
  if (s.contains(fd))
    throw ValueError(detail::where("addEvent", AsyncFD(fd)) + ": the event is already registered");
  // The key holds a handle, so the event stays open while a dispatcher watches it even when
  // the user drops every handle.
  PData data =
      customData([keep = ev.state_, cb = std::move(cb)](AsyncFD key) mutable { return cb(key); });
  data.fd = AsyncFD(fd);
  underName("addEvent", "registerEvent", [&] { s.registerEvent(state.ev, std::move(data)); });
}

void unregister(AsyncEvent ev) {
  AsyncEventState& state = openState("unregister", ev.state_);
  Selector<PData>& s = selector();
  if (!s.contains(state.ev.getFd()))
    throw ValueError(detail::where("unregister", AsyncFD(state.ev.getFd())) +
                     ": the event is not registered");
  s.unregister(state.ev);
}

void close(AsyncEvent ev) {
  if (!ev.state_) throw ValueError("close: AsyncEvent is nil");
  AsyncEventState& state = *ev.state_;
  SelectEvent& event = state.ev;
  if (event.getFd() == InvalidIdent) return;
  // Beyond Nim: a watched event leaves the selector before its descriptor is closed, so no key
  // outlives its descriptor (whose number the next socket may get).
  Selector<PData>& s = selector();
  if (s.contains(event.getFd())) s.unregister(event);
  // Beyond Nim: no trigger still on its way to the descriptor may meet it closed, or meet the
  // next owner of its number (see AsyncEventState). Each is one write(2), so the wait is short.
  state.gate.shut();
  event.close();
}

void addProcess(int pid, Callback cb) {
  detail::checkCallback("addProcess", cb);
  Selector<PData>& s = selector();
  setKeyFd(s, underName("addProcess", "registerProcess",
                        [&] { return s.registerProcess(pid, customData(std::move(cb))); }));
}

void addSignal(int signal, Callback cb) {
  detail::checkCallback("addSignal", cb);
  Selector<PData>& s = selector();
  setKeyFd(s, underName("addSignal", "registerSignal",
                        [&] { return s.registerSignal(signal, customData(std::move(cb))); }));
}

} // namespace asyncdispatch
