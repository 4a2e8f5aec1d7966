// The fuzzers' invariant check: libFuzzer reports an abort as a crash with its input,
// and this must hold in every build (assert vanishes under NDEBUG).
#ifndef MOE_TESTS_FUZZ_FUZZ_CHECK_H_
#define MOE_TESTS_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                        \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
                   #cond);                                                      \
      std::abort();                                                             \
    }                                                                           \
  } while (0)

#endif  // MOE_TESTS_FUZZ_FUZZ_CHECK_H_
