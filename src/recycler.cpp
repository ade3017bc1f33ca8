// The per-thread recycler behind future states and coroutine frames (recycler.hpp).
#include "../include/asyncdispatch/recycler.hpp"

#include <new>

namespace asyncdispatch::detail {

namespace {

// Sizes are rounded up to a multiple of kGranule (malloc's own alignment, so rounding wastes
// nothing malloc would not); blocks up to kLargest bytes are recycled, at most kKeptPerClass of
// each size, which is enough for a burst of calls and bounds what an idle thread holds
// (64 classes x 64 blocks x at most 1 KiB: under 2.1 MiB, and far less in practice).
constexpr std::size_t kGranule = 16;
constexpr std::size_t kLargest = 1024;
constexpr std::size_t kClasses = kLargest / kGranule;
constexpr int kKeptPerClass = 64;

struct FreeBlock {
  FreeBlock* next;
};

// Constant-initialised, so usable at any point of the thread's life, even while other
// thread_local objects are being destroyed.
struct FreeLists {
  FreeBlock* head[kClasses];
  int count[kClasses];
  bool closed; // the thread is exiting: blocks go back to the global heap
};
thread_local FreeLists lists{};

// Empties the free lists when the thread exits.
struct Closer {
  ~Closer() {
    lists.closed = true;
    for (std::size_t c = 0; c < kClasses; ++c) {
      while (FreeBlock* b = lists.head[c]) {
        lists.head[c] = b->next;
        ::operator delete(b);
      }
    }
  }
};
thread_local Closer closer;

std::size_t sizeClass(std::size_t size) {
  return (size + kGranule - 1) / kGranule - 1;
}

} // namespace

void* allocateBlock(std::size_t size) {
  if (size == 0 || size > kLargest || lists.closed) return ::operator new(size);
  const std::size_t c = sizeClass(size);
  if (FreeBlock* b = lists.head[c]) {
    lists.head[c] = b->next;
    --lists.count[c];
    return b;
  }
  (void)&closer; // makes sure the lists are emptied at thread exit
  return ::operator new((c + 1) * kGranule);
}

void freeBlock(void* block, std::size_t size) noexcept {
  if (block == nullptr) return;
  if (size == 0 || size > kLargest || lists.closed) {
    ::operator delete(block);
    return;
  }
  const std::size_t c = sizeClass(size);
  if (lists.count[c] >= kKeptPerClass) {
    ::operator delete(block);
    return;
  }
  lists.head[c] = ::new (block) FreeBlock{lists.head[c]};
  ++lists.count[c];
}

} // namespace asyncdispatch::detail
