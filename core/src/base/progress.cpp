// The progress display of training (train.cpp) and decoding (the runner's calibration points, sweep
// runs and analyses): an in-place bar on a terminal, periodic log lines elsewhere. It never touches
// stdout (kept clean for generated text and JSON).
#include "base/progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include <spdlog/spdlog.h>

namespace colm {

bool Progress::stderr_is_terminal() { return isatty(STDERR_FILENO) == 1; }

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  }
  return buf;
}

Progress::Progress(std::string label, int64_t total, int64_t start, double log_every_s)
    : label_(std::move(label)), total_(total), start_(start), step_(start), log_every_s_(log_every_s),
      tty_(stderr_is_terminal()), t0_(std::chrono::steady_clock::now()), last_draw_(t0_) {}

Progress Progress::counting(std::string label, std::string unit, int64_t total, int64_t start, double log_every_s) {
  Progress p(std::move(label), total, start, log_every_s);
  p.unit_ = std::move(unit);
  return p;
}

Progress::~Progress() {
  if (!finished_ && tty_ && drawn_) std::fputc('\n', stderr);
}

void Progress::update(int64_t step, double loss, int64_t tokens) {
  step_ = step;
  loss_ = loss;
  tokens_ += tokens;
  draw(step == total_);
}

void Progress::note(const std::string& message) {
  if (tty_ && drawn_) std::fputs("\r\033[K", stderr);
  spdlog::info("[{}] {}", label_, message);
  if (tty_ && drawn_) draw(true);
}

void Progress::draw(bool force) {
  const auto now = std::chrono::steady_clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  // Terminal: redraw at most 10 times a second; logs: one line every log_every_s.
  if (!force && since_draw < (tty_ ? 0.1 : log_every_s_)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - t0_).count();
  const int64_t done = step_ - start_;
  const double tok_s = elapsed > 0 ? static_cast<double>(tokens_) / elapsed : 0.0;
  const double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total_ - step_) : NAN;
  char stats[160];
  if (unit_.empty())
    std::snprintf(stats, sizeof stats, "step %lld/%lld  loss %.4f  %.0f tok/s  ETA %s", static_cast<long long>(step_),
                  static_cast<long long>(total_), loss_, tok_s, format_duration(eta).c_str());
  else
    std::snprintf(stats, sizeof stats, "%s %lld/%lld  %.0f tok/s  ETA %s", unit_.c_str(), static_cast<long long>(step_),
                  static_cast<long long>(total_), tok_s, format_duration(eta).c_str());
  if (tty_) {
    constexpr int kWidth = 24;
    const double frac = total_ > 0 ? static_cast<double>(step_) / static_cast<double>(total_) : 1.0;
    const int filled = static_cast<int>(frac * kWidth);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r\033[K[%s] [%s] %s", label_.c_str(), bar.c_str(), stats);
    std::fflush(stderr);
    drawn_ = true;
  } else {
    spdlog::info("[{}] {}", label_, stats);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_ && drawn_) {
    std::fputc('\n', stderr);
    std::fflush(stderr);
  }
}

}  // namespace colm
