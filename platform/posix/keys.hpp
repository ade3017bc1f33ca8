// What every selector backend does alike with its fds table (the drawing's SelectorKeys): tell a
// descriptor's key from a timer's, signal's, process's or event's, and print the table.
#pragma once

#include <ostream>
#include <vector>

#include "../../include/asyncdispatch/selector.hpp"

namespace asyncdispatch {

// A timer, signal or process key: its descriptor is the selector's own (a timerfd, a pidfd, a
// reserved descriptor ...), so unregister closes it.
constexpr bool selectorOwnsFd(EventSet events) {
  return events.contains(Event::Timer) || events.contains(Event::Signal) ||
         events.contains(Event::Process);
}

// Any key that is not a descriptor's: the above, or a User key, whose descriptor belongs to its
// SelectEvent. updateHandle refuses them.
constexpr bool isCustomKey(EventSet events) {
  return selectorOwnsFd(events) || events.contains(Event::User);
}

// Prints fds as the drawing's table of SelectorKeys, with Nim's SelectorKey.param (the signal
// of a Signal key, the pid of a Process key); Slot is a backend's SelectorKey<T> plus `param`.
template <class Slot>
void dumpKeys(std::ostream& os, const std::vector<Slot>& fds) {
  os << "    fds: Table[SocketHandle, SelectorKey] {";
  bool any = false;
  for (const Slot& slot : fds) {
    if (slot.fd == InvalidIdent) continue;
    os << (any ? ",\n" : "\n") << "      " << slot.fd << ": SelectorKey { fd: " << slot.fd
       << ", events: " << slot.events;
    if (slot.events.contains(Event::Signal) || slot.events.contains(Event::Process))
      os << ", param: " << slot.param;
    os << ", data: " << slot.data << " }";
    any = true;
  }
  os << (any ? "\n    }\n" : "}\n") << "  },\n";
}

} // namespace asyncdispatch
