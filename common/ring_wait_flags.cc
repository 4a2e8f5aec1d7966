#include "common/ring_wait_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, ring_wait, "adaptive",
          "How a waiter on the activation ring waits: \"adaptive\" spins up to --ring-spin-us "
          "only while recent waits were short, spins caught them and a core is free, else "
          "sleeps; \"fixed\" spins --ring-spin-us every time (0: always sleeps at once, the "
          "behaviour before the adaptive wait)");
ABSL_FLAG(double, ring_spin_us, 200,
          "Activation ring: the most microseconds a wait spins before it sleeps, in [0, 10000] "
          "(0: never spins)");

namespace moe::ring {

absl::StatusOr<WaitOptions> WaitOptionsFromFlags() {
  return ParseWaitOptions(absl::GetFlag(FLAGS_ring_wait), absl::GetFlag(FLAGS_ring_spin_us));
}

}  // namespace moe::ring
