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
