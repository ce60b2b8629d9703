// A progress display: a one-line bar (step, loss, tokens/s, ETA; or examples done, tokens/s, ETA)
// redrawn in place when stderr is a terminal, periodic log lines otherwise (CI logs, files, pipes).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace colm {

class Progress {
 public:
  // total: the step the run ends at; start: the step it (re)starts from. label prefixes every line.
  // log_every_s: minimum seconds between log lines when not on a terminal.
  Progress(std::string label, int64_t total, int64_t start, double log_every_s = 10.0);
  // Counting `unit`s (e.g. "examples") instead of training steps: no loss is shown; update() takes
  // the number done so far and the tokens generated since the last update (its loss is ignored).
  // start: the units already done before this display began (a resumed run).
  static Progress counting(std::string label, std::string unit, int64_t total, int64_t start = 0,
                           double log_every_s = 10.0);
  ~Progress();
  // Reports that `step` is done; tokens: target tokens processed in this step.
  void update(int64_t step, double loss, int64_t tokens);
  // A message that must not be overwritten by the bar (e.g. a validation loss).
  void note(const std::string& message);
  void finish();

  static bool stderr_is_terminal();
  // "1h02m", "3m05s", "12s".
  static std::string format_duration(double seconds);

 private:
  void draw(bool force);
  std::string label_, unit_;
  int64_t total_, start_, step_;
  double loss_ = 0, log_every_s_;
  int64_t tokens_ = 0;
  bool tty_, finished_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point t0_, last_draw_;
};

}  // namespace colm
