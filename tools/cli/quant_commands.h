// The quantization commands of `moe`: convert, perplexity, sizes, and the converted
// model's part of `moe info`. Their flags are defined in quant_commands.cc; --model and
// --out are moe_main.cc's.
#ifndef MOE_TOOLS_CLI_QUANT_COMMANDS_H_
#define MOE_TOOLS_CLI_QUANT_COMMANDS_H_

#include "absl/status/status.h"
#include "common/model_dir.h"
#include "tools/cli/local_engine.h"

namespace moe {

// moe convert --in HF_DIR --out DIR --attn-bits 4|8|16 --expert-bits 2|3|4|8|16
//             [--group-size 64] [--method hqq|rtn] [--progress]
absl::Status RunConvertCommand();
// moe perplexity --model DIR --text-file F [--max-tokens N] [--window W], on the engine
// `engine` says (the device and expert-stack flags every in-process command takes).
absl::Status RunPerplexityCommand(const EngineOptions& engine);
// moe sizes --config config.json [--group-size 64]: bytes per scheme, by the format's
// own formulas.
absl::Status RunSizesCommand();
// Prints the scheme and bytes per expert / dense / experts / total of a converted model.
void PrintConvertedInfo(const ModelDir& dir);

}  // namespace moe

#endif  // MOE_TOOLS_CLI_QUANT_COMMANDS_H_
