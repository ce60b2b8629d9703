// Task: evaluation data (splits of examples), generation settings and the metric.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "colm/error.hpp"

namespace colm {

struct Example {
  std::string id;         // stable within the task and split
  std::string prompt;     // what the model is given
  std::string reference;  // the reference answer the metric compares against
  std::string target;     // the training target that follows the prompt (e.g. a worked solution)
};

struct GenerationSettings {
  int64_t max_tokens = 128;
  std::vector<std::string> stop;  // generation stops after any of these strings (kept in the output)
};

class COLM_VISIBLE Task {
 public:
  virtual ~Task();
  // Split names this task provides, e.g. {"train", "valid", "test"}.
  virtual std::vector<std::string> splits() const = 0;
  // Examples of one split; an unknown split is a colm::Error naming the available ones.
  virtual std::vector<Example> examples(const std::string& split) = 0;
  virtual GenerationSettings generation() const = 0;
  // Named metric values for one output, each in [0, 1] unless documented otherwise.
  virtual std::map<std::string, double> score(const Example& example, const std::string& output) const = 0;
  // The metric calibration maximises by default (e.g. "accuracy").
  virtual std::string primary_metric() const = 0;
  // Identity of the data (content hash of the examples of all splits + settings), for artifact keys.
  virtual std::string fingerprint();
};

}  // namespace colm
