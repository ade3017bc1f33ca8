// A multi-core echo server: one dispatcher per thread, each with its own listening socket bound to
// the same port with SO_REUSEPORT, so the kernel spreads the connections over the threads and
// the threads share nothing but an AsyncEvent each, which stops them.
//
//   build/bin/reuseport_echo PORT THREADS [ADDRESS]   (PORT 0: the kernel picks one; ADDRESS
//                                                       defaults to 127.0.0.1)
//
// SIGINT or SIGTERM stops it: the main thread watches both with addSignal and triggers each
// worker's stop event; a worker then closes its listener and its connections, and returns.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <exception>
#include <future>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <asyncdispatch.hpp>

using namespace asyncdispatch;

namespace {

// One worker's state; it lives on its thread's stack for as long as the thread runs.
struct Worker {
  AsyncFD listener{-1};
  std::set<AsyncFD> clients;
  bool stopping = false;
};

// Echoes one connection until the peer closes it or the worker stops.
Future<void> echo(Worker& w, AsyncFD client) {
  char buffer[16384];
  try {
    for (;;) {
      const int n = co_await recvInto(client, buffer, sizeof buffer);
      // The peer closed, or the data arrived in the pass that stopped the worker: the stop closed
      // this connection before this coroutine could resume.
      if (n == 0 || w.stopping) break;
      co_await send(client, buffer, n);
    }
  } catch (const OSError&) {
    // The worker closed the connection to stop, or the peer reset it.
  }
  if (w.clients.erase(client) != 0) closeSocket(client);
}

Future<void> serve(Worker& w) {
  while (!w.stopping) {
    AsyncFD client{-1};
    try {
      client = co_await accept(w.listener);
    } catch (const OSError&) {
      co_return; // the worker closed the listener to stop
    }
    if (w.stopping) { // accepted in the pass that stopped the worker, after the stop ran
      closeSocket(client);
      co_return;
    }
    setSockOptInt(client, IPPROTO_TCP, TCP_NODELAY, 1); // answer without Nagle's delay
    w.clients.insert(client);
    asyncCheck(echo(w, client));
  }
}

// A worker thread: its own dispatcher (the global one is per thread), its own listener on the
// shared port. `started` gets the bound port, or the error that kept the worker from starting.
void runWorker(std::string address, Port port, AsyncEvent stop, std::promise<Port>& started) {
  Worker w;
  try {
    w.listener = createAsyncNativeSocket();
    setSockOptInt(w.listener, SOL_SOCKET, SO_REUSEPORT, 1); // before bind: the shared port
    bindAddr(w.listener, port, address);
    listen(w.listener);
    addEvent(stop, [&w](AsyncFD) {
      w.stopping = true;
      closeSocket(w.listener); // fails the pending accept: serve returns
      for (AsyncFD client : std::exchange(w.clients, {}))
        closeSocket(client); // fails each pending recv or send: echo returns
      return true;
    });
    started.set_value(getLocalAddr(w.listener).second);
  } catch (...) {
    started.set_exception(std::current_exception());
    return;
  }
  asyncCheck(serve(w));
  drain(-1); // until nothing is pending: stopped, and every coroutine has returned
}

int usage() {
  std::cerr << "usage: reuseport_echo PORT THREADS [ADDRESS]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) return usage();
  const int port = std::atoi(argv[1]);
  const int threads = std::atoi(argv[2]);
  const std::string address = argc == 4 ? argv[3] : "127.0.0.1";
  if (port < 0 || port > 65535 || threads < 1 || threads > 1024) return usage();

  // Block the stop signals before any thread starts: every thread inherits the mask, so the
  // signals wait for the main thread's addSignal instead of killing the process in whichever
  // thread the kernel picks.
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  sigaddset(&stopSignals, SIGINT);
  sigaddset(&stopSignals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);

  std::vector<AsyncEvent> stops;
  std::vector<std::thread> workers;
  std::vector<std::promise<Port>> started(static_cast<std::size_t>(threads));
  int status = 0;
  Port bound = Port(port);
  // The first worker binds first, so that with PORT 0 the others join the port it was given.
  for (int i = 0; i < threads && status == 0; ++i) {
    stops.push_back(newAsyncEvent());
    workers.emplace_back(runWorker, address, bound, stops.back(), std::ref(started[i]));
    try {
      bound = started[i].get_future().get();
    } catch (const std::exception& e) {
      std::cerr << "reuseport_echo: worker " << i << ": " << e.what() << "\n";
      status = 1;
    }
  }

  bool stopping = status != 0;
  if (!stopping) {
    std::cout << "reuseport_echo: listening on " << address << ":" << static_cast<int>(bound)
              << " with " << threads << " threads" << std::endl;
    auto stop = [&stopping](AsyncFD) {
      stopping = true;
      return true;
    };
    addSignal(SIGINT, stop);
    addSignal(SIGTERM, stop);
    while (!stopping)
      poll(-1);
  }
  for (const AsyncEvent& ev : stops)
    trigger(ev);
  for (std::thread& t : workers)
    t.join();
  for (const AsyncEvent& ev : stops)
    close(ev);
  if (status == 0) std::cout << "reuseport_echo: stopped" << std::endl;
  return status;
}
