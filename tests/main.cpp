// The test runner: doctest's own main. Each tests/<component>.cpp registers its cases.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
