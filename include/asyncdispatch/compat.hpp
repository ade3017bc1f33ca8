// The 2015-era names of Nim's older asyncdispatch documentation, as aliases of today's.
#pragma once

#include "../asyncdispatch.hpp"

namespace asyncdispatch {

using TAsyncFD = AsyncFD;   ///< Nim's TAsyncFD, now AsyncFD
using TCallback = Callback; ///< Nim's TCallback, now Callback

#if defined(ASYNCDISPATCH_BACKEND_IOCP) // the IOCP dispatcher's own types (Nim's Windows names)
using PCustomOverlapped = CustomRef;    ///< Nim's PCustomOverlapped, now CustomRef
using TCompletionData = CompletionData; ///< Nim's TCompletionData, now CompletionData
#endif

/// Nim's old newAsyncRawSocket, today's createAsyncNativeSocket.
inline AsyncFD newAsyncRawSocket(Domain domain = Domain::Inet, SockType sockType = SockType::Stream,
                                 Protocol protocol = Protocol::TCP) {
  return createAsyncNativeSocket(domain, sockType, protocol);
}

} // namespace asyncdispatch
