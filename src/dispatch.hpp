// Phase 3 of the pass, the part every family shares: how the callbacks a report makes ready are
// run (Nim's processBasicCallbacks and processCustomCallbacks). A family finds what a report is
// for and hands it over as a small view with three questions:
//   data()      the callback lists (PData) of the registration the report is for, or nullptr once
//               a callback has unregistered or closed it (its number may even hold a new one)
//   rearm()     a descriptor: arm the kernel for exactly what its lists wait for now
//   finished()  a custom key: whether it can report no more (a oneshot timer that fired, a
//               process that exited); remove() takes such a key out of the dispatcher
#pragma once

#include <utility>
#include <vector>

#include "../include/asyncdispatch/selector.hpp"

namespace asyncdispatch::detail {

// Nim's processBasicCallbacks: runs the callbacks that were waiting on one direction of a ready
// descriptor, in order, until one returns false: that one goes back to the head of the list, with
// the ones after it still queued behind it and any added meanwhile after those (Nim's
// head-of-line rule). Each callback is taken out of the list while it runs, so one that closes the
// descriptor finds the others still listed and fails them, and one that adds a callback cannot
// invalidate the list under us.
template <class Watch>
void processBasicCallbacks(Watch& watch, AsyncFD fd, std::vector<Callback> PData::*list) {
  std::size_t waiting = (watch.data()->*list).size();
  while (waiting-- > 0) {
    std::vector<Callback>& cbs = watch.data()->*list;
    if (cbs.empty()) return; // the rest were cancelled meanwhile
    Callback cb = std::move(cbs.front());
    cbs.erase(cbs.begin());
    bool done = false;
    try {
      done = cb(fd);
    } catch (...) { // cb is dropped; what is armed must still match what waits
      if (watch.data() != nullptr) watch.rearm();
      throw;
    }
    PData* data = watch.data();
    if (data == nullptr) return; // cb closed or unregistered fd; the others were failed then
    if (!done) {
      (data->*list).insert((data->*list).begin(), std::move(cb));
      return;
    }
  }
}

// Phase 3 for a descriptor reported ready for `events` (Nim's runOnce body): Read runs the read
// callbacks, Write the write callbacks, an Error alone both, so that every waiting operation sees
// the error; then the descriptor is armed again for what is left.
template <class Watch>
void processDescriptor(Watch& watch, AsyncFD fd, EventSet events) {
  const bool onlyError = events == EventSet(Event::Error);
  if (events.contains(Event::Read) || onlyError) processBasicCallbacks(watch, fd, &PData::readCBs);
  if (watch.data() == nullptr) return;
  if (events.contains(Event::Write) || onlyError)
    processBasicCallbacks(watch, fd, &PData::writeCBs);
  if (watch.data() != nullptr) watch.rearm();
}

// After a custom key's callback: the key is removed when the callback returned true or the key
// is finished, otherwise the callback waits for the next report; nothing to settle if the
// callback unregistered its own key or gave it a new callback.
template <class Key>
void settleCustomKey(Key& key, Callback cb, bool done) {
  PData* data = key.data();
  if (data == nullptr || !data->readCBs.empty()) return;
  if (done || key.finished()) {
    key.remove();
  } else {
    data->readCBs.push_back(std::move(cb));
  }
}

// Nim's processCustomCallbacks: the one callback of a timer, signal, process or event key (kept
// in its readCBs, as Nim keeps it). It is taken out of the key while it runs, so that it may
// unregister its own key; if it throws, the key is settled as if it had returned false before the
// exception leaves poll.
template <class Key>
void processCustomCallbacks(Key& key, AsyncFD fd) {
  PData* data = key.data();
  if (data == nullptr || data->readCBs.empty()) return;
  Callback cb = std::move(data->readCBs.front());
  data->readCBs.clear();
  bool done = false;
  try {
    done = cb(fd);
  } catch (...) {
    settleCustomKey(key, std::move(cb), false);
    throw;
  }
  settleCustomKey(key, std::move(cb), done);
}

} // namespace asyncdispatch::detail
