// A routing trace: which experts a trained model's routers chose, token by token and
// layer by layer. The Mixtral-scale benchmark replays one (recorded from the bundled
// model by record_routing) so that its cache figures reflect trained routing rather than
// the near-uniform, layer-local routing of random weights.
//
// Text format, '#' lines are comments:
//   tokens T layers L experts E top_k K
//   then T lines of L * K expert ids: layer 0's K ids, layer 1's, ...
#ifndef MOE_BENCH_ROUTING_TRACE_H_
#define MOE_BENCH_ROUTING_TRACE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moe::bench {

struct RoutingTrace {
  int tokens = 0, layers = 0, experts = 0, top_k = 0;
  std::vector<int32_t> ids;  // [tokens, layers, top_k]

  // The top_k ids of `token` at `layer`.
  absl::Span<const int32_t> At(int token, int layer) const {
    return absl::MakeConstSpan(ids).subspan((size_t(token) * layers + layer) * top_k, top_k);
  }
  // The choice for layer `layer` of a model with more layers than the trace: trace layer
  // layer % layers, with the token shifted by a different offset for each repetition so
  // that repeated layers do not route in lockstep (each keeps the trained per-layer
  // temporal locality the cache feeds on).
  absl::Span<const int32_t> Scaled(int token, int layer) const {
    const int rep = layer / layers;
    return At((token + rep * 97) % tokens, layer % layers);
  }

  static absl::StatusOr<RoutingTrace> Parse(const std::string& text, const std::string& source);
  static absl::StatusOr<RoutingTrace> Load(const std::string& path);
  std::string Serialize(const std::string& comment) const;
};

}  // namespace moe::bench

#endif  // MOE_BENCH_ROUTING_TRACE_H_
