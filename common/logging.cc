#include "common/logging.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace moe::logging {
namespace {
std::atomic<Severity> g_min_severity{Severity::kInfo};

char Letter(Severity s) {
  switch (s) {
    case Severity::kInfo: return 'I';
    case Severity::kWarning: return 'W';
    case Severity::kError: return 'E';
    case Severity::kFatal: return 'F';
  }
  return '?';
}
}  // namespace

void SetMinSeverity(Severity severity) { g_min_severity.store(severity); }
Severity MinSeverity() { return g_min_severity.load(std::memory_order_relaxed); }

LogMessage::LogMessage(Severity severity, const char* file, int line) : severity_(severity) {
  const char* base = std::strrchr(file, '/');
  stream_ << Letter(severity) << ' ' << (base ? base + 1 : file) << ':' << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string text = stream_.str();
  std::fwrite(text.data(), 1, text.size(), stderr);
  if (severity_ == Severity::kFatal) {
    std::fflush(stderr);
    std::abort();
  }
}

}  // namespace moe::logging
