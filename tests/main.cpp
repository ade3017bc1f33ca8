// The test runner: doctest's own main. Each tests/<component>.cpp registers its cases. Before
// doctest runs, the cases this platform's build leaves out are printed with their reasons, which
// the test files give where they compile them out (testsupport::compiledOut). On Windows, which
// has no fork(), the same executable is also the child process of the addProcess tests
// (tests/processes.cpp starts it with the arguments below), recognised before doctest runs.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "support.hpp"

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

// "compiled out here: <what>: <why>", one line each, ordered by file whatever the link order
// (each `what` starts with its file), and within a file in the order of its sites.
void printCompiledOut() {
  std::vector<testsupport::CompiledOut> list = testsupport::compiledOutList();
  const auto file = [](const std::string& what) { return what.substr(0, what.find(':')); };
  std::stable_sort(list.begin(), list.end(),
                   [&](const auto& a, const auto& b) { return file(a.what) < file(b.what); });
  for (const testsupport::CompiledOut& out : list)
    std::printf("compiled out here: %s: %s\n", out.what.c_str(), out.why.c_str());
  std::fflush(stdout);
}

} // namespace

int main(int argc, char** argv) {
  const int childCode = runAsChild(argc, argv);
  if (childCode >= 0) return childCode;
  printCompiledOut();
  doctest::Context context(argc, argv);
  return context.run();
}
