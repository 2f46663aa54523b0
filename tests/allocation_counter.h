// allocations_in: how many heap allocations a piece of test code makes, so
// that a test can prove a hot path (an executor's run, an optimizer's step,
// a data set's next batch) allocates nothing.
#pragma once

#include <cstdint>
#include <functional>

namespace pf::testing_support {

/// The global operator new calls (of any form, on any thread) made while
/// `body` runs. A test program that calls it links the counting operators
/// new and delete of allocation_counter.cpp in place of the library's.
int64_t allocations_in(const std::function<void()>& body);

}  // namespace pf::testing_support
