// asyncdispatch for C++: everything a user includes. See README.md for a tour and the Nim -> C++
// table, and CONTRIBUTING.md for the layout and the backend contract.
#pragma once

#include "asyncdispatch/errors.hpp"
#include "asyncdispatch/types.hpp"
#include "asyncdispatch/future.hpp"
#include "asyncdispatch/combinators.hpp"
#include "asyncdispatch/dispatcher.hpp"
#include "asyncdispatch/backend.hpp"
#include "asyncdispatch/net.hpp"
#include "asyncdispatch/events.hpp"
#include "asyncdispatch/stream.hpp"

/// \mainpage asyncdispatch for C++
/// Nim's asyncdispatch in C++20, under Nim's names: each page cites the Nim proc a name mirrors.
/// Start at the asyncdispatch namespace; README.md has the tour and the Nim -> C++ table.

/// \namespace asyncdispatch
/// Nim's asyncdispatch module, with the parts of asyncfutures and asyncstreams it re-exports.
