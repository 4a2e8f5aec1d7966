#include "common/backend/cpu/cpu_kernels.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/rowwise_matmul.h"

namespace moe::cpu {
namespace {
std::atomic<MatmulImpl> g_matmul_impl{MatmulImpl::kRows};
}  // namespace

bool OmpRegionPays(bool wanted) {
#ifdef _OPENMP
  return wanted && omp_get_max_threads() > 1;
#else
  return false;  // compiled without OpenMP (the fuzz targets): no region runs anyway
#endif
}

void SetMatmulImpl(MatmulImpl impl) { g_matmul_impl.store(impl); }
MatmulImpl GetMatmulImpl() { return g_matmul_impl.load(std::memory_order_relaxed); }

absl::StatusOr<MatmulImpl> ParseMatmulImpl(absl::string_view name) {
  if (name == "rows") return MatmulImpl::kRows;
  if (name == "blas") return MatmulImpl::kBlas;
  if (name == "loops") return MatmulImpl::kLoops;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown matmul implementation \"", name, "\" (rows, blas or loops)"));
}

absl::string_view MatmulImplName(MatmulImpl impl) {
  switch (impl) {
    case MatmulImpl::kRows: return "rows";
    case MatmulImpl::kBlas: return "blas";
    case MatmulImpl::kLoops: return "loops";
  }
  return "?";
}

void MatMulTransB(const float* x, const float* w, float* y, int64_t n, int64_t k, int64_t m,
                  bool accumulate) {
  if (n == 0 || m == 0) return;
  if (GetMatmulImpl() == MatmulImpl::kRows) {
    RowwiseMatMulTransB(x, w, y, n, k, m, accumulate);
    return;
  }
  if (GetMatmulImpl() == MatmulImpl::kBlas) {
    const float beta = accumulate ? 1.0f : 0.0f;
    if (n == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, m, k, 1.0f, w, k, x, 1, beta, y, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, 1.0f, x, k, w, k, beta,
                  y, m);
    }
    return;
  }
  // Rows of w are independent dot products: parallel over them, vectorised inside.
#pragma omp parallel for schedule(static) if (m * k * n > (1 << 16))
  for (int64_t j = 0; j < m; ++j) {
    const float* wj = w + j * k;
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * k;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int64_t t = 0; t < k; ++t) acc += xi[t] * wj[t];
      y[i * m + j] = accumulate ? y[i * m + j] + acc : acc;
    }
  }
}

void MatMulTransBReference(const float* x, const float* w, float* y, int64_t n, int64_t k,
                           int64_t m) {
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < m; ++j) {
      double acc = 0.0;
      for (int64_t t = 0; t < k; ++t) acc += double(x[i * k + t]) * double(w[j * k + t]);
      y[i * m + j] = static_cast<float>(acc);
    }
  }
}

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, int64_t d, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float* yi = y + i * d;
    double sum = 0.0;
    for (int64_t j = 0; j < d; ++j) sum += double(xi[j]) * xi[j];
    const float scale = static_cast<float>(1.0 / std::sqrt(sum / d + eps));
    for (int64_t j = 0; j < d; ++j) yi[j] = xi[j] * scale * weight[j];
  }
}

void SiluMul(float* gate, const float* up, int64_t count) {
  // The exponentials first, a block at a time, then the rest of the formula in a loop
  // without calls, which the compiler vectorises: the same operations on the same
  // values as element by element (g / (1 + exp(-g)) * up), so the same bits. The expert
  // worker runs this over every row of every expert it computes. Blocks are independent,
  // so threads change no bit either: a prefill's expert call (16 tokens x 3584 at the
  // 734 M shape) was ~0.3 ms on one thread; a decode's stays below the threshold.
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  auto block = [&](int64_t k) {
    float e[kBlock];
    const int64_t i0 = k * kBlock;
    const int64_t b = std::min(kBlock, count - i0);
    float* g = gate + i0;
    const float* u = up + i0;
    for (int64_t i = 0; i < b; ++i) e[i] = std::exp(-g[i]);
    for (int64_t i = 0; i < b; ++i) g[i] = g[i] / (1.0f + e[i]) * u[i];
  };
  ParallelFor(blocks, count >= (int64_t{1} << 15), Deal::kShares, block);
}

void Softmax(float* x, int64_t n) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) max = std::max(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void TopKRouting(const float* logits, int64_t n_experts, int64_t k, int32_t* ids,
                 float* weights, bool renormalize) {
  float probs[256];
  std::vector<float> heap_probs;
  float* p = probs;
  if (n_experts > 256) {
    heap_probs.resize(n_experts);
    p = heap_probs.data();
  }
  std::copy(logits, logits + n_experts, p);
  Softmax(p, n_experts);
  double total = 0.0;
  for (int64_t slot = 0; slot < k; ++slot) {
    int64_t best = -1;
    for (int64_t e = 0; e < n_experts; ++e) {
      bool taken = false;
      for (int64_t s = 0; s < slot; ++s) taken |= ids[s] == e;
      if (!taken && (best < 0 || p[e] > p[best])) best = e;
    }
    ids[slot] = static_cast<int32_t>(best);
    weights[slot] = p[best];
    total += p[best];
  }
  if (!renormalize) return;
  for (int64_t slot = 0; slot < k; ++slot) {
    weights[slot] = static_cast<float>(weights[slot] / total);
  }
}

int64_t ArgMax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

RopeTable::RopeTable(int64_t head_dim, double theta, int64_t max_positions)
    : head_dim_(head_dim), theta_(theta), max_positions_(max_positions), inv_freq_(head_dim / 2) {
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    inv_freq_[i] = 1.0 / std::pow(theta, double(2 * i) / double(head_dim));
  }
}

void RopeTable::Apply(float* x, const int64_t* positions, int64_t n, int64_t heads) const {
  const int64_t half = head_dim_ / 2;
  // On the stack for the usual head sizes: this runs per sequence and layer of a step.
  constexpr int64_t kStackHalf = 256;
  float c_stack[kStackHalf], s_stack[kStackHalf];
  std::vector<float> c_heap, s_heap;
  float* c = c_stack;
  float* s = s_stack;
  if (half > kStackHalf) {
    c_heap.resize(half);
    s_heap.resize(half);
    c = c_heap.data();
    s = s_heap.data();
  }
  for (int64_t t = 0; t < n; ++t) {
    // The exact angle in double, which fp32 references approximate.
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(positions[t]) * inv_freq_[i];
      c[i] = static_cast<float>(std::cos(angle));
      s[i] = static_cast<float>(std::sin(angle));
    }
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim_;
      // rotate_half: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i];
        const float b = v[i + half];
        v[i] = a * c[i] - b * s[i];
        v[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

void Attention(const float* q, const float* k_cache, const float* v_cache, float* out,
               int64_t start, int64_t n, int64_t heads, int64_t kv_heads, int64_t head_dim,
               int64_t window) {
  const int64_t group = heads / kv_heads;
  const int64_t q_stride = heads * head_dim;
  const int64_t kv_stride = kv_heads * head_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(double(head_dim)));
  auto head = [&](int64_t t, int64_t h) {
      const int64_t pos = start + t;
      const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      const int64_t count = pos - first + 1;
      const float* qh = q + t * q_stride + h * head_dim;
      const int64_t kv_off = (h / group) * head_dim;
      // On the stack for short contexts: decode calls this per sequence, layer and head.
      constexpr int64_t kStackScores = 512;
      float stack_scores[kStackScores];
      std::vector<float> heap_scores(count > kStackScores ? count : 0);
      float* scores = count > kStackScores ? heap_scores.data() : stack_scores;
      for (int64_t j = 0; j < count; ++j) {
        const float* kj = k_cache + (first + j) * kv_stride + kv_off;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * kj[d];
        scores[j] = dot * scale;
      }
      Softmax(scores, count);
      float* oh = out + t * q_stride + h * head_dim;
      std::fill(oh, oh + head_dim, 0.0f);
      for (int64_t j = 0; j < count; ++j) {
        const float* vj = v_cache + (first + j) * kv_stride + kv_off;
        const float w = scores[j];
#pragma omp simd
        for (int64_t d = 0; d < head_dim; ++d) oh[d] += w * vj[d];
      }
  };
  // Decode calls this per sequence and layer with one row: no region then (OmpRegionPays).
  // (token, head) pairs are dealt out one at a time: a causal prefill's later tokens attend
  // to more keys, and contiguous halves gave the second of two threads 3x the first's work.
  // Each pair is computed alone, so the schedule changes no bit.
  ParallelFor(n * heads, n * heads >= 16, Deal::kInTurn,
              [&](int64_t i) { head(i / heads, i % heads); });
}

}  // namespace moe::cpu
