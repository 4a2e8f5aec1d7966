#include "common/backend/device_ipc_arena.h"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/arena_trust.h"
#include "common/checked_math.h"
#include "common/status.h"

namespace moe::backend {
namespace {

absl::Status NeedsCuda(const Device& device, absl::string_view what) {
  if (device.kind() == DeviceKind::kCuda) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      what, " needs a CUDA device; this process computes on ", device.name(),
      " and cannot map a CUDA IPC arena"));
}

}  // namespace

DeviceIpcArena::DeviceIpcArena(std::unique_ptr<CudaIpcMemory> memory, DeviceIpcHandle handle,
                               std::string id)
    : memory_(std::move(memory)), handle_(std::move(handle)), id_(std::move(id)) {}

DeviceIpcArena::~DeviceIpcArena() {
  if (owner_pidfd_ >= 0) ::close(owner_pidfd_);
}

absl::StatusOr<std::unique_ptr<DeviceIpcArena>> DeviceIpcArena::Create(Device& device,
                                                                       size_t bytes,
                                                                       const std::string& id) {
  MOE_RETURN_IF_ERROR(NeedsCuda(device, "a device activation arena"));
  MOE_RETURN_IF_ERROR(CheckArenaId(id));
  if (bytes == 0) {
    return absl::InvalidArgumentError("device arena: size 0");
  }
  MOE_ASSIGN_OR_RETURN(const CudaModule* module, LoadCudaModule());
  MOE_RETURN_IF_ERROR(device.BindThread());
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<CudaIpcMemory> cuda,
                       module->ExportIpcMemory(device.ordinal(), kHeaderBytes + bytes));
  MOE_ASSIGN_OR_RETURN(std::string bus, module->PciBusId(device.ordinal()));
  std::string header(kHeaderBytes, '\0');
  std::memcpy(header.data(), id.data(), id.size());
  MOE_RETURN_IF_ERROR(CopyToDeviceSync(device, cuda->device_ptr(), header.data(), kHeaderBytes));
  DeviceIpcHandle handle;
  handle.ipc_mem_handle = cuda->handle();
  handle.device = device.ordinal();
  handle.pci_bus_id = std::move(bus);
  handle.exporter_pid = static_cast<uint32_t>(::getpid());
  handle.size_bytes = bytes;
  return std::unique_ptr<DeviceIpcArena>(new DeviceIpcArena(std::move(cuda), std::move(handle), id));
}

absl::StatusOr<std::unique_ptr<DeviceIpcArena>> DeviceIpcArena::Open(Device& device,
                                                                     const DeviceIpcHandle& handle,
                                                                     const std::string& id) {
  MOE_RETURN_IF_ERROR(NeedsCuda(device, "the coordinator's device arena"));
  MOE_RETURN_IF_ERROR(CheckArenaId(id));
  if (handle.size_bytes == 0 || handle.size_bytes > (uint64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat("device arena: size ", handle.size_bytes,
                                                   " is not in [1, 2^40]"));
  }
  MOE_ASSIGN_OR_RETURN(const CudaModule* module, LoadCudaModule());
  MOE_RETURN_IF_ERROR(device.BindThread());
  MOE_ASSIGN_OR_RETURN(const std::string bus, module->PciBusId(device.ordinal()));
  if (handle.pci_bus_id != bus) {
    return absl::FailedPreconditionError(absl::StrCat(
        "different device: the coordinator's arena is on the GPU at PCI bus \"",
        handle.pci_bus_id, "\" (its cuda:", handle.device, "), this process computes on ",
        device.name(), " at PCI bus \"", bus, "\""));
  }
  // Taken before the handle is opened: names this very exporter even if its pid is reused.
  const int pidfd = handle.exporter_pid == 0
                        ? -1
                        : static_cast<int>(::syscall(SYS_pidfd_open,
                                                     static_cast<pid_t>(handle.exporter_pid), 0));
  auto opened = module->OpenIpcMemory(device.ordinal(), handle.ipc_mem_handle,
                                      kHeaderBytes + handle.size_bytes);
  if (!opened.ok()) {
    if (pidfd >= 0) ::close(pidfd);
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot open the coordinator's CUDA IPC arena: ", opened.status().message()));
  }
  auto arena = std::unique_ptr<DeviceIpcArena>(
      new DeviceIpcArena(*std::move(opened), handle, id));
  arena->importer_ = true;
  arena->owner_pidfd_ = pidfd;
  std::string header(kHeaderBytes, '\0');
  MOE_RETURN_IF_ERROR(
      CopyToHostSync(device, header.data(), arena->memory_->device_ptr(), kHeaderBytes));
  if (std::memcmp(header.data(), id.data(), id.size()) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the CUDA IPC arena of pid ", handle.exporter_pid, " does not carry the announced id ", id));
  }
  return arena;
}

absl::StatusOr<void*> DeviceIpcArena::At(uint64_t offset, uint64_t bytes) const {
  if (offset % sizeof(float) != 0 || !RangeWithin(offset, bytes, size())) {
    return absl::OutOfRangeError(absl::StrCat("device arena slice [", offset, ", +", bytes,
                                              " bytes) is unaligned or outside the ", size(),
                                              "-byte arena"));
  }
  return static_cast<void*>(static_cast<char*>(memory_->device_ptr()) + kHeaderBytes + offset);
}

bool DeviceIpcArena::OwnerAlive() const {
  if (!importer_ || owner_pidfd_ < 0) return true;  // ours, or no pidfd: assume alive
  // A pidfd becomes readable when its process exits.
  struct pollfd p = {owner_pidfd_, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

}  // namespace moe::backend
