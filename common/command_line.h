// Command-line conventions shared by every binary.
#ifndef MOE_COMMON_COMMAND_LINE_H_
#define MOE_COMMON_COMMAND_LINE_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace moe {

// Abseil flags are spelled with underscores; users type dashes (--max-new-tokens).
// Rewrites the name part of every "--flag-name[=value]" argument to underscores, in
// place, before absl::ParseCommandLine. Arguments after a bare "--" are left alone.
void NormalizeFlagNames(int argc, char** argv);

// NormalizeFlagNames, then absl::ParseCommandLine; returns the positional arguments
// (argv[0] first).
std::vector<char*> ParseFlags(int argc, char** argv);

// A binary's exit code for `status`: 0, or 1 after printing one line
// "TOOL: error: MESSAGE" to stderr.
int ExitCode(absl::string_view tool, const absl::Status& status);

}  // namespace moe

#endif  // MOE_COMMON_COMMAND_LINE_H_
