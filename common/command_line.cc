#include "common/command_line.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "absl/flags/internal/program_name.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/str_cat.h"

namespace moe {

void NormalizeFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    if (std::strcmp(arg, "--") == 0) return;
    if (arg[0] != '-') continue;
    char* name = arg + (arg[1] == '-' ? 2 : 1);
    for (char* p = name; *p != '\0' && *p != '='; ++p) {
      if (*p == '-') *p = '_';
    }
  }
}

std::vector<char*> ParseFlags(int argc, char** argv) {
  NormalizeFlagNames(argc, argv);
  absl::FlagsUsageConfig config;
  config.version_string = [] {
    return absl::StrCat("moe-offload ", MOE_VERSION, " (commit ", MOE_COMMIT, ")\n");
  };
  absl::SetFlagsUsageConfig(config);
  // Abseil's --help lists only flags of a file named like the binary (none here: it
  // said "No flags matched") and exits 1; asking for help is no error.
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) break;
    for (const char* help : {"--help", "-help", "--helpfull", "-helpfull", "--helpshort", "-h"}) {
      if (std::strcmp(argv[i], help) == 0) {
        absl::flags_internal::SetProgramInvocationName(argv[0]);
        absl::flags_internal::FlagsHelp(std::cout, "", absl::flags_internal::HelpFormat::kHumanReadable,
                                        absl::ProgramUsageMessage());
        std::exit(0);
      }
    }
  }
  return absl::ParseCommandLine(argc, argv);
}

int ExitCode(absl::string_view tool, const absl::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "%s: error: %s\n", std::string(tool).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

}  // namespace moe
