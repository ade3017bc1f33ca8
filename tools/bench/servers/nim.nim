# Nim's own asyncdispatch echo, the program this library reimplements: one async proc per
# connection over a raw AsyncFD, the same shape as tools/echo_server.cpp.
import std/[asyncdispatch, nativesockets, os, strutils]
from std/posix import TCP_NODELAY

proc handle(client: AsyncFD) {.async.} =
  while true:
    let data = await recv(client, 16384)
    if data.len == 0: # the peer closed
      closeSocket(client)
      return
    await send(client, data)

proc serve(server: AsyncFD) {.async.} =
  while true:
    let client = await accept(server)
    # every server in the bench answers without Nagle's delay
    client.SocketHandle.setSockOptInt(IPPROTO_TCP.cint, TCP_NODELAY, 1)
    asyncCheck handle(client)

proc listenOn(port: Port): AsyncFD =
  result = createAsyncNativeSocket()
  let fd = result.SocketHandle
  fd.setSockOptInt(SOL_SOCKET, SO_REUSEADDR, 1)
  let ai = getAddrInfo("127.0.0.1", port, AF_INET)
  defer: freeAddrInfo(ai)
  if fd.bindAddr(ai.ai_addr, ai.ai_addrlen.SockLen) != 0 or fd.listen(SOMAXCONN) != 0:
    raiseOSError(osLastError())

when isMainModule:
  if paramCount() != 1:
    quit("usage: server_nim PORT", 2)
  let server = listenOn(Port(parseInt(paramStr(1))))
  stderr.writeLine("server_nim: listening on 127.0.0.1:", paramStr(1))
  asyncCheck serve(server)
  runForever()
