// Memory for future states and coroutine frames, recycled per thread as asio recycles the memory
// of its handlers: in the steady state a coroutine call or a new future costs no trip to malloc.
// The fast paths are inline (a coroutine call makes two blocks and frees two); the rest, and the
// free lists' lifetime, are in src/recycler.cpp.
#pragma once

#include <cstddef>
#include <new>

namespace asyncdispatch::detail {

struct Recycler {
  // Sizes are rounded up to a multiple of kGranule. Eight, not malloc's alignment of sixteen:
  // glibc adds an 8-byte header and rounds the sum to 16, so a 72-byte state takes an 80-byte
  // chunk where a 16-byte class would have asked for 80 and got 96. Blocks up to
  // kLargest bytes are recycled, at most kKeptPerClass of each size, which is enough for a burst
  // of calls and bounds what an idle thread holds.
  static constexpr std::size_t kGranule = 8;
  static constexpr std::size_t kLargest = 1024;
  static constexpr std::size_t kClasses = kLargest / kGranule;
  static constexpr int kKeptPerClass = 64;

  struct FreeBlock {
    FreeBlock* next;
  };

  FreeBlock* head[kClasses];
  int count[kClasses];

  static constexpr std::size_t sizeClass(std::size_t size) {
    return (size + kGranule - 1) / kGranule - 1;
  }
};

// This thread's lists. A thread that has none of its own (before its first slow path, and from
// its exit on) points at a shared recycler that is empty and full at once, so that both fast
// paths send it to the slow path; src/recycler.cpp explains why the lists live on the heap.
extern constinit thread_local Recycler* recycler;

void* allocateBlockSlow(std::size_t size);
void freeBlockSlow(void* block, std::size_t size) noexcept;

// A block of at least `size` bytes, aligned for any type; freeBlock must get the same size.
inline void* allocateBlock(std::size_t size) {
  if (size != 0 && size <= Recycler::kLargest) {
    Recycler& lists = *recycler;
    const std::size_t c = Recycler::sizeClass(size);
    if (Recycler::FreeBlock* b = lists.head[c]) {
      lists.head[c] = b->next;
      --lists.count[c];
      return b;
    }
  }
  return allocateBlockSlow(size);
}

inline void freeBlock(void* block, std::size_t size) noexcept {
  if (block != nullptr && size != 0 && size <= Recycler::kLargest) {
    Recycler& lists = *recycler;
    const std::size_t c = Recycler::sizeClass(size);
    if (lists.count[c] < Recycler::kKeptPerClass) {
      lists.head[c] = ::new (block) Recycler::FreeBlock{lists.head[c]};
      ++lists.count[c];
      return;
    }
  }
  freeBlockSlow(block, size);
}

} // namespace asyncdispatch::detail
