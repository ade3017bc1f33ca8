// The test runner: doctest's own main. Each tests/<component>.cpp registers its cases. On Windows,
// which has no fork(), the same executable is also the child process of the addProcess tests
// (tests/processes.cpp starts it with the arguments below), recognised before doctest runs.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#if defined(_WIN32)
#include <windows.h>

#include <cstdlib>
#include <string>
#endif

namespace {

#if defined(_WIN32)
// `--child-exit=CODE [--child-gate=NAME]`: exits with CODE, once the named event is set when there
// is one (a gate that no longer exists is open). Returns -1 when the arguments ask for no child.
int runAsChild(int argc, char** argv) {
  const std::string exitFlag = "--child-exit=";
  const std::string gateFlag = "--child-gate=";
  int code = -1;
  std::string gate;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind(exitFlag, 0) == 0) code = std::atoi(arg.c_str() + exitFlag.size());
    if (arg.rfind(gateFlag, 0) == 0) gate = arg.substr(gateFlag.size());
  }
  if (code < 0) return -1;
  if (!gate.empty()) {
    const HANDLE event = OpenEventA(SYNCHRONIZE, FALSE, gate.c_str());
    if (event != nullptr) {
      WaitForSingleObject(event, INFINITE);
      CloseHandle(event);
    }
  }
  return code;
}
#else
int runAsChild(int, char**) {
  return -1;
}
#endif

} // namespace

int main(int argc, char** argv) {
  const int childCode = runAsChild(argc, argv);
  if (childCode >= 0) return childCode;
  doctest::Context context(argc, argv);
  return context.run();
}
