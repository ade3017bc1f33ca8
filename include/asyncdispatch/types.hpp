// The small value types of the API: descriptors, ports, socket parameters, the event set of a
// selector key and the per-fd callback. Nim names are kept; values that would clash with the C
// macros (AF_INET ...) are scoped enumerators.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <ostream>

#include "function.hpp"

namespace asyncdispatch {

/// Nim's `AsyncFD = distinct int`, wide enough for a Windows SOCKET: AsyncFD(7) makes one,
/// static_cast<int>(fd) reads it.
enum class AsyncFD : std::intptr_t {};

/// Nim's SocketHandle, the OS's own descriptor type: SOCKET on Windows (a UINT_PTR), int elsewhere.
#if defined(_WIN32)
using SocketHandle = std::uintptr_t;
#else
using SocketHandle = int;
#endif

/// Beyond Nim, which has no `$` for AsyncFD: prints the descriptor's number.
inline std::ostream& operator<<(std::ostream& os, AsyncFD fd) {
  return os << static_cast<std::intptr_t>(fd);
}

/// Nim's `Port = distinct uint16`, in host byte order.
enum class Port : std::uint16_t {};

/// Nim's Domain, SockType and Protocol (AF_*, SOCK_*, IPPROTO_*); platform/ maps them to the
/// OS's numbers, which differ between systems (AF_INET6 is 10 on Linux, 30 on macOS, 23 on
/// Windows).
enum class Domain { Unix, Inet, Inet6 };
/// Nim's SockType (SOCK_*).
enum class SockType { Stream, Dgram, Raw, SeqPacket };
/// Nim's Protocol (IPPROTO_*).
enum class Protocol { TCP, UDP, IP, IPv6, Raw, ICMP, ICMPv6 };

/// Nim's SocketFlag: Peek reads without consuming; SafeDisconn turns a peer's disconnection
/// (ECONNRESET, EPIPE, ENETRESET) into an orderly end instead of an error.
enum class SocketFlag : std::uint8_t { Peek, SafeDisconn };

/// Nim's `set[SocketFlag]`: SocketFlags f = SocketFlag::SafeDisconn, {Peek, SafeDisconn} or {}.
class SocketFlags {
public:
  /// Nim's `{}`: the empty set.
  constexpr SocketFlags() noexcept = default;
  /// Nim's `{flag}`: a set of one, so a lone flag converts.
  constexpr SocketFlags(SocketFlag flag) noexcept : bits_(bit(flag)) {} // NOLINT: a set of one
  /// Nim's set constructor `{Peek, SafeDisconn}`.
  constexpr SocketFlags(std::initializer_list<SocketFlag> flags) noexcept {
    for (SocketFlag f : flags)
      bits_ |= bit(f);
  }
  /// Nim's contains (`flag in flags`).
  constexpr bool contains(SocketFlag flag) const noexcept { return (bits_ & bit(flag)) != 0; }
  /// Nim's `==` of sets.
  constexpr bool operator==(const SocketFlags&) const noexcept = default;

private:
  static constexpr std::uint8_t bit(SocketFlag f) noexcept {
    return static_cast<std::uint8_t>(1u << static_cast<unsigned>(f));
  }
  std::uint8_t bits_ = 0;
};

/// Nim's selectors Event: what a selector key waits for and what a ready key reports.
enum class Event : std::uint8_t {
  Read,
  Write,
  Timer,
  Signal,
  Process,
  Vnode,
  User,
  Error,
  Oneshot,
  Finished
};

/// Nim's `set[Event]`.
class EventSet {
public:
  /// Nim's `{}`: the empty set.
  constexpr EventSet() noexcept = default;
  /// Nim's `{e}`: a set of one, so a lone event converts.
  constexpr EventSet(Event e) noexcept : bits_(bit(e)) {} // NOLINT: a set of one
  /// Nim's set constructor `{Read, Write}`.
  constexpr EventSet(std::initializer_list<Event> events) noexcept {
    for (Event e : events)
      bits_ |= bit(e);
  }
  /// Nim's contains (`e in events`).
  constexpr bool contains(Event e) const noexcept { return (bits_ & bit(e)) != 0; }
  /// Nim's `events == {}`.
  constexpr bool empty() const noexcept { return bits_ == 0; }
  /// Nim's incl: adds e.
  constexpr void incl(Event e) noexcept { bits_ |= bit(e); }
  /// Nim's excl: removes e.
  constexpr void excl(Event e) noexcept { bits_ &= static_cast<std::uint16_t>(~bit(e)); }
  /// Nim's `==` of sets.
  constexpr bool operator==(const EventSet&) const noexcept = default;

private:
  static constexpr std::uint16_t bit(Event e) noexcept {
    return static_cast<std::uint16_t>(1u << static_cast<unsigned>(e));
  }
  std::uint16_t bits_ = 0;
};

/// Nim's `$` of an Event: its name.
std::ostream& operator<<(std::ostream& os, Event e);
/// Nim's `$` of a `set[Event]`: "{Read, Write}".
std::ostream& operator<<(std::ostream& os, EventSet events);

/// Nim's `Callback = proc (fd: AsyncFD): bool`: the per-fd handler of addRead/addWrite (and later
/// of timers, events, signals and processes). Return true to remove it, false to be called again.
using Callback = detail::UniqueFunction<bool(AsyncFD)>;

} // namespace asyncdispatch
