// The one place the backend is chosen. `make BACKEND=...` forces one with
// -DASYNCDISPATCH_BACKEND_<NAME>; otherwise the target OS decides. The paths are relative to this
// file, so a vendored copy needs only include/ on its include path and the tree kept together.
#pragma once

#include "dispatcher.hpp"

#if !defined(ASYNCDISPATCH_BACKEND_EPOLL) && !defined(ASYNCDISPATCH_BACKEND_KQUEUE) &&             \
    !defined(ASYNCDISPATCH_BACKEND_EVENTPORTS) && !defined(ASYNCDISPATCH_BACKEND_POLL) &&          \
    !defined(ASYNCDISPATCH_BACKEND_IOCP) && !defined(ASYNCDISPATCH_BACKEND_STUB)
#if defined(__linux__)
#define ASYNCDISPATCH_BACKEND_EPOLL 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__) || \
    defined(__DragonFly__)
#define ASYNCDISPATCH_BACKEND_KQUEUE 1
#elif defined(__sun)
#define ASYNCDISPATCH_BACKEND_EVENTPORTS 1
#elif defined(_WIN32)
#define ASYNCDISPATCH_BACKEND_IOCP 1
#else // any other POSIX system has poll(2); the stub is only ever chosen by name
#define ASYNCDISPATCH_BACKEND_POLL 1
#endif
#endif

#if defined(ASYNCDISPATCH_BACKEND_EPOLL)
#include "../../platform/linux/selector.hpp"
#include "../../platform/posix/dispatcher.hpp"
#elif defined(ASYNCDISPATCH_BACKEND_KQUEUE)
#include "../../platform/bsd/selector.hpp"
#include "../../platform/posix/dispatcher.hpp"
#elif defined(ASYNCDISPATCH_BACKEND_EVENTPORTS)
#include "../../platform/illumos/selector.hpp"
#include "../../platform/posix/dispatcher.hpp"
#elif defined(ASYNCDISPATCH_BACKEND_POLL)
#include "../../platform/poll/selector.hpp"
#include "../../platform/posix/dispatcher.hpp"
#elif defined(ASYNCDISPATCH_BACKEND_STUB)
#include "../../platform/stub/selector.hpp"
#include "../../platform/posix/dispatcher.hpp"
#elif defined(ASYNCDISPATCH_BACKEND_IOCP)
#include "../../platform/windows/dispatcher.hpp"
#else
#error "this backend is not written yet: see the platform matrix in README.md"
#endif
