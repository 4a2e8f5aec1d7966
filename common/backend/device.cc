// OpenDevice and CreateKernels: the CPU here, CUDA through the module the registry loads
// (cuda_module.h).
#include "common/backend/device.h"

#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_backend_kernels.h"
#include "common/backend/cpu/cpu_device.h"
#include "common/backend/cuda_module.h"
#include "common/backend/kernels.h"
#include "common/status.h"

namespace moe::backend {

absl::StatusOr<std::unique_ptr<Device>> OpenDevice(absl::string_view spec) {
  if (spec == "cpu") return std::make_unique<cpu::CpuDevice>();
  int ordinal = 0;
  if (spec != "cuda") {
    absl::string_view rest = spec;
    if (!absl::ConsumePrefix(&rest, "cuda:") || !absl::SimpleAtoi(rest, &ordinal) ||
        ordinal < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown device \"", spec, "\" (cpu, cuda or cuda:N)"));
    }
  }
  absl::StatusOr<const CudaModule*> cuda = LoadCudaModule();
  if (!cuda.ok()) {
    return absl::Status(cuda.status().code(),
                        absl::StrCat("device \"", spec, "\": ", cuda.status().message()));
  }
  return (*cuda)->OpenDevice(ordinal);
}

absl::StatusOr<std::unique_ptr<Kernels>> CreateKernels(Device& device) {
  switch (device.kind()) {
    case DeviceKind::kCpu:
      return std::make_unique<cpu::CpuKernels>();
    case DeviceKind::kCuda: {
      MOE_ASSIGN_OR_RETURN(const CudaModule* cuda, LoadCudaModule());
      return cuda->CreateKernels(device);
    }
  }
  return absl::UnimplementedError(absl::StrCat("no kernels for device ", device.name()));
}

absl::Status CopyToDeviceSync(Device& device, void* dst, const void* src, size_t bytes) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<Stream> stream, device.CreateStream());
  MOE_RETURN_IF_ERROR(device.CopyToDevice(dst, src, bytes, *stream));
  return stream->Synchronize();
}

absl::Status CopyToHostSync(Device& device, void* dst, const void* src, size_t bytes) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<Stream> stream, device.CreateStream());
  MOE_RETURN_IF_ERROR(device.CopyToHost(dst, src, bytes, *stream));
  return stream->Synchronize();
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> Upload(Device& device, const void* src,
                                                     size_t bytes) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<DeviceBuffer> buffer, device.Allocate(bytes));
  MOE_RETURN_IF_ERROR(CopyToDeviceSync(device, buffer->data(), src, bytes));
  return buffer;
}

WeightView WeightView::FromLayout(const quant::MatrixLayout& layout, const void* data) {
  WeightView w;
  w.rows = layout.rows;
  w.cols = layout.cols;
  w.data = data;
  w.layout = layout;
  w.format = layout.spec.quantized()               ? WeightFormat::kPacked
             : layout.spec.dtype16 == DType::kF16 ? WeightFormat::kF16
                                                   : WeightFormat::kBF16;
  return w;
}

int64_t WeightView::bytes() const {
  return format == WeightFormat::kF32 ? rows * cols * int64_t(sizeof(float))
                                      : layout.total_bytes;
}

}  // namespace moe::backend
