// Speculative expert loading (Eliseev & Mazur): after layer L's attention, the gates of
// layers L+1..L+lookahead applied to the current hidden state (each through its own
// post-attention norm) guess those layers' experts. Layers are expert layers
// (ModelConfig::ExpertLayer): a family's dense layers are skipped, as they have no
// experts to load; the top `experts` per row are sent
// to the expert backend as Prefetch hints while layer L computes, and each guess is
// scored once its layer's router has chosen. Guessing never changes what the forward
// pass computes: it only moves copies earlier.
#ifndef MOE_COORDINATOR_SPECULATOR_H_
#define MOE_COORDINATOR_SPECULATOR_H_

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/backend/device.h"
#include "common/backend/kernels.h"
#include "common/expert_backend.h"
#include "common/model_config.h"
#include "coordinator/device_scratch.h"
#include "coordinator/device_weights.h"

namespace moe::coordinator {

inline constexpr int kMaxLookahead = 8;
struct SpeculationOptions {
  int lookahead = 0;  // layers ahead to guess, in [0, kMaxLookahead]; 0 turns it off
  int experts = 2;    // experts prefetched per token and guessed layer, >= 1
};

// How good the guesses were: a guess for layer L counts as used when layer L's router
// then picks it for the same token.
struct GuessScore {
  uint64_t scored = 0;  // (token, expert) guesses compared with the router's choice
  uint64_t needed = 0;  // router choices that had a guess
  uint64_t hits = 0;    // guesses the router then chose
  double recall() const { return needed ? double(hits) / needed : 0; }
  double precision() const { return scored ? double(hits) / scored : 0; }
  GuessScore& operator+=(const GuessScore& o) {
    scored += o.scored;
    needed += o.needed;
    hits += o.hits;
    return *this;
  }
};

struct SpeculationStats {
  uint64_t hinted = 0;  // (token, layer, expert) guesses sent as prefetch hints
  // The nearest guess of each layer (made one layer before when lookahead >= 1).
  GuessScore nearest;
  // by_distance[d - 1]: guesses made d layers ahead of the layer they are for.
  std::array<GuessScore, kMaxLookahead> by_distance{};
  double recall() const { return nearest.recall(); }
  double precision() const { return nearest.precision(); }
  SpeculationStats& operator+=(const SpeculationStats& o);
};

// The speculation of one forward pass over n rows. Not thread-safe; one per pass. With
// lookahead 0 every call does nothing.
class Speculator {
 public:
  // The pass's scratch for guessing: device [n, H] + [n, E] + [lookahead, n, m] + [n, m],
  // pinned host [lookahead, n, m].
  struct Buffers {
    float* xn = nullptr;
    float* logits = nullptr;
    int32_t* ids = nullptr;
    float* weights = nullptr;
    int32_t* host_ids = nullptr;
  };
  // Experts guessed per row: options.experts, at most the layer's experts.
  static int GuessWidth(const ModelConfig& config, const SpeculationOptions& options);
  // Lays out (or, over null carvers' bases, sizes) the buffers of `options` for n rows.
  static Buffers Carve(const ModelConfig& config, const SpeculationOptions& options, int64_t n,
                       ScratchCarver& device, ScratchCarver& host);

  // Everything passed in must outlive the speculator; `buffers` from Carve with the same
  // options and n.
  static absl::StatusOr<Speculator> Create(const ModelConfig& config, const DeviceWeights& weights,
                                           backend::Kernels& kernels, backend::Device& device,
                                           ExpertBackend& experts,
                                           const SpeculationOptions& options, int64_t n,
                                           const Buffers& buffers);

  // Queues on `stream` the guesses for layers layer+1 .. layer+lookahead from the
  // residual stream x[n, H] after `layer`'s attention, and their copy to the host.
  absl::Status Guess(int layer, const float* x, backend::Stream& stream);
  // Waits for the guesses of the last Guess(layer) and sends them as Prefetch hints,
  // nearest first (it is needed soonest; a round for a layer supersedes an older,
  // farther one).
  absl::Status Hint(int layer);
  // Scores every guess made for `layer` against the router's ids [n, k], by distance.
  void Score(int layer, absl::Span<const int32_t> route_ids);

  const SpeculationStats& stats() const { return stats_; }

 private:
  Speculator() = default;

  const ModelConfig* config_ = nullptr;
  const DeviceWeights* weights_ = nullptr;
  backend::Kernels* kernels_ = nullptr;
  backend::Device* device_ = nullptr;
  ExpertBackend* experts_ = nullptr;
  int lookahead_ = 0;
  int m_ = 0;  // experts guessed per row
  int64_t n_ = 0;
  Buffers b_;
  std::unique_ptr<backend::Event> guessed_;  // behind the guesses' copies to the host
  int pending_ = 0;  // layers guessed by the last Guess, not yet hinted
  // guesses_[d - 1][layer]: the ids guessed d layers ahead for each row, [n, m]; empty:
  // no guess.
  std::vector<std::vector<std::vector<int32_t>>> guesses_;
  SpeculationStats stats_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_SPECULATOR_H_
