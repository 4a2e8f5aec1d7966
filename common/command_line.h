// Command-line conventions shared by every binary.
#ifndef MOE_COMMON_COMMAND_LINE_H_
#define MOE_COMMON_COMMAND_LINE_H_

namespace moe {

// Abseil flags are spelled with underscores; users type dashes (--max-new-tokens).
// Rewrites the name part of every "--flag-name[=value]" argument to underscores, in
// place, before absl::ParseCommandLine. Arguments after a bare "--" are left alone.
void NormalizeFlagNames(int argc, char** argv);

}  // namespace moe

#endif  // MOE_COMMON_COMMAND_LINE_H_
