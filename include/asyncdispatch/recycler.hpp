// Memory for future states and coroutine frames, recycled per thread as asio recycles the memory
// of its handlers: in the steady state a coroutine call or a new future costs no trip to malloc.
#pragma once

#include <cstddef>

namespace asyncdispatch::detail {

// A block of at least `size` bytes, aligned for any type; freeBlock must get the same size.
void* allocateBlock(std::size_t size);
void freeBlock(void* block, std::size_t size) noexcept;

} // namespace asyncdispatch::detail
