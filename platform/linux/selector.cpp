// Selector over epoll; the list of what is hard about epoll opens selector.hpp.
#include "selector.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "../../include/asyncdispatch/errors.hpp"

namespace asyncdispatch {

namespace {

std::string where(const char* op, SocketHandle fd) {
  return std::string(op) + "(fd " + std::to_string(fd) + ")";
}

std::uint32_t toEpollEvents(EventSet events) {
  std::uint32_t mask = 0;
  if (events.contains(Event::Read)) mask |= EPOLLIN;
  if (events.contains(Event::Write)) mask |= EPOLLOUT;
  return mask;
}

void control(int epollFD, int op, int fd, std::uint32_t mask, const char* name) {
  epoll_event ev{};
  ev.events = mask;
  ev.data.fd = fd;
  if (epoll_ctl(epollFD, op, fd, &ev) != 0) throw OSError(errno, where(name, fd));
}

} // namespace

template <class T>
SelectorKey<T>& Selector<T>::checkedKey(const char* op, SocketHandle fd) {
  if (!contains(fd)) throw ValueError(where(op, fd) + ": descriptor not registered");
  return fds[fd];
}

template <class T>
Selector<T>::Selector() : epollFD(epoll_create1(EPOLL_CLOEXEC)) {
  if (epollFD < 0) throw OSError(errno, "newSelector: epoll_create1");
}

template <class T>
Selector<T>::~Selector() {
  ::close(epollFD);
}

template <class T>
void Selector<T>::registerHandle(SocketHandle fd, EventSet events, T data) {
  if (fd < 0) throw ValueError(where("registerHandle", fd) + ": not a descriptor");
  if (static_cast<std::size_t>(fd) >= fds.size()) {
    const std::size_t size =
        std::max<std::size_t>({static_cast<std::size_t>(fd) + 1, fds.size() * 2, 1024});
    fds.resize(size);
    armed.resize(size, 0);
  }
  SelectorKey<T>& key = fds[fd];
  if (key.fd != InvalidIdent)
    throw ValueError(where("registerHandle", fd) + ": descriptor already registered");
  key.fd = fd;
  key.data = std::move(data);
  updateHandle(fd, events);
}

template <class T>
void Selector<T>::updateHandle(SocketHandle fd, EventSet events) {
  SelectorKey<T>& key = checkedKey("updateHandle", fd);
  const std::uint32_t wanted = toEpollEvents(events);
  // Widen the kernel's interest at once. Narrow it at once only for Write, which a socket almost
  // always is and would report at every wait; a Read nobody waits for stays armed until an
  // unwanted event shows up (selectInto), so a connection that reads, then reads again, costs
  // no epoll_ctl at all.
  const std::uint32_t keep = (armed[fd] & EPOLLIN) | wanted;
  if (keep != armed[fd]) {
    if (keep == 0) {
      control(epollFD, EPOLL_CTL_DEL, fd, 0, "updateHandle");
    } else {
      control(epollFD, armed[fd] == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, keep, "updateHandle");
    }
    armed[fd] = keep;
  }
  count += (events.empty() ? 0 : 1) - (key.events.empty() ? 0 : 1);
  key.events = events;
}

template <class T>
void Selector<T>::unregister(SocketHandle fd) {
  SelectorKey<T>& key = checkedKey("unregister", fd);
  if (armed[fd] != 0) {
    // A descriptor closed behind our back has already left the epoll set (EBADF, ENOENT).
    epoll_event ev{};
    if (epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, &ev) != 0 && errno != EBADF && errno != ENOENT)
      throw OSError(errno, where("unregister", fd));
    armed[fd] = 0;
  }
  if (!key.events.empty()) --count;
  key = SelectorKey<T>{};
}

template <class T>
int Selector<T>::selectInto(int timeout, std::span<ReadyKey> results) {
  const int capacity = static_cast<int>(std::min<std::size_t>(results.size(), 64));
  const int n = epoll_wait(epollFD, events, capacity, timeout);
  if (n < 0) {
    if (errno == EINTR) return 0;
    throw OSError(errno, "selectInto: epoll_wait");
  }
  int ready = 0;
  for (int i = 0; i < n; ++i) {
    const int fd = events[i].data.fd;
    const std::uint32_t mask = events[i].events;
    const EventSet wanted = fds[fd].events;
    ReadyKey rk{fd, {}, 0};
    if ((mask & EPOLLIN) != 0 && wanted.contains(Event::Read)) rk.events.incl(Event::Read);
    if ((mask & EPOLLOUT) != 0 && wanted.contains(Event::Write)) rk.events.incl(Event::Write);
    if ((mask & (EPOLLERR | EPOLLHUP)) != 0 && !wanted.empty()) {
      // SO_ERROR is not read here: reading it clears it, and the operation that runs next
      // (connect, recv, send) must see the error itself. A hang-up reads as a reset.
      rk.events.incl(Event::Error);
      rk.errorCode = (mask & EPOLLHUP) != 0 ? ECONNRESET : 0;
    }
    // The kernel reported something nobody waits for any more: now narrow its interest.
    const std::uint32_t narrowed = toEpollEvents(wanted);
    if ((mask & ~narrowed & (EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0 &&
        armed[fd] != narrowed) {
      control(epollFD, narrowed == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD, fd, narrowed, "selectInto");
      armed[fd] = narrowed;
    }
    if (!rk.events.empty()) results[ready++] = rk;
  }
  return ready;
}

template <class T>
bool Selector<T>::contains(SocketHandle fd) const {
  return fd >= 0 && static_cast<std::size_t>(fd) < fds.size() && fds[fd].fd != InvalidIdent;
}

template <class T>
T& Selector<T>::getData(SocketHandle fd) {
  return checkedKey("getData", fd).data;
}

template <class T>
void Selector<T>::dump(std::ostream& os) const {
  os << "  selector: Selector {\n"
     << "    epollFD: " << epollFD << ",\n"
     << "    events: array[64, epoll_event],\n"
     << "    fds: Table[SocketHandle, SelectorKey] {";
  bool any = false;
  for (const SelectorKey<T>& key : fds) {
    if (key.fd == InvalidIdent) continue;
    os << (any ? ",\n" : "\n") << "      " << key.fd << ": SelectorKey { fd: " << key.fd
       << ", events: " << key.events << ", data: " << key.data << " }";
    any = true;
  }
  os << (any ? "\n    }\n" : "}\n") << "  },\n";
}

template class Selector<PData>;
static_assert(SelectorBackend<Selector<PData>>);

} // namespace asyncdispatch
