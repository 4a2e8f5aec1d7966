// The fused dequantise-and-multiply kernels (common/backend/cpu/quant_kernels.h) against
// the fp32 path (OpenBLAS sgemv/sgemm through cpu::MatMulTransB) on the same matrix:
// decode (1 token) and prefill (32 tokens), for the bundled model's expert shape and
// Mixtral-8x7B's expert (w1: 14336 x 4096) and attention (q: 4096 x 4096) shapes, beside a
// STREAM-like copy and read of memory (the bound a memory-bound decode kernel approaches);
// and ExpertSweep734m: whole experts of the side-by-side shape decoded from memory, not
// cache, per width (the weight GB/s a decoded token gets). Rates use wall time. Google Benchmark; one thread unless --threads says otherwise.
//
//   quant_kernel_bench [--threads N] [--benchmark_filter=Mixtral] [--benchmark_repetitions=3]
#include <cblas.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/backend/cpu/cpu_kernels.h"
#include "common/backend/cpu/quant_kernels.h"
#include "common/quant/hqq.h"

namespace moe {
namespace {

struct Shape {
  const char* name;
  int64_t rows, cols;
};
// Hot734: 256 rows of the 734 M model's w1 (1024 inputs; 128 KiB at 4 bits, inside L2):
// the kernels' own cost per weight at a real width, without memory's.
constexpr Shape kShapes[] = {{"KjvExpertW1", 512, 256},
                             {"Hot734", 256, 1024},
                             {"MixtralAttnQ", 4096, 4096},
                             {"MixtralExpertW1", 14336, 4096}};

// Matrices are made once per (shape, bits) and kept for every benchmark that uses them.
const std::vector<float>& Weights(const Shape& s) {
  static std::map<std::string, std::vector<float>> cache;
  auto& w = cache[s.name];
  if (w.empty()) {
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 0.02f);
    w.resize(s.rows * s.cols);
    for (float& v : w) v = d(rng);
  }
  return w;
}

const quant::QuantizedMatrix& Packed(const Shape& s, int bits) {
  static std::map<std::pair<std::string, int>, std::unique_ptr<quant::QuantizedMatrix>> cache;
  auto& q = cache[{s.name, bits}];
  if (!q) {
    quant::QuantizeOptions o;
    o.spec.bits = bits;
    o.method = quant::Method::kRtn;  // the kernels' speed does not depend on the method
    auto r = quant::QuantizeMatrix(Weights(s).data(), s.rows, s.cols, o);
    if (!r.ok()) std::abort();
    q = std::make_unique<quant::QuantizedMatrix>(std::move(*r));
  }
  return *q;
}

std::vector<float> Input(int64_t n, int64_t cols) {
  std::vector<float> x(n * cols);
  std::mt19937 rng(2);
  std::normal_distribution<float> d;
  for (float& v : x) v = d(rng);
  return x;
}

// bits 32: the fp32 path; otherwise the fused kernel on the packed matrix.
void Run(benchmark::State& state, Shape s, int bits, int64_t n, cpu::QuantKernelPath path) {
  const std::vector<float> x = Input(n, s.cols);
  std::vector<float> y(n * s.rows);
  int64_t weight_bytes = s.rows * s.cols * 4;
  if (bits == 32) {
    const std::vector<float>& w = Weights(s);
    for (auto _ : state) {
      cpu::MatMulTransB(x.data(), w.data(), y.data(), n, s.cols, s.rows);
      benchmark::DoNotOptimize(y.data());
    }
  } else {
    const quant::QuantizedMatrix& q = Packed(s, bits);
    weight_bytes = q.layout.total_bytes;
    cpu::SetQuantKernelPath(path);
    for (auto _ : state) {
      cpu::QuantMatMulTransB(q.view(), x.data(), y.data(), n);
      benchmark::DoNotOptimize(y.data());
    }
    cpu::SetQuantKernelPath(cpu::BestQuantKernelPath());
  }
  state.counters["weight_MB"] = weight_bytes / 1e6;
  state.counters["weights_GBps"] = benchmark::Counter(
      double(weight_bytes), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * n * s.rows * s.cols * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// The physical bound beside the kernels, measured in the same run: a STREAM-like copy
// (bytes read + written) and read (a sum: what a weight stream does) over 512 MiB, far
// past the caches, on the same threads.
void StreamBench(benchmark::State& state, bool copy) {
  const int64_t count = int64_t{1} << 27;  // floats per array
  static std::vector<float> a(count, 1.0f), b(count, 2.0f);
  for (auto _ : state) {
    if (copy) {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < count; ++i) a[i] = b[i];
      benchmark::DoNotOptimize(a.data());
    } else {
      float sum = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : sum)
      for (int64_t i = 0; i < count; ++i) sum += b[i];
      benchmark::DoNotOptimize(sum);
    }
  }
  state.counters["GBps"] = benchmark::Counter(double(count) * sizeof(float) * (copy ? 2 : 1),
                                              benchmark::Counter::kIsIterationInvariantRate,
                                              benchmark::Counter::kIs1000);
}

// One expert of the 734 M side-by-side shape (hidden 1024, expert width 3584: w1 and w3
// [3584, 1024], w2 [1024, 3584]) run as the worker runs it (expert_ffn.cc: w1 and w3 in
// one call, SiLU * up, w2) on one token, cycling over copies of it that together span
// 256 MiB, so that every call streams its weights from memory as a decoded token does.
// weights_GBps counts the three matrices' stored bytes: compare it with Stream/read.
// The copies lie in one buffer backed by transparent huge pages where the system allows
// them, as the CPU expert store is (cpu_device.cc); "_4k" keeps 4 KiB pages.
struct SweepExperts {
  int bits = 0;
  bool huge = false;
  quant::MatrixLayout w1, w2;  // w3's layout is w1's
  int64_t expert_bytes = 0;    // w1 | w3 | w2, each 64-byte aligned
  int64_t stride = 0, count = 0;
  std::unique_ptr<uint8_t[], decltype(&std::free)> arena{nullptr, &std::free};
};

const SweepExperts& Sweep(int bits, bool huge) {
  static SweepExperts sweep;  // one width at a time: 256 MiB each
  if (sweep.bits == bits && sweep.huge == huge) return sweep;
  sweep.arena.reset();
  constexpr int64_t kHidden = 1024, kInter = 3584;
  static const Shape w1_shape{"Sweep734mW1", kInter, kHidden}, w2_shape{"Sweep734mW2", kHidden, kInter};
  const quant::QuantizedMatrix& w1 = Packed(w1_shape, bits);
  const quant::QuantizedMatrix& w2 = Packed(w2_shape, bits);
  sweep.bits = bits;
  sweep.huge = huge;
  sweep.w1 = w1.layout;
  sweep.w2 = w2.layout;
  const int64_t m1 = quant::AlignUp(w1.layout.total_bytes, 64);
  sweep.expert_bytes = 2 * m1 + w2.layout.total_bytes;
  sweep.count = std::max<int64_t>(4, (int64_t{256} << 20) / sweep.expert_bytes);
  sweep.stride = quant::AlignUp(sweep.expert_bytes, 4096);
  const size_t align = huge ? size_t{2} << 20 : 4096;
  const size_t total = size_t(quant::AlignUp(sweep.stride * sweep.count, int64_t(align)));
  sweep.arena.reset(static_cast<uint8_t*>(std::aligned_alloc(align, total)));
  if (!sweep.arena) std::abort();
  madvise(sweep.arena.get(), total, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  for (int64_t k = 0; k < sweep.count; ++k) {
    uint8_t* p = sweep.arena.get() + k * sweep.stride;
    std::memcpy(p, w1.bytes.data(), w1.layout.total_bytes);
    std::memcpy(p + m1, w1.bytes.data(), w1.layout.total_bytes);  // w3: same speed as w1
    std::memcpy(p + 2 * m1, w2.bytes.data(), w2.layout.total_bytes);
  }
  return sweep;
}

void ExpertSweep(benchmark::State& state, int bits, bool huge) {
  const SweepExperts& s = Sweep(bits, huge);
  const int64_t h = s.w1.cols, i = s.w1.rows;
  const int64_t m1 = quant::AlignUp(s.w1.total_bytes, 64);
  const std::vector<float> x = Input(1, h);
  std::vector<float> gate(i), up(i), out(h);
  int64_t k = 0;
  for (auto _ : state) {
    const uint8_t* e = s.arena.get() + k * s.stride;
    k = (k + 1) % s.count;
    cpu::QuantMatMulTransB2({s.w1, e}, {s.w1, e + m1}, x.data(), gate.data(), up.data(), 1);
    cpu::SiluMul(gate.data(), up.data(), i);
    cpu::QuantMatMulTransB({s.w2, e + 2 * m1}, gate.data(), out.data(), 1);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["expert_MB"] = s.expert_bytes / 1e6;
  state.counters["weights_GBps"] = benchmark::Counter(
      double(s.expert_bytes), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void RegisterAll() {
  benchmark::RegisterBenchmark("Stream/copy", StreamBench, true)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("Stream/read", StreamBench, false)->Unit(benchmark::kMillisecond)->UseRealTime();
  for (int bits : {16, 8, 4, 3, 2}) {
    for (bool huge : {true, false}) {
      benchmark::RegisterBenchmark(
          absl::StrCat("ExpertSweep734m/decode/", bits, "bit", huge ? "" : "_4k").c_str(),
          ExpertSweep, bits, huge)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  }
  for (const Shape& s : kShapes) {
    for (int64_t n : {1, 32}) {
      for (int bits : {32, 16, 8, 4, 3, 2}) {
        const std::string name = absl::StrCat(s.name, "/", n == 1 ? "decode" : "prefill32", "/",
                                              bits == 32 ? std::string("fp32") : absl::StrCat(bits, "bit"));
        benchmark::RegisterBenchmark(name.c_str(), Run, s, bits, n, cpu::BestQuantKernelPath())
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
      benchmark::RegisterBenchmark(
          absl::StrCat(s.name, "/", n == 1 ? "decode" : "prefill32", "/3bit_scalar").c_str(), Run,
          s, 3, n, cpu::QuantKernelPath::kScalar)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
      // The AVX2 (maddubs) path where a VNNI one is the best: what a CPU without VNNI gets.
      if (cpu::BestQuantKernelPath() != cpu::QuantKernelPath::kAvx2 &&
          cpu::QuantKernelPathSupported(cpu::QuantKernelPath::kAvx2)) {
        benchmark::RegisterBenchmark(
            absl::StrCat(s.name, "/", n == 1 ? "decode" : "prefill32", "/4bit_avx2").c_str(), Run,
            s, 4, n, cpu::QuantKernelPath::kAvx2)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
  }
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  int threads = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) threads = std::atoi(argv[i] + 10);
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  benchmark::Initialize(&argc, argv);
  moe::RegisterAll();
  benchmark::AddCustomContext("threads", std::to_string(threads));
  benchmark::AddCustomContext("quant_kernel_path",
                              moe::cpu::QuantKernelPathName(moe::cpu::BestQuantKernelPath()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
