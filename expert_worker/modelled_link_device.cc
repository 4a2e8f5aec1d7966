#include "expert_worker/modelled_link_device.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::expert_worker {

using Copy = LinkSchedule::Copy;

// The CPU stream it wraps, its priority (prefetch or demand on the link), and the last
// modelled copy queued on it. Not thread-safe, as every stream.
class ModelledLinkDevice::LinkStream : public backend::Stream {
 public:
  LinkStream(const ModelledLinkDevice* device, std::unique_ptr<backend::Stream> cpu,
             backend::StreamPriority priority)
      : device_(device), cpu_(std::move(cpu)), priority_(priority) {}
  absl::Status Synchronize() override {
    device_->WaitFor(last_);
    return cpu_->Synchronize();
  }
  // On the CPU work runs on the calling thread as it is queued, so waiting for an event
  // (a copy on the link) is waiting here.
  absl::Status Wait(const backend::Event& event) override { return event.Synchronize(); }
  void* native() const override { return nullptr; }

  backend::Stream& cpu() { return *cpu_; }
  backend::StreamPriority priority() const { return priority_; }
  const std::shared_ptr<const Copy>& last() const { return last_; }
  void set_last(std::shared_ptr<const Copy> copy) { last_ = std::move(copy); }

 private:
  const ModelledLinkDevice* device_;
  std::unique_ptr<backend::Stream> cpu_;
  const backend::StreamPriority priority_;
  std::shared_ptr<const Copy> last_;
};

// Behind the last modelled copy of the stream it was recorded on: complete when that copy
// is done on the timetable.
class ModelledLinkDevice::LinkEvent : public backend::Event {
 public:
  explicit LinkEvent(const ModelledLinkDevice* device) : device_(device) {}
  absl::Status Record(backend::Stream& stream) override {
    // A stream of another device has no modelled copies: complete at once, as on the CPU.
    auto* own = dynamic_cast<LinkStream*>(&stream);
    std::lock_guard<std::mutex> lock(device_->mu_);  // a waiter may read copy_ meanwhile
    copy_ = own != nullptr ? own->last() : nullptr;
    return absl::OkStatus();
  }
  absl::StatusOr<bool> Query() const override { return device_->Done(Recorded()); }
  absl::Status Synchronize() const override {
    device_->WaitFor(Recorded());
    return absl::OkStatus();
  }
  void* native() const override { return nullptr; }

 private:
  std::shared_ptr<const Copy> Recorded() const {
    std::lock_guard<std::mutex> lock(device_->mu_);
    return copy_;
  }
  const ModelledLinkDevice* device_;
  std::shared_ptr<const Copy> copy_;  // guarded by device_->mu_
};

absl::StatusOr<std::unique_ptr<ModelledLinkDevice>> ModelledLinkDevice::Create(
    backend::Device* cpu, const LinkModel& link) {
  MOE_RETURN_IF_ERROR(CheckLinkModel(link));
  if (!link.modelled()) {
    return absl::InvalidArgumentError("a link model of 0 GB/s and 0 us models nothing");
  }
  if (cpu->kind() != backend::DeviceKind::kCpu) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a modelled link (", link.gbps, " GB/s, ", link.latency_us,
        " us) is for the CPU device only; ", cpu->name(), " copies over its real link"));
  }
  return std::unique_ptr<ModelledLinkDevice>(new ModelledLinkDevice(cpu, link));
}

std::string ModelledLinkDevice::name() const {
  return absl::StrCat(cpu_->name(), " across a modelled link (", link_.gbps, " GB/s, ",
                      link_.latency_us, " us)");
}

ModelledLinkDevice::LinkStream& ModelledLinkDevice::Own(backend::Stream& stream) {
  // Streams are not shared between devices: one of another is a caller's bug.
  auto* own = dynamic_cast<LinkStream*>(&stream);
  MOE_CHECK(own != nullptr) << "a stream of another device given to a modelled link";
  return *own;
}

absl::StatusOr<std::unique_ptr<backend::Stream>> ModelledLinkDevice::CreateStream(
    backend::StreamPriority priority) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<backend::Stream> cpu, cpu_->CreateStream(priority));
  return std::make_unique<LinkStream>(this, std::move(cpu), priority);
}

absl::StatusOr<std::unique_ptr<backend::Event>> ModelledLinkDevice::CreateEvent(
    bool interprocess) {
  if (interprocess) {
    return absl::UnimplementedError("cpu: interprocess events exist only on CUDA");
  }
  return std::make_unique<LinkEvent>(this);
}

absl::Status ModelledLinkDevice::CopyToDevice(void* dst, const void* src, size_t bytes,
                                              backend::Stream& stream) {
  return cpu_->CopyToDevice(dst, src, bytes, Own(stream).cpu());
}
absl::Status ModelledLinkDevice::CopyToHost(void* dst, const void* src, size_t bytes,
                                            backend::Stream& stream) {
  return cpu_->CopyToHost(dst, src, bytes, Own(stream).cpu());
}
absl::Status ModelledLinkDevice::CopyOnDevice(void* dst, const void* src, size_t bytes,
                                              backend::Stream& stream) {
  return cpu_->CopyOnDevice(dst, src, bytes, Own(stream).cpu());
}
absl::Status ModelledLinkDevice::Memset(void* dst, int value, size_t bytes,
                                        backend::Stream& stream) {
  return cpu_->Memset(dst, value, bytes, Own(stream).cpu());
}

absl::StatusOr<const void*> ModelledLinkDevice::CopyToDeviceForRead(void*, const void* src,
                                                                    size_t bytes,
                                                                    backend::Stream& stream) {
  LinkStream& own = Own(stream);
  auto copy = std::make_shared<Copy>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Copies done before Schedule reads the clock are the ones it drops from its list
    // too: only those may be let go of here, while it no longer points at them.
    const LinkSchedule::Clock::time_point before = LinkSchedule::Clock::now();
    schedule_.Schedule(own.priority() == backend::StreamPriority::kNormal, link_, bytes,
                       copy.get());
    std::erase_if(on_link_, [&](const std::shared_ptr<Copy>& c) { return c->ready <= before; });
    on_link_.push_back(copy);
  }
  own.set_last(std::move(copy));
  return src;
}

bool ModelledLinkDevice::Done(const std::shared_ptr<const Copy>& copy) const {
  if (copy == nullptr) return true;
  std::lock_guard<std::mutex> lock(mu_);
  return copy->ready <= LinkSchedule::Clock::now();
}

void ModelledLinkDevice::WaitFor(const std::shared_ptr<const Copy>& copy) const {
  if (copy == nullptr) return;
  while (true) {
    LinkSchedule::Clock::time_point ready;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready = copy->ready;
    }
    if (ready <= LinkSchedule::Clock::now()) return;
    LinkSchedule::WaitUntil(ready);  // then look again: a demand copy may have pushed it back
  }
}

}  // namespace moe::expert_worker
