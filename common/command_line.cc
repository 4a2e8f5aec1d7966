#include "common/command_line.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/internal/program_name.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"

// Every binary's: ParseFlags applies it.
ABSL_FLAG(std::string, log_level, "info",
          "Least severe log lines printed to stderr: debug, info, warning or error");

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

namespace {

// Expands --flagfile=PATH[,PATH...] in place (one level), so that a file may use the
// dashed names the command line accepts; Abseil's own reader knows only underscores.
// The strings live for the process: parsed flags and positional arguments point into them.
std::vector<char*> ExpandFlagfiles(int argc, char** argv) {
  static std::vector<std::unique_ptr<std::string>> storage;
  std::vector<char*> out;
  for (int i = 0; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    bool after_dashes = false;
    for (int j = 1; j < i; ++j) after_dashes |= std::strcmp(argv[j], "--") == 0;
    if (after_dashes || !(absl::StartsWith(arg, "--flagfile=") || absl::StartsWith(arg, "-flagfile="))) {
      out.push_back(argv[i]);
      continue;
    }
    for (absl::string_view path : absl::StrSplit(arg.substr(arg.find('=') + 1), ',', absl::SkipEmpty())) {
      std::ifstream file{std::string(path)};
      if (!file) {
        std::fprintf(stderr, "error: cannot read --flagfile %s\n", std::string(path).c_str());
        std::exit(1);
      }
      for (std::string line; std::getline(file, line);) {
        const absl::string_view flag = absl::StripAsciiWhitespace(line);
        if (flag.empty() || flag[0] == '#') continue;
        storage.push_back(std::make_unique<std::string>(flag));
        out.push_back(storage.back()->data());
      }
    }
  }
  return out;
}

// Abseil's help names flags with underscores; users type (and docs show) dashes.
std::string DashedFlagNames(const std::string& help) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(help, '\n')) {
    std::string copy(line);
    if (absl::StartsWith(line, "    --")) {
      for (size_t i = 6; i < copy.size() && copy[i] != ' '; ++i) {
        if (copy[i] == '_') copy[i] = '-';
      }
    }
    absl::StrAppend(&out, copy, "\n");
  }
  out.pop_back();  // StrSplit saw one more line than there were newlines
  return out;
}

// The arguments ParseFlags parsed: flagfiles expanded, names normalized.
std::vector<char*>& ParsedArguments() {
  static std::vector<char*> arguments;
  return arguments;
}

}  // namespace

std::vector<char*> ParseFlags(int argc, char** argv) {
  std::vector<char*>& expanded = ParsedArguments();
  expanded = ExpandFlagfiles(argc, argv);
  argc = static_cast<int>(expanded.size());
  expanded.push_back(nullptr);
  argv = expanded.data();
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
        std::ostringstream text;
        absl::flags_internal::FlagsHelp(text, "", absl::flags_internal::HelpFormat::kHumanReadable,
                                        absl::ProgramUsageMessage());
        std::cout << DashedFlagNames(text.str());
        std::exit(0);
      }
    }
  }
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  const absl::StatusOr<logging::Severity> level = logging::ParseSeverity(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) {
    std::fprintf(stderr, "%s: error: %s\n",
                 absl::flags_internal::ShortProgramInvocationName().c_str(),
                 std::string(level.status().message()).c_str());
    std::exit(1);
  }
  logging::SetMinSeverity(*level);
  return positional;
}

std::vector<std::string> RepeatedFlagValues(absl::string_view name) {
  std::vector<std::string> values;
  const std::vector<char*>& args = ParsedArguments();
  const std::string flag = absl::StrCat("--", name), prefix = absl::StrCat(flag, "=");
  for (size_t i = 1; i < args.size() && args[i] != nullptr; ++i) {
    const absl::string_view arg = args[i];
    if (arg == "--") break;
    // One dash is Abseil's spelling too.
    const std::string dashed = absl::StartsWith(arg, "--") ? std::string(arg) : absl::StrCat("-", arg);
    if (absl::StartsWith(dashed, prefix)) {
      values.push_back(dashed.substr(prefix.size()));
    } else if (dashed == flag && i + 1 < args.size() && args[i + 1] != nullptr) {
      values.emplace_back(args[++i]);
    }
  }
  return values;
}

int ExitCode(absl::string_view tool, const absl::Status& status) {
  if (status.ok()) return 0;
  std::fprintf(stderr, "%s: error: %s\n", std::string(tool).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

}  // namespace moe
