// What lets trigger, the one call made from other threads, race close(ev) on the owner's thread.
// A trigger that read the event's descriptor just before a close would signal a closed descriptor
// (EBADF, an invalid handle), or worse whatever the number belongs to next (libuv PR #2231). So
// each trigger passes the gate for its one system call, and close shuts the gate and waits for
// the triggers already through before it closes the descriptor. Every backend's events use it.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace asyncdispatch::detail {

class TriggerGate {
public:
  // Holds the gate open for one trigger; false once close has begun (the trigger must throw).
  bool enter() noexcept {
    if ((through_.fetch_add(1, std::memory_order_acquire) & kShut) == 0) return true;
    leave();
    return false;
  }
  void leave() noexcept { through_.fetch_sub(1, std::memory_order_release); }
  // Shuts the gate and waits for the triggers already through: one system call each, so short.
  void shut() noexcept {
    through_.fetch_or(kShut, std::memory_order_acq_rel);
    while ((through_.load(std::memory_order_acquire) & ~kShut) != 0)
      std::this_thread::yield();
  }

private:
  static constexpr std::uint32_t kShut = 1u << 31;
  std::atomic<std::uint32_t> through_{0}; // triggers in flight, plus kShut once close has begun
};

// One trigger's passage, left on every path (its system call's error included).
class TriggerPass {
public:
  explicit TriggerPass(TriggerGate& gate) noexcept : gate_(gate) {}
  TriggerPass(const TriggerPass&) = delete;
  TriggerPass& operator=(const TriggerPass&) = delete;
  ~TriggerPass() { gate_.leave(); }

private:
  TriggerGate& gate_;
};

} // namespace asyncdispatch::detail
