// Random weights of any Mixtral-shaped config, generated in memory: what the Mixtral-8x7B
// scale benchmark runs on (no 90 GB download, no disk). Values are uniform with the
// spread of a trained Linear layer (std 1/sqrt(fan_in)), so activations stay O(1) across
// 32 layers; random weights do not route like a trained model (see the benchmark for the
// replayed routing that stands in for it). Deterministic for a given seed, whatever the
// thread count.
#ifndef MOE_BENCH_SYNTHETIC_WEIGHTS_H_
#define MOE_BENCH_SYNTHETIC_WEIGHTS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/quant/quant_format.h"
#include "coordinator/dense_weights.h"

namespace moe::bench {

// Fills `layout.total_bytes` bytes at `dst` with a valid random matrix of that layout:
// random codes, scale/zero codes and meta parameters (quantized), or random 16-bit
// values, all with std ~ 1/sqrt(cols).
void FillRandomMatrix(const quant::MatrixLayout& layout, uint64_t seed, uint8_t* dst);

// Random fp32 values, uniform with standard deviation `std`.
void FillRandomFloats(float* dst, int64_t count, float std, uint64_t seed);

// Every dense weight of `config`: attention projections stored as `attn` says (bits 32:
// fp32; 16: raw 16-bit; 2/3/4/8: packed), the embedding table and LM head in 16 bits (fp32
// when attn_bits is 32), norms near 1 and routers in fp32.
absl::StatusOr<coordinator::DenseWeights> RandomDenseWeights(const ModelConfig& config,
                                                             int attn_bits,
                                                             int64_t group_size,
                                                             uint64_t seed);

// DeviceWeights::Bytes of RandomDenseWeights(config, attn_bits, group_size, any seed), from
// the shapes alone (one plan of the tensors serves both): a budget without the gigabytes.
absl::StatusOr<int64_t> RandomDenseWeightsBytes(const ModelConfig& config, int attn_bits,
                                                int64_t group_size);

}  // namespace moe::bench

#endif  // MOE_BENCH_SYNTHETIC_WEIGHTS_H_
