// Command-line conventions shared by every binary.
#ifndef MOE_COMMON_COMMAND_LINE_H_
#define MOE_COMMON_COMMAND_LINE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace moe {

// Abseil flags are spelled with underscores; users type dashes (--max-new-tokens).
// Rewrites the name part of every "--flag-name[=value]" argument to underscores, in
// place, before absl::ParseCommandLine. Arguments after a bare "--" are left alone.
void NormalizeFlagNames(int argc, char** argv);

// Expands --flagfile (dashed names allowed), NormalizeFlagNames, handles --help (every
// flag, exit 0), then absl::ParseCommandLine and applies --log-level (exit 1 naming the
// choices for a bad one); returns the positional arguments (argv[0] first).
std::vector<char*> ParseFlags(int argc, char** argv);

// Every value of a flag given more than once ("--stop a --stop=b"), in order; Abseil
// itself keeps only the last. Reads the arguments of the last ParseFlags.
std::vector<std::string> RepeatedFlagValues(absl::string_view name);

// A binary's exit code for `status`: 0, or 1 after printing one line
// "TOOL: error: MESSAGE" to stderr.
int ExitCode(absl::string_view tool, const absl::Status& status);

}  // namespace moe

#endif  // MOE_COMMON_COMMAND_LINE_H_
