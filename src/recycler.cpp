// The per-thread recycler behind future states and coroutine frames: its slow paths, and the
// emptying of its free lists when the thread exits (the fast paths are in recycler.hpp).
#include "../include/asyncdispatch/recycler.hpp"

#include <new>

namespace asyncdispatch::detail {

constinit thread_local Recycler recycler{};

namespace {

// Empties the free lists when the thread exits; from then on blocks come from and go back to the
// global heap.
struct Closer {
  ~Closer() {
    recycler.closed = true;
    for (std::size_t c = 0; c < Recycler::kClasses; ++c) {
      while (Recycler::FreeBlock* b = recycler.head[c]) {
        recycler.head[c] = b->next;
        ::operator delete(b);
      }
      recycler.count[c] = Recycler::kKeptPerClass; // full: freeBlock takes the slow path
    }
  }
};
thread_local Closer closer;

} // namespace

void* allocateBlockSlow(std::size_t size) {
  if (size == 0 || size > Recycler::kLargest || recycler.closed) return ::operator new(size);
  (void)&closer; // makes sure the lists are emptied at thread exit
  // A whole class's size, so that the block can serve any later request of its class.
  return ::operator new((Recycler::sizeClass(size) + 1) * Recycler::kGranule);
}

void freeBlockSlow(void* block, std::size_t) noexcept {
  ::operator delete(block);
}

} // namespace asyncdispatch::detail
