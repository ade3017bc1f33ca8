// What closeSocket and unregister do with the addRead/addWrite callbacks of a descriptor that has
// left the dispatcher, the same on every backend: each is called once more, while abandonReason
// says why, so the library's operations fail their futures with an OSError naming themselves.
#include <ostream>

#include "loop.hpp"

namespace asyncdispatch {

namespace detail {

namespace {

// Which descriptor is being abandoned, and why (see abandonReason).
struct Abandoning {
  AsyncFD fd{-1};
  const char* why = nullptr;
};
thread_local Abandoning abandoning;

} // namespace

int abandonCallbacks(AsyncFD fd, PData& data, const char* why) {
  abandoning = Abandoning{fd, why};
  int stubborn = 0;
  try {
    for (Callback& cb : data.readCBs)
      stubborn += cb(fd) ? 0 : 1;
    for (Callback& cb : data.writeCBs)
      stubborn += cb(fd) ? 0 : 1;
  } catch (...) {
    abandoning = Abandoning{};
    throw;
  }
  abandoning = Abandoning{};
  return stubborn;
}

const char* abandonReason(AsyncFD fd) noexcept {
  return abandoning.why != nullptr && abandoning.fd == fd ? abandoning.why : nullptr;
}

} // namespace detail

std::ostream& operator<<(std::ostream& os, const PData& data) {
  return os << "PData { fd: " << data.fd << ", readCBs: " << data.readCBs.size()
            << ", writeCBs: " << data.writeCBs.size() << " }";
}

} // namespace asyncdispatch
