// Text kept back from a client while it might still become a stop string. Not
// thread-safe; one per generation.
#ifndef MOE_COORDINATOR_STOP_STRING_FILTER_H_
#define MOE_COORDINATOR_STOP_STRING_FILTER_H_

#include <cstddef>
#include <string>
#include <vector>

namespace moe::coordinator {

// Pieces go in as they are decoded (valid UTF-8); what comes out is the text that can no
// longer be the start of a stop string, cut only at character boundaries, so every piece
// sent is valid UTF-8 whatever the length of the stop strings.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);
  // Appends a piece; returns the text now safe to send. Sets *stopped when a stop string
  // appeared (the returned text ends right before it).
  std::string Push(const std::string& piece, bool* stopped);
  // Everything still held back (at the end of a generation that did not stop).
  std::string Flush();

 private:
  std::string Take(size_t end);

  std::vector<std::string> stops_;
  size_t hold_ = 0;  // the longest stop string, less one byte
  std::string all_;
  size_t sent_ = 0;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_STOP_STRING_FILTER_H_
