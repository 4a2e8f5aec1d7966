#include "common/arena_trust.h"

#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe {

std::string NewArenaId() {
  uint8_t bits[kArenaIdChars / 2];
  size_t got = 0;
  while (got < sizeof(bits)) {
    const ssize_t n = ::getrandom(bits + got, sizeof(bits) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    MOE_CHECK(n > 0) << "getrandom: " << std::strerror(errno);
    got += size_t(n);
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bits), sizeof(bits)));
}

absl::Status CheckArenaId(const std::string& id) {
  if (id.size() != kArenaIdChars) {
    return absl::InvalidArgumentError(absl::StrCat("arena id must be ", kArenaIdChars,
                                                   " hex digits (128 random bits), got ",
                                                   id.size(), " characters"));
  }
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return absl::InvalidArgumentError(
          absl::StrCat("arena id ", QuoteForMessage(id), " is not lowercase hex"));
    }
  }
  return absl::OkStatus();
}

bool UidAllowed(uint32_t uid, const std::vector<uint32_t>& allowed) {
  if (allowed.empty()) return uid == ::geteuid();
  return std::find(allowed.begin(), allowed.end(), uid) != allowed.end();
}

bool ArenaAttachPolicy::Allows(uint32_t uid) const { return UidAllowed(uid, allowed_uids); }

std::string ArenaAttachPolicy::AllowedForMessage() const {
  if (allowed_uids.empty()) return absl::StrCat(::geteuid());
  return absl::StrJoin(allowed_uids, ",");
}

absl::Status CheckProcessOwner(uint32_t pid, const ArenaAttachPolicy& policy) {
  struct stat st;
  // /proc/PID belongs to the process's effective uid.
  if (pid == 0 || ::stat(absl::StrCat("/proc/", pid).c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("no process ", pid, " holds the arena"));
  }
  if (!policy.Allows(st.st_uid)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "process ", pid, " runs as uid ", st.st_uid,
        ", which may not share an arena with this worker (allowed uids: ",
        policy.AllowedForMessage(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace moe
