// The per-thread recycler behind future states and coroutine frames: its slow paths, and the
// lifetime of its free lists (the fast paths are in recycler.hpp).
//
// The lists live on the heap, not in the thread_local itself, for the reason the thread's
// dispatcher does (src/dispatcher.cpp, GlobalDispatcher): under MinGW-w64 every thread_local
// lives in emulated TLS, which winpthreads frees before the thread's thread_local destructors
// run, and a destructor then reads each thread_local as freshly initialised. Lists kept in a
// thread_local would be gone by the time a destructor could empty them, and their blocks leaked.
// So the thread_local is only a pointer to them; the lists are also listed by thread id, and
// the destructor that empties them at thread exit finds them that way, reading nothing of its own.
#include "../include/asyncdispatch/recycler.hpp"
#include "loop.hpp"

#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_map>

namespace asyncdispatch::detail {

namespace {

constexpr Recycler fullAndEmpty() {
  Recycler r{};
  for (int& c : r.count)
    c = Recycler::kKeptPerClass;
  return r;
}

// The recycler of a thread that has not made its lists yet, and of one whose lists are gone (its
// exit): never written, since neither fast path passes its tests. Two, so that the slow path
// knows which case it is in.
constinit Recycler unopened = fullAndEmpty();
constinit Recycler exited = fullAndEmpty();

// Every thread's lists, by thread. Never destroyed: a thread may exit after static destructors
// have run.
struct AllLists {
  std::mutex lock;
  std::unordered_map<std::thread::id, Recycler*> byThread;
};
AllLists& allLists() {
  static AllLists* const all = new AllLists;
  return *all;
}

// Empties this thread's lists and frees them, found by thread id; from then on its blocks come
// from and go back to the global heap.
struct Closer {
  ~Closer() {
    Recycler* lists = nullptr;
    {
      AllLists& all = allLists();
      const std::lock_guard<std::mutex> locked(all.lock);
      const auto it = all.byThread.find(std::this_thread::get_id());
      if (it == all.byThread.end()) return;
      lists = it->second;
      all.byThread.erase(it);
    }
    recycler = &exited; // first: a block freed later must not land in the lists going away
    for (std::size_t c = 0; c < Recycler::kClasses; ++c) {
      while (Recycler::FreeBlock* b = lists->head[c]) {
        lists->head[c] = b->next;
        ::operator delete(b);
      }
    }
    delete lists;
  }
};
thread_local Closer closer;

// Makes this thread's lists on its first slow path. False when the thread has lists already,
// listed under its id: its thread_local was reset under it because the thread is exiting (the
// MinGW case above), and new lists would never be emptied.
bool openLists() {
  auto lists = std::make_unique<Recycler>(); // value-initialised: empty, nothing kept
  {
    AllLists& all = allLists();
    const std::lock_guard<std::mutex> locked(all.lock);
    if (!all.byThread.try_emplace(std::this_thread::get_id(), lists.get()).second) return false;
  }
  (void)&closer; // makes sure the lists are emptied at thread exit
  recycler = lists.release();
  return true;
}

} // namespace

constinit thread_local Recycler* recycler = &unopened;

void* allocateBlockSlow(std::size_t size) {
  if (size == 0 || size > Recycler::kLargest) return ::operator new(size);
  if (recycler == &unopened) (void)openLists();
  // A whole class's size, so that the block can serve any later request of its class, also when
  // it is freed into the lists of another thread or of this one's later life.
  return ::operator new((Recycler::sizeClass(size) + 1) * Recycler::kGranule);
}

void freeBlockSlow(void* block, std::size_t) noexcept {
  ::operator delete(block);
}

// Held across fork() (prepareFork): a thread making or freeing its lists meanwhile would leave
// the child's copy locked for good.
void lockRecycler() noexcept {
  allLists().lock.lock();
}

void unlockRecycler() noexcept {
  allLists().lock.unlock();
}

} // namespace asyncdispatch::detail
