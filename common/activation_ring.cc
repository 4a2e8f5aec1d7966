#include "common/activation_ring.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <new>

#include "absl/strings/str_cat.h"

namespace moe::ring {
namespace {

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until pred() or `spin` has passed; true when pred() held. Between looks at the
// clock it yields the CPU: a thread waiting for this core (the peer, when the scheduler
// put both here) runs at once instead of after our spin.
template <typename Pred>
bool SpinUntil(absl::Duration spin, Pred pred) {
  if (pred()) return true;
  if (spin <= absl::ZeroDuration()) return false;
  const auto end = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(spin);
  while (true) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() >= end) return pred();
    ::sched_yield();
  }
}

}  // namespace

void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) return;
  const struct timespec ts = absl::ToTimespec(timeout);
  // Not FUTEX_PRIVATE_FLAG: the word is in a mapping shared with another process.
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr,
            0);
}

absl::StatusOr<Ring> Ring::At(void* base, uint32_t slots) {
  if (slots < 1 || slots > kMaxRingSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ring of ", slots, " slots is not in [1, ", kMaxRingSlots, "]"));
  }
  if (base == nullptr || reinterpret_cast<uintptr_t>(base) % alignof(RingHeader) != 0) {
    return absl::InvalidArgumentError("the ring is not 64-byte aligned");
  }
  auto* header = static_cast<RingHeader*>(base);
  auto* entries = reinterpret_cast<RingEntry*>(static_cast<uint8_t*>(base) + sizeof(RingHeader));
  return Ring(header, entries, slots);
}

void Ring::Reset(uint32_t epoch) const {
  // The memory is shared and may hold anything: construct the words in place.
  new (header_) RingHeader{};
  header_->magic = kRingMagic;
  header_->slots = slots_;
  for (uint32_t s = 0; s < slots_; ++s) new (&entries_[s]) RingEntry{};
  header_->epoch.store(epoch, std::memory_order_seq_cst);
}

void Ring::Post(uint32_t slot, const RingRequest& request) const {
  RingEntry& e = entries_[slot];
  e.request = request;
  e.caller_sleeping.store(0, std::memory_order_relaxed);
  e.state.store(kPosted, std::memory_order_seq_cst);
  header_->doorbell.fetch_add(1, std::memory_order_seq_cst);
  // Pairs with AwaitDoorbell's store of worker_sleeping, then its re-read of the doorbell:
  // either it sees our bump and does not sleep, or we see it asleep and wake it.
  if (header_->worker_sleeping.load(std::memory_order_seq_cst) != 0) {
    FutexWakeAll(&header_->doorbell);
  }
}

bool Ring::AwaitDone(uint32_t slot, absl::Duration spin, absl::Duration timeout,
                     bool* caught_spinning) const {
  RingEntry& e = entries_[slot];
  auto done = [&] { return e.state.load(std::memory_order_acquire) == kDone; };
  const bool caught = SpinUntil(spin, done);
  if (caught_spinning != nullptr) *caught_spinning = caught;
  if (caught) return true;
  const uint32_t seen = e.state.load(std::memory_order_seq_cst);
  if (seen == kDone) return true;
  e.caller_sleeping.store(1, std::memory_order_seq_cst);
  if (e.state.load(std::memory_order_seq_cst) == seen) FutexWait(&e.state, seen, timeout);
  e.caller_sleeping.store(0, std::memory_order_relaxed);
  return done();
}

void Ring::Release(uint32_t slot) const {
  entries_[slot].state.store(kFree, std::memory_order_release);
}

int Ring::Claim() const {
  for (uint32_t s = 0; s < slots_; ++s) {
    uint32_t expected = kPosted;
    if (entries_[s].state.load(std::memory_order_relaxed) == kPosted &&
        entries_[s].state.compare_exchange_strong(expected, kRunning, std::memory_order_acq_rel)) {
      return static_cast<int>(s);
    }
  }
  return -1;
}

bool Ring::AwaitDoorbell(uint32_t seen, absl::Duration spin, absl::Duration timeout) const {
  auto rung = [&] { return header_->doorbell.load(std::memory_order_acquire) != seen; };
  if (SpinUntil(spin, rung)) return true;
  header_->worker_sleeping.store(1, std::memory_order_seq_cst);
  if (header_->doorbell.load(std::memory_order_seq_cst) == seen) {
    FutexWait(&header_->doorbell, seen, timeout);
  }
  header_->worker_sleeping.store(0, std::memory_order_relaxed);
  return false;
}

void Ring::Complete(uint32_t slot, const RingReply& reply) const {
  RingEntry& e = entries_[slot];
  e.reply = reply;
  e.state.store(kDone, std::memory_order_seq_cst);
  // Pairs with AwaitDone: it announces sleep, then re-reads the state before waiting.
  if (e.caller_sleeping.load(std::memory_order_seq_cst) != 0) FutexWakeAll(&e.state);
}

void Ring::MarkStopped(uint32_t epoch) const {
  header_->stopped_epoch.store(epoch, std::memory_order_seq_cst);
  for (uint32_t s = 0; s < slots_; ++s) FutexWakeAll(&entries_[s].state);
}

bool Ring::Stopped(uint32_t epoch) const {
  return epoch != 0 && header_->stopped_epoch.load(std::memory_order_acquire) == epoch;
}

RingReply ReplyFor(const absl::Status& status) {
  RingReply reply;
  reply.code = static_cast<int32_t>(status.code());
  const size_t n = std::min(status.message().size(), kReplyMessageChars - 1);
  std::memcpy(reply.message, status.message().data(), n);
  reply.message[n] = '\0';
  return reply;
}

absl::Status StatusOf(const RingReply& reply) {
  if (reply.code == 0) return absl::OkStatus();
  const char* end = std::find(reply.message, reply.message + kReplyMessageChars, '\0');
  const absl::string_view message(reply.message, static_cast<size_t>(end - reply.message));
  if (reply.code < 0 || reply.code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::InternalError(absl::StrCat("ring reply with unknown status code ", reply.code,
                                            ": ", message));
  }
  return absl::Status(static_cast<absl::StatusCode>(reply.code), message);
}

}  // namespace moe::ring
