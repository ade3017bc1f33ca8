// The 2015-era names of Nim's older asyncdispatch documentation, as aliases of today's.
#pragma once

#include "../asyncdispatch.hpp"

namespace asyncdispatch {

using TAsyncFD = AsyncFD;
using TCallback = Callback;

#if defined(ASYNCDISPATCH_BACKEND_IOCP) // the IOCP dispatcher's own types (Nim's Windows names)
using PCustomOverlapped = CustomRef;
using TCompletionData = CompletionData;
#endif

// Nim's old newAsyncRawSocket, today's createAsyncNativeSocket.
inline AsyncFD newAsyncRawSocket(Domain domain = Domain::Inet, SockType sockType = SockType::Stream,
                                 Protocol protocol = Protocol::TCP) {
  return createAsyncNativeSocket(domain, sockType, protocol);
}

} // namespace asyncdispatch
