// CudaKernels: validates each call's shapes on the host, makes the device current and
// queues the kernels of cuda_kernels.cu (or cuBLAS) on the caller's stream.
#include "common/backend/cuda/cuda_kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_kernel_launch.h"
#include "common/backend/cuda/cuda_status.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::cuda {
namespace {

using backend::Stream;
using backend::WeightFormat;
using backend::WeightView;

static_assert(sizeof(quant::MetaParams) == 4 * sizeof(float),
              "the kernels read MetaParams as 4 floats");

// The prefill path dequantises at most this many weights at a time (64 MiB of fp32
// scratch), so a 14336x4096 matrix needs 4 tiles and its scratch stays small.
constexpr int64_t kDequantTileValues = int64_t{16} << 20;

absl::Status CublasStatus(cublasStatus_t status, const char* call, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const auto code = status == CUBLAS_STATUS_ALLOC_FAILED ? absl::StatusCode::kResourceExhausted
                    : status == CUBLAS_STATUS_NOT_INITIALIZED ? absl::StatusCode::kUnavailable
                                                              : absl::StatusCode::kInternal;
  return absl::Status(code, absl::StrCat(what, ": ", call, " failed: ",
                                         cublasGetStatusName(status), " (",
                                         cublasGetStatusString(status), ")"));
}

#define MOE_CUBLAS_RETURN_IF_ERROR(call, what)                                   \
  do {                                                                           \
    ::absl::Status moe_cublas_status_ = CublasStatus((call), #call, what);       \
    if (!moe_cublas_status_.ok()) return moe_cublas_status_;                     \
  } while (0)

absl::StatusOr<cudaStream_t> NativeStream(const Stream& stream, const char* what) {
  if (stream.native() == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the stream is not a CUDA stream (made by another device?)"));
  }
  return static_cast<cudaStream_t>(stream.native());
}

absl::Status CheckCount(int64_t value, const char* name, const char* what) {
  if (value < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", name, " is negative (", value, ")"));
  }
  return absl::OkStatus();
}

// The launchers' view of a non-fp32 WeightView.
launch::DeviceMatrix ToDeviceMatrix(const WeightView& w) {
  launch::DeviceMatrix m;
  m.rows = w.rows;
  m.cols = w.cols;
  const auto* base = static_cast<const uint8_t*>(w.data);
  m.codes = base;
  if (w.format == WeightFormat::kPacked) {
    m.bits = w.layout.spec.bits;
    m.group_size = w.layout.spec.group_size;
    m.scales = base + w.layout.scales_offset;
    m.zeros = base + w.layout.zeros_offset;
    m.meta = reinterpret_cast<const float*>(base + w.layout.meta_offset);
  } else {
    m.bits = 16;
    m.f16 = w.format == WeightFormat::kF16;
  }
  return m;
}

absl::Status CheckWeight(const WeightView& w, const char* what) {
  if (w.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the weight has no data"));
  }
  if (w.rows <= 0 || w.cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the weight's shape [", w.rows, ", ", w.cols, "] is empty"));
  }
  if (w.format == WeightFormat::kF32) return absl::OkStatus();
  if (w.layout.rows != w.rows || w.layout.cols != w.cols) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the weight's shape [", w.rows, ", ", w.cols, "] differs from its layout's [",
        w.layout.rows, ", ", w.layout.cols, "]"));
  }
  const bool packed = w.format == WeightFormat::kPacked;
  if (packed != w.layout.spec.quantized() ||
      (!packed && (w.format == WeightFormat::kF16) != (w.layout.spec.dtype16 == DType::kF16))) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": format and layout (",
                                                   w.layout.spec.ToString(), ") disagree"));
  }
  if (packed) {
    const int64_t g = w.layout.spec.group_size;
    const int bits = w.layout.spec.bits;
    if ((bits != 2 && bits != 3 && bits != 4 && bits != 8) || g <= 0 || g % quant::kBlock != 0 ||
        w.cols % g != 0) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": unsupported packed layout ",
                                                     w.layout.spec.ToString(), " for [", w.rows,
                                                     ", ", w.cols, "]"));
    }
  }
  return absl::OkStatus();
}

class CudaKernels : public backend::Kernels {
 public:
  explicit CudaKernels(backend::Device& device) : device_(device) {}
  ~CudaKernels() override {
    if (device_.BindThread().ok()) {
      for (auto& [key, handle] : handles_) {
        const cublasStatus_t status = cublasDestroy(handle);
        if (status != CUBLAS_STATUS_SUCCESS) {
          MOE_LOG(ERROR) << "cublasDestroy: " << cublasGetStatusName(status);
        }
      }
    } else {
      MOE_LOG(ERROR) << "CudaKernels: cannot bind " << device_.name()
                     << " to free the cuBLAS handles";
    }
  }
  CudaKernels(const CudaKernels&) = delete;
  CudaKernels& operator=(const CudaKernels&) = delete;

  absl::Status MatMul(const WeightView& w, const float* x, float* y, int64_t n, bool accumulate,
                      Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "MatMul"));
    MOE_RETURN_IF_ERROR(CheckWeight(w, "MatMul"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "MatMul"));
    if (n == 0) return absl::OkStatus();
    if (x == nullptr || y == nullptr) return absl::InvalidArgumentError("MatMul: null x or y");
    MOE_RETURN_IF_ERROR(device_.BindThread());
    const bool decode = n <= launch::kMaxDecodeTokens;
    if (w.format == WeightFormat::kF32) {
      const auto* wf = static_cast<const float*>(w.data);
      if (decode && launch::MatVecF32Supported(wf, w.cols, x)) {
        MOE_CUDA_RETURN_IF_ERROR(
            launch::MatVecF32(wf, w.rows, w.cols, x, y, static_cast<int>(n), accumulate, s),
            "MatMul (fp32 decode)");
        return absl::OkStatus();
      }
      return Sgemm(wf, w.rows, w.cols, x, y, n, w.rows, accumulate, s);
    }
    const launch::DeviceMatrix m = ToDeviceMatrix(w);
    if (decode && launch::MatVecQuantSupported(m, x)) {
      MOE_CUDA_RETURN_IF_ERROR(launch::MatVecQuant(m, x, y, static_cast<int>(n), accumulate, s),
                               "MatMul (decode)");
      return absl::OkStatus();
    }
    return DequantizeAndSgemm(m, x, y, n, accumulate, s);
  }

  absl::Status RmsNorm(const float* x, const float* weight, float* y, int64_t n, int64_t d,
                       float eps, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "RmsNorm"));
    MOE_RETURN_IF_ERROR(CheckCount(d, "d", "RmsNorm"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "RmsNorm"));
    if (n == 0 || d == 0) return absl::OkStatus();
    if (n > int64_t{INT32_MAX}) return absl::InvalidArgumentError("RmsNorm: too many rows");
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::RmsNorm(x, weight, y, n, d, eps, s), "RmsNorm");
    return absl::OkStatus();
  }

  absl::Status Rope(float* x, int64_t start, int64_t n, int64_t heads,
                    const backend::RopeParams& rope, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(start, "start", "Rope"));
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "Rope"));
    MOE_RETURN_IF_ERROR(CheckCount(heads, "heads", "Rope"));
    if (rope.head_dim <= 0 || rope.head_dim % 2 != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Rope: head_dim must be positive and even, not ", rope.head_dim));
    }
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "Rope"));
    if (n == 0 || heads == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::Rope(x, start, n, heads, rope.head_dim, rope.theta, s), "Rope");
    return absl::OkStatus();
  }

  absl::Status Attention(const float* q, const float* k_cache, const float* v_cache, float* out,
                         int64_t start, int64_t n, int64_t heads, int64_t kv_heads,
                         int64_t head_dim, int64_t window, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(start, "start", "Attention"));
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "Attention"));
    MOE_RETURN_IF_ERROR(CheckCount(window, "window", "Attention"));
    if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || heads > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Attention: heads (", heads, ") must be a positive multiple of kv_heads (", kv_heads,
          ") and at most 65535"));
    }
    if (head_dim <= 0 || head_dim > launch::kMaxHeadDim) {
      return absl::InvalidArgumentError(absl::StrCat("Attention: head_dim ", head_dim,
                                                     " is outside [1, ", launch::kMaxHeadDim, "]"));
    }
    if (n > int64_t{INT32_MAX}) return absl::InvalidArgumentError("Attention: too many queries");
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "Attention"));
    if (n == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    const int64_t max_keys = window > 0 ? std::min(window, start + n) : start + n;
    int splits = launch::AttentionSplits(max_keys);
    // Split only while the grid is small (decode); a prefill grid fills the GPU anyway and
    // its scratch would be large.
    if (n * heads * splits > 4096) splits = static_cast<int>(std::max<int64_t>(1, 4096 / (n * heads)));
    float* scratch = nullptr;
    const int64_t floats = launch::AttentionScratchFloats(n, heads, head_dim, splits);
    if (floats > 0) {
      MOE_CUDA_RETURN_IF_ERROR(
          cudaMallocAsync(reinterpret_cast<void**>(&scratch), floats * sizeof(float), s),
          "Attention scratch");
    }
    const cudaError_t error = launch::Attention(q, k_cache, v_cache, out, start, n, heads,
                                                kv_heads, head_dim, window, splits, scratch, s);
    // Freed in stream order, after the kernels that use it, even if a launch failed.
    const cudaError_t freed = scratch != nullptr ? cudaFreeAsync(scratch, s) : cudaSuccess;
    MOE_CUDA_RETURN_IF_ERROR(error, "Attention");
    MOE_CUDA_RETURN_IF_ERROR(freed, "Attention scratch");
    return absl::OkStatus();
  }

  absl::Status SiluMul(float* gate, const float* up, int64_t count, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(count, "count", "SiluMul"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "SiluMul"));
    if (count == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::SiluMul(gate, up, count, s), "SiluMul");
    return absl::OkStatus();
  }

  absl::Status Add(float* y, const float* x, int64_t count, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(count, "count", "Add"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "Add"));
    if (count == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::Add(y, x, count, s), "Add");
    return absl::OkStatus();
  }

  absl::Status TopKRouting(const float* logits, int64_t n, int64_t experts, int64_t k,
                           bool renormalize, int32_t* ids, float* weights,
                           Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "TopKRouting"));
    if (experts <= 0 || k <= 0 || k > experts) {
      return absl::InvalidArgumentError(absl::StrCat("TopKRouting: k (", k,
                                                     ") must be in [1, experts = ", experts, "]"));
    }
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "TopKRouting"));
    if (n == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(
        launch::TopKRouting(logits, n, experts, k, renormalize, ids, weights, s), "TopKRouting");
    return absl::OkStatus();
  }

  absl::Status AddBias(float* x, const float* bias, int64_t n, int64_t d,
                       Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "AddBias"));
    MOE_RETURN_IF_ERROR(CheckCount(d, "d", "AddBias"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "AddBias"));
    if (n == 0 || d == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::AddBias(x, bias, n, d, s), "AddBias");
    return absl::OkStatus();
  }

  absl::Status Clamp(float* x, int64_t count, float limit, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(count, "count", "Clamp"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "Clamp"));
    if (count == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::Clamp(x, count, limit, s), "Clamp");
    return absl::OkStatus();
  }

  absl::Status SigmoidGatedAdd(float* y, const float* gate, const float* x, int64_t n, int64_t d,
                               Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "SigmoidGatedAdd"));
    MOE_RETURN_IF_ERROR(CheckCount(d, "d", "SigmoidGatedAdd"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "SigmoidGatedAdd"));
    if (n == 0 || d == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::SigmoidGatedAdd(y, gate, x, n, d, s), "SigmoidGatedAdd");
    return absl::OkStatus();
  }

  absl::Status GatherRows(const float* table, const int32_t* rows, int64_t n, int64_t d,
                          float* out, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "GatherRows"));
    MOE_RETURN_IF_ERROR(CheckCount(d, "d", "GatherRows"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "GatherRows"));
    if (n == 0 || d == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::GatherRows(table, rows, n, d, out, s), "GatherRows");
    return absl::OkStatus();
  }

  absl::Status GatherWeightRows(const WeightView& table, const int32_t* rows, int64_t n,
                                float* out, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "GatherWeightRows"));
    MOE_RETURN_IF_ERROR(CheckWeight(table, "GatherWeightRows"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "GatherWeightRows"));
    if (n == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    if (table.format == WeightFormat::kF32) {
      MOE_CUDA_RETURN_IF_ERROR(launch::GatherRows(static_cast<const float*>(table.data), rows, n,
                                                  table.cols, out, s),
                               "GatherWeightRows (fp32)");
    } else {
      MOE_CUDA_RETURN_IF_ERROR(
          launch::GatherDequantizedRows(ToDeviceMatrix(table), rows, n, out, s),
          "GatherWeightRows");
    }
    return absl::OkStatus();
  }

  absl::Status ScatterAddRows(const float* x, const int32_t* rows, const float* scale, int64_t n,
                              int64_t d, float* out, Stream& stream) override {
    MOE_RETURN_IF_ERROR(CheckCount(n, "n", "ScatterAddRows"));
    MOE_RETURN_IF_ERROR(CheckCount(d, "d", "ScatterAddRows"));
    MOE_ASSIGN_OR_RETURN(cudaStream_t s, NativeStream(stream, "ScatterAddRows"));
    if (n == 0 || d == 0) return absl::OkStatus();
    MOE_RETURN_IF_ERROR(device_.BindThread());
    MOE_CUDA_RETURN_IF_ERROR(launch::ScatterAddRows(x, rows, scale, n, d, out, s),
                             "ScatterAddRows");
    return absl::OkStatus();
  }

 private:
  // This thread's cuBLAS handle for stream `s`, made on first use. Not shared between
  // threads (handles are not thread-safe) nor between streams: cublasSetStream resets a
  // handle to its default workspace, so one handle used on two streams back to back could
  // let two GEMMs in flight share scratch. Pointer mode host; CUBLAS_DEFAULT_MATH keeps
  // Sgemm in full FP32 (no TF32), so results stay close to the CPU's.
  absl::StatusOr<cublasHandle_t> Handle(cudaStream_t s) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto key = std::make_pair(std::this_thread::get_id(), s);
    auto it = handles_.find(key);
    if (it != handles_.end()) return it->second;
    cublasHandle_t handle = nullptr;
    MOE_CUBLAS_RETURN_IF_ERROR(cublasCreate(&handle), "creating a cuBLAS handle");
    const cublasStatus_t mode = cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH);
    if (mode != CUBLAS_STATUS_SUCCESS) {
      cublasDestroy(handle);
      return CublasStatus(mode, "cublasSetMathMode", "creating a cuBLAS handle");
    }
    handles_.emplace(key, handle);
    return handle;
  }

  // y[n, ldy] (=|+=) x[n, cols] · W[rows, cols]^T, all row-major. cuBLAS is column-major,
  // where the same bytes are y^T[ldy, n], x^T[cols, n] and W^T[cols, rows]; so
  // y^T = op(W^T) x^T with op = transpose: m = rows, n = n, k = cols, lda = ldb = cols,
  // ldc = ldy (the full output width, so a tile of rows writes into its columns of y).
  absl::Status Sgemm(const float* w, int64_t rows, int64_t cols, const float* x, float* y,
                     int64_t n, int64_t ldy, bool accumulate, cudaStream_t s) {
    if (rows > INT32_MAX || cols > INT32_MAX || n > INT32_MAX || ldy > INT32_MAX) {
      return absl::InvalidArgumentError("MatMul: a dimension exceeds cuBLAS's int range");
    }
    MOE_ASSIGN_OR_RETURN(cublasHandle_t handle, Handle(s));
    MOE_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, s), "MatMul (cuBLAS)");
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    MOE_CUBLAS_RETURN_IF_ERROR(
        cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), static_cast<int>(n),
                    static_cast<int>(cols), &alpha, w, static_cast<int>(cols), x,
                    static_cast<int>(cols), &beta, y, static_cast<int>(ldy)),
        "MatMul (cuBLAS)");
    return absl::OkStatus();
  }

  // Prefill (or unaligned decode) for 16-bit and packed weights: tiles of rows dequantised
  // into stream-ordered fp32 scratch (its own per call, so calls on different streams never
  // share it), each multiplied by cuBLAS into its columns of y.
  absl::Status DequantizeAndSgemm(const launch::DeviceMatrix& m, const float* x, float* y,
                                  int64_t n, bool accumulate, cudaStream_t s) {
    const int64_t tile_rows = std::clamp<int64_t>(kDequantTileValues / m.cols, 1, m.rows);
    float* tile = nullptr;
    MOE_CUDA_RETURN_IF_ERROR(
        cudaMallocAsync(reinterpret_cast<void**>(&tile), tile_rows * m.cols * sizeof(float), s),
        "MatMul dequantisation scratch");
    absl::Status status;
    for (int64_t r0 = 0; r0 < m.rows && status.ok(); r0 += tile_rows) {
      const int64_t r1 = std::min(m.rows, r0 + tile_rows);
      status = CudaStatus(launch::DequantizeRows(m, r0, r1, tile, s), "DequantizeRows",
                          "MatMul (dequantise)");
      if (status.ok()) status = Sgemm(tile, r1 - r0, m.cols, x, y + r0, n, m.rows, accumulate, s);
    }
    // Stream order frees it after the last GEMM that reads it.
    const absl::Status freed =
        CudaStatus(cudaFreeAsync(tile, s), "cudaFreeAsync", "MatMul dequantisation scratch");
    return status.ok() ? freed : status;
  }

  backend::Device& device_;
  std::mutex mu_;
  std::map<std::pair<std::thread::id, cudaStream_t>, cublasHandle_t> handles_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<backend::Kernels>> CreateCudaKernels(backend::Device& device) {
  if (device.kind() != backend::DeviceKind::kCuda) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateCudaKernels: ", device.name(), " is not a CUDA device"));
  }
  MOE_RETURN_IF_ERROR(device.BindThread());
  // The scratch of Attention and prefill MatMul comes from the device's default pool in
  // stream order. With the pool's default release threshold (0) every synchronize hands
  // the memory back to the driver and each step allocates afresh; keeping up to
  // kPoolKeepBytes makes reuse free while leaving the rest for the slot cache.
  constexpr uint64_t kPoolKeepBytes = uint64_t{256} << 20;
  cudaMemPool_t pool = nullptr;
  MOE_CUDA_RETURN_IF_ERROR(cudaDeviceGetDefaultMemPool(&pool, device.ordinal()),
                           "configuring the kernels' scratch pool");
  uint64_t keep = 0;
  MOE_CUDA_RETURN_IF_ERROR(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep),
                           "configuring the kernels' scratch pool");
  if (keep < kPoolKeepBytes) {  // never lower what another part of the process chose
    keep = kPoolKeepBytes;
    MOE_CUDA_RETURN_IF_ERROR(
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep),
        "configuring the kernels' scratch pool");
  }
  return std::make_unique<CudaKernels>(device);
}

}  // namespace moe::cuda
