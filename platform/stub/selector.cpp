// The stub backend: every function of the contract, in the contract's order, says that this OS
// has no backend yet.
#include "selector.hpp"

#include <cerrno>
#include <string>

#include "../../include/asyncdispatch/errors.hpp"

namespace asyncdispatch {

namespace {

[[noreturn]] void unsupported(const char* function) {
  throw OSError(ENOSYS, function, "not supported on this OS");
}

} // namespace

SelectEvent::SelectEvent() {
  unsupported("newSelectEvent");
}

void SelectEvent::trigger() const {
  unsupported("trigger");
}

void SelectEvent::close() {
  unsupported("close");
}

template <class T>
Selector<T>::Selector() {
  unsupported("newSelector");
}

template <class T>
void Selector<T>::registerHandle(SocketHandle, EventSet, T) {
  unsupported("registerHandle");
}

template <class T>
void Selector<T>::updateHandle(SocketHandle, EventSet) {
  unsupported("updateHandle");
}

template <class T>
void Selector<T>::unregister(SocketHandle) {
  unsupported("unregister");
}

template <class T>
SocketHandle Selector<T>::registerTimer(int, bool, T) {
  unsupported("registerTimer");
}

template <class T>
SocketHandle Selector<T>::registerSignal(int, T) {
  unsupported("registerSignal");
}

template <class T>
SocketHandle Selector<T>::registerProcess(int, T) {
  unsupported("registerProcess");
}

template <class T>
void Selector<T>::registerEvent(SelectEvent&, T) {
  unsupported("registerEvent");
}

template <class T>
void Selector<T>::unregister(SelectEvent&) {
  unsupported("unregister");
}

template <class T>
int Selector<T>::selectInto(int, std::span<ReadyKey>) {
  unsupported("selectInto");
}

template <class T>
bool Selector<T>::contains(SocketHandle) const {
  unsupported("contains");
}

template <class T>
T& Selector<T>::getData(SocketHandle) {
  unsupported("getData");
}

template <class T>
void Selector<T>::dump(std::ostream&) const {
  unsupported("dump");
}

// Nothing to forget, and nothing to say "not supported" from: no stub Selector is ever made (its
// constructor throws), and a porter's forgetAfterFork must not throw.
template <class T>
void Selector<T>::forgetAfterFork() noexcept {}

template <class T>
bool Selector<T>::isCurrent(const ReadyKey&) const {
  unsupported("isCurrent");
}

template class Selector<PData>;
static_assert(SelectorBackend<Selector<PData>>);

} // namespace asyncdispatch
