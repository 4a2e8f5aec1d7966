// The CPU as a device across a modelled link (--link-gbps, --link-latency-us): it wraps
// the CPU device and makes the copies the expert cache loads through
// (Device::CopyToDeviceForRead) take the time a link of that bandwidth and latency would,
// so that cache and prefetch effects are measurable without a GPU. The copies go on the
// link's timetable (link_schedule.h): copies of normal-priority streams (prefetches) are
// issued at once and queue behind each other; a copy of a high-priority stream (a demand
// load) overtakes them, taking over a moving one at its next chunk. No bytes move: the
// expert is read in place from the host store once its copy is done, so a prefetch costs
// no core, as a copy engine takes none from the kernels. Events recorded behind such a
// copy complete when it is done (later, if a demand copy pushes it back), and waiting on
// one sleeps until then.
//
// Everything else is the CPU device's: memory, kernels (kind() is kCpu), and the other
// copies, which move at once (a call's indices and gains: bytes per call, not per
// expert). Only the CPU can be wrapped: a GPU copies over its real link.
#ifndef MOE_EXPERT_WORKER_MODELLED_LINK_DEVICE_H_
#define MOE_EXPERT_WORKER_MODELLED_LINK_DEVICE_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/device.h"
#include "expert_worker/link_schedule.h"

namespace moe::expert_worker {

// Thread-safe.
class ModelledLinkDevice : public backend::Device {
 public:
  // `cpu` (which must outlive the device) across `link`. INVALID_ARGUMENT for a negative
  // or non-finite figure, a link that models nothing (0 GB/s and 0 us), or a device
  // other than the CPU (naming it).
  static absl::StatusOr<std::unique_ptr<ModelledLinkDevice>> Create(backend::Device* cpu,
                                                                    const LinkModel& link);
  const LinkModel& link() const { return link_; }

  backend::DeviceKind kind() const override { return cpu_->kind(); }
  std::string name() const override;
  int ordinal() const override { return cpu_->ordinal(); }
  absl::Status BindThread() const override { return cpu_->BindThread(); }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> Allocate(size_t bytes) override {
    return cpu_->Allocate(bytes);
  }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> AllocatePinnedHost(size_t bytes) override {
    return cpu_->AllocatePinnedHost(bytes);
  }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> RegisterHost(void* data, size_t bytes,
                                                                       bool read_only) override {
    return cpu_->RegisterHost(data, bytes, read_only);
  }
  using backend::Device::CreateStream;
  absl::StatusOr<std::unique_ptr<backend::Stream>> CreateStream(
      backend::StreamPriority priority) override;
  absl::StatusOr<std::unique_ptr<backend::Event>> CreateEvent(bool interprocess) override;
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes,
                            backend::Stream& stream) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes,
                          backend::Stream& stream) override;
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes,
                            backend::Stream& stream) override;
  absl::Status Memset(void* dst, int value, size_t bytes, backend::Stream& stream) override;
  // The modelled copy: `src` is read in place once the link has carried `bytes`.
  absl::StatusOr<const void*> CopyToDeviceForRead(void* dst, const void* src, size_t bytes,
                                                  backend::Stream& stream) override;
  absl::StatusOr<backend::MemoryInfo> Memory() const override { return cpu_->Memory(); }
  // It stands for a device across a link: data in host memory must cross it to be read.
  bool AsyncCopiesForRead() const override { return true; }
  bool HostMemoryIsDeviceMemory() const override { return false; }

 private:
  class LinkStream;
  class LinkEvent;
  ModelledLinkDevice(backend::Device* cpu, const LinkModel& link) : cpu_(cpu), link_(link) {}
  static LinkStream& Own(backend::Stream& stream);
  // Whether `copy` (null: none) is done now; blocks until it is (it may be pushed back
  // while we sleep).
  bool Done(const std::shared_ptr<const LinkSchedule::Copy>& copy) const;
  void WaitFor(const std::shared_ptr<const LinkSchedule::Copy>& copy) const;

  backend::Device* const cpu_;
  const LinkModel link_;
  mutable std::mutex mu_;
  LinkSchedule schedule_;  // guarded by mu_
  // The copies on the timetable not yet done: the schedule points at them, so they live
  // here until then, whoever else lets go of them. Guarded by mu_.
  std::vector<std::shared_ptr<LinkSchedule::Copy>> on_link_;
};

}  // namespace moe::expert_worker

#endif  // MOE_EXPERT_WORKER_MODELLED_LINK_DEVICE_H_
