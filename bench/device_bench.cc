// The device backends' speed (common/backend/device.h, kernels.h): host-to-device copy
// bandwidth from pinned and pageable memory, and MatMul throughput at Mixtral's expert
// shapes per weight format, decode (n = 1, reported as GB/s of weight bytes read, which
// is what bounds batch-1 decode) and prefill (n = 128, GFLOP/s). Prints a table.
//
//   device_bench --device cuda            # full sizes
//   device_bench --device cpu --quick     # small shapes, one repetition (ctest smoke run)
//
// Exits 77 when the device cannot be opened on this machine (ctest reads it as SKIPPED).
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/backend/device.h"
#include "common/backend/kernels.h"
#include "common/command_line.h"
#include "common/quant/hqq.h"
#include "common/status.h"

ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(bool, quick, false, "small shapes and one repetition (a smoke run)");

namespace moe {
namespace {

using backend::Device;
using backend::DeviceBuffer;
using backend::Kernels;
using backend::Stream;
using backend::WeightView;

constexpr int kSkipExitCode = 77;

// Seconds per call of `fn` (after one warm-up call), timed over `reps` calls ending with a
// stream synchronize.
absl::StatusOr<double> Time(int reps, Stream& stream, const std::function<absl::Status()>& fn) {
  MOE_RETURN_IF_ERROR(fn());
  MOE_RETURN_IF_ERROR(stream.Synchronize());
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) MOE_RETURN_IF_ERROR(fn());
  MOE_RETURN_IF_ERROR(stream.Synchronize());
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return elapsed.count() / reps;
}

absl::Status CopyBandwidth(Device& device, Stream& stream, bool quick) {
  std::printf("\n%-28s %10s %12s\n", "host-to-device copy", "MiB", "GB/s");
  const std::vector<int64_t> sizes_mib = quick ? std::vector<int64_t>{1, 4}
                                               : std::vector<int64_t>{1, 4, 16, 64, 256};
  for (int64_t mib : sizes_mib) {
    const size_t bytes = size_t(mib) << 20;
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<DeviceBuffer> dst, device.Allocate(bytes));
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<DeviceBuffer> pinned, device.AllocatePinnedHost(bytes));
    std::memset(pinned->data(), 1, bytes);
    std::vector<uint8_t> pageable(bytes, 1);
    const int reps = quick ? 1 : std::max<int>(2, int(1024 / mib));
    for (const auto& [name, src] : {std::pair<const char*, const void*>{"pinned", pinned->data()},
                                   {"pageable", pageable.data()}}) {
      MOE_ASSIGN_OR_RETURN(double seconds, Time(reps, stream, [&] {
                             return device.CopyToDevice(dst->data(), src, bytes, stream);
                           }));
      std::printf("%-28s %10lld %12.2f\n", name, static_cast<long long>(mib), bytes / seconds / 1e9);
    }
  }
  return absl::OkStatus();
}

struct Format {
  const char* name;
  int bits;  // 32: fp32
  DType dtype16 = DType::kBF16;
};

absl::Status MatMulThroughput(Device& device, Kernels& kernels, Stream& stream, bool quick) {
  std::printf("\n%-12s %-14s %12s %12s %14s %14s\n", "format", "shape", "MiB", "decode us",
              "decode GB/s", "prefill GFLOP/s");
  struct Shape {
    int64_t rows, cols;
  };
  const std::vector<Shape> shapes = quick ? std::vector<Shape>{{512, 256}, {256, 512}}
                                          : std::vector<Shape>{{14336, 4096}, {4096, 14336}};
  const Format formats[] = {{"fp32", 32},   {"bf16", 16, DType::kBF16}, {"f16", 16, DType::kF16},
                            {"4-bit g64", 4}, {"3-bit g64", 3},          {"2-bit g64", 2}};
  const int64_t prefill_n = 128;
  const int decode_reps = quick ? 1 : 50, prefill_reps = quick ? 1 : 5;
  for (const Shape& shape : shapes) {
    std::vector<float> w(shape.rows * shape.cols);
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.02f);
    for (float& v : w) v = dist(rng);
    std::vector<float> x(prefill_n * shape.cols);
    for (float& v : x) v = dist(rng);
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<DeviceBuffer> x_dev,
                         backend::Upload(device, x.data(), x.size() * sizeof(float)));
    MOE_ASSIGN_OR_RETURN(std::unique_ptr<DeviceBuffer> y_dev,
                         device.Allocate(prefill_n * shape.rows * sizeof(float)));
    for (const Format& format : formats) {
      std::unique_ptr<DeviceBuffer> w_dev;
      WeightView view;
      if (format.bits == 32) {
        MOE_ASSIGN_OR_RETURN(w_dev, backend::Upload(device, w.data(), w.size() * sizeof(float)));
        view = WeightView::F32(w_dev->as<float>(), shape.rows, shape.cols);
      } else {
        quant::QuantizeOptions options;
        options.spec.bits = format.bits;
        options.spec.group_size = 64;
        options.spec.dtype16 = format.dtype16;
        options.method = quant::Method::kRtn;  // speed does not depend on the method
        MOE_ASSIGN_OR_RETURN(quant::QuantizedMatrix q,
                             quant::QuantizeMatrix(w.data(), shape.rows, shape.cols, options));
        MOE_ASSIGN_OR_RETURN(w_dev, backend::Upload(device, q.bytes.data(), q.bytes.size()));
        view = WeightView::FromLayout(q.layout, w_dev->data());
      }
      MOE_ASSIGN_OR_RETURN(double decode, Time(decode_reps, stream, [&] {
                             return kernels.MatMul(view, x_dev->as<float>(), y_dev->as<float>(), 1,
                                                   false, stream);
                           }));
      MOE_ASSIGN_OR_RETURN(double prefill, Time(prefill_reps, stream, [&] {
                             return kernels.MatMul(view, x_dev->as<float>(), y_dev->as<float>(),
                                                   prefill_n, false, stream);
                           }));
      const double flops = 2.0 * prefill_n * shape.rows * shape.cols;
      std::printf("%-12s %-14s %12.1f %12.1f %14.2f %14.1f\n", format.name,
                  absl::StrCat(shape.rows, "x", shape.cols).c_str(), view.bytes() / 1048576.0,
                  decode * 1e6, view.bytes() / decode / 1e9, flops / prefill / 1e9);
    }
  }
  return absl::OkStatus();
}

absl::Status Run(Device& device, bool quick) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<Kernels> kernels, backend::CreateKernels(device));
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<Stream> stream, device.CreateStream());
  std::printf("device %s%s\n", device.name().c_str(), quick ? " (quick)" : "");
  MOE_RETURN_IF_ERROR(CopyBandwidth(device, *stream, quick));
  return MatMulThroughput(device, *kernels, *stream, quick);
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseFlags(argc, argv);
  auto device = moe::backend::OpenDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) {
    const auto code = device.status().code();
    std::fprintf(stderr, "device_bench: %s\n", device.status().ToString().c_str());
    return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kUnimplemented
               ? moe::kSkipExitCode
               : 1;
  }
  return moe::ExitCode("device_bench", moe::Run(**device, absl::GetFlag(FLAGS_quick)));
}
