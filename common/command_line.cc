#include "common/command_line.h"

#include <cstdio>
#include <cstring>
#include <string>

#include "absl/flags/parse.h"

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
  return absl::ParseCommandLine(argc, argv);
}

int ExitCode(absl::string_view tool, const absl::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "%s: error: %s\n", std::string(tool).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

}  // namespace moe
