// Counting replacements of the global allocation functions, for the bench programs that report
// allocations (the array and nothrow forms of libstdc++ call these).
#include <cstdlib>
#include <new>

#include "harness.hpp"

thread_local long bench::allocations = 0;
thread_local long bench::allocatedBytes = 0;

void* operator new(std::size_t size) {
  ++bench::allocations;
  bench::allocatedBytes += static_cast<long>(size);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
