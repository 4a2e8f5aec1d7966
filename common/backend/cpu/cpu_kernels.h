// The CPU backend's kernels. Every kernel of a future device backend is validated
// against these. Layouts are row-major; shapes are given in brackets.
#ifndef MOE_COMMON_BACKEND_CPU_CPU_KERNELS_H_
#define MOE_COMMON_BACKEND_CPU_CPU_KERNELS_H_

#include <cstdint>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace moe::cpu {

// Whether an OpenMP region `#pragma omp parallel ... if (wanted)` would run on more than
// one thread here. An inactive region (its if false, or one thread) still costs libgomp
// a futex wake-up at its end: a system call per call, which the decode step paid per
// stream and layer in Attention and per product in the matrix kernels. Kernels run the
// loop directly when this says no (the same iterations in the same order).
bool OmpRegionPays(bool wanted);

// How ParallelFor deals iterations to threads: contiguous equal shares, or one at a time
// in turn (for iterations of uneven cost, such as a causal prefill's attention rows).
enum class Deal { kShares, kInTurn };

// body(i) for every i in [0, n): in an OpenMP region when OmpRegionPays(wanted), else
// directly on this thread, in order. Each iteration must be independent of the others,
// so that the threads change no bit.
template <typename Body>
void ParallelFor(int64_t n, bool wanted, Deal deal, Body&& body) {
  if (!OmpRegionPays(wanted)) {
    for (int64_t i = 0; i < n; ++i) body(i);
  } else if (deal == Deal::kInTurn) {
#pragma omp parallel for schedule(static, 1)
    for (int64_t i = 0; i < n; ++i) body(i);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

// How MatMulTransB runs. Process-wide, chosen once at start-up (bench compares them).
enum class MatmulImpl {
  kRows,   // the default: batch-invariant (rowwise_matmul.h), so a token's logits do not
           // depend on its batch mates; the quantized kernels then also multiply one
           // token at a time (QuantMatMulTransB)
  kBlas,   // OpenBLAS sgemm/sgemv: faster prefill, but a row's sums depend on n
  kLoops,  // OpenMP-parallel, compiler-vectorised loops
};
void SetMatmulImpl(MatmulImpl impl);
MatmulImpl GetMatmulImpl();
absl::StatusOr<MatmulImpl> ParseMatmulImpl(absl::string_view name);
absl::string_view MatmulImplName(MatmulImpl impl);

// y[n, m] (=|+=) x[n, k] · w[m, k]^T. `w` is laid out like torch.nn.Linear.weight.
void MatMulTransB(const float* x, const float* w, float* y, int64_t n, int64_t k, int64_t m,
                  bool accumulate = false);
// The plain triple loop, accumulating in double: the reference the others are tested
// against.
void MatMulTransBReference(const float* x, const float* w, float* y, int64_t n, int64_t k,
                           int64_t m);

// y[n, d] = x * rsqrt(mean(x^2) + eps) * weight[d]. In place is allowed (y == x).
void RmsNorm(const float* x, const float* weight, float* y, int64_t n, int64_t d, float eps);

// gate[i] = silu(gate[i]) * up[i] for i < count.
void SiluMul(float* gate, const float* up, int64_t count);

// In-place numerically stable softmax of x[n].
void Softmax(float* x, int64_t n);

// The router for one token: softmax over logits[n_experts], the k largest (ties go to
// the lower id, as torch.topk does on CPU); their probabilities as weights, renormalised
// to sum 1 when `renormalize` (Mixtral; Qwen/OLMoE's norm_topk_prob).
void TopKRouting(const float* logits, int64_t n_experts, int64_t k, int32_t* ids,
                 float* weights, bool renormalize = true);

// Index of the largest value (the first among equals).
int64_t ArgMax(const float* x, int64_t n);

// Rotary position embedding in Hugging Face's rotate-half convention. Immutable after
// construction; shared by all layers. Angles are computed per token in double (no
// position table: a config's context can be millions of positions).
class RopeTable {
 public:
  RopeTable(int64_t head_dim, double theta, int64_t max_positions);
  // x[n, heads, head_dim] rotated in place; token i is at position positions[i], which
  // must be below max_positions().
  void Apply(float* x, const int64_t* positions, int64_t n, int64_t heads) const;
  int64_t max_positions() const { return max_positions_; }
  int64_t head_dim() const { return head_dim_; }
  double theta() const { return theta_; }

 private:
  int64_t head_dim_;
  double theta_;
  int64_t max_positions_;
  std::vector<double> inv_freq_;  // [head_dim / 2]: theta^(-2i / head_dim)
};

// Causal grouped-query attention of n new query tokens at positions start..start+n-1
// over a cache holding keys/values for positions 0..start+n-1.
//   q[n, heads * head_dim], k_cache/v_cache[>= start + n, kv_heads * head_dim],
//   out[n, heads * head_dim]. window > 0 limits each query to the last `window` keys.
void Attention(const float* q, const float* k_cache, const float* v_cache, float* out,
               int64_t start, int64_t n, int64_t heads, int64_t kv_heads, int64_t head_dim,
               int64_t window);

}  // namespace moe::cpu

#endif  // MOE_COMMON_BACKEND_CPU_CPU_KERNELS_H_
