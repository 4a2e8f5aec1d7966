#include "coordinator/stop_string_filter.h"

#include <algorithm>

#include "common/unicode_text.h"

namespace moe::coordinator {

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const auto& s : stops_) hold_ = std::max(hold_, s.size() > 0 ? s.size() - 1 : 0);
}

std::string StopStringFilter::Push(const std::string& piece, bool* stopped) {
  const size_t search_from = all_.size() > hold_ ? all_.size() - hold_ : 0;
  all_ += piece;
  size_t cut = std::string::npos;
  for (const auto& s : stops_) {
    if (s.empty()) continue;
    const size_t at = all_.find(s, std::min(search_from, all_.size()));
    if (at != std::string::npos) cut = std::min(cut, at);
  }
  if (cut != std::string::npos) {
    *stopped = true;
    // A valid stop string found in valid text starts on a character boundary.
    return Take(std::max(cut, sent_));
  }
  const size_t safe = all_.size() > hold_ ? all_.size() - hold_ : 0;
  // The hold-back counts bytes; never send half a character.
  return Take(std::max(Utf8BoundaryAtOrBefore(all_, safe), sent_));
}

std::string StopStringFilter::Flush() { return Take(all_.size()); }

std::string StopStringFilter::Take(size_t end) {
  std::string out = all_.substr(sent_, end - sent_);
  sent_ = end;
  return out;
}

}  // namespace moe::coordinator
