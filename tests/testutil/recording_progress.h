// RecordingProgress: the ProgressSink of the batch layer's tests. It keeps what the loop told it
// (starts, ends, messages, the last state) instead of drawing it; cli/progress_test.cpp tests
// how Progress words and draws the same calls.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "orchestrator/batch/progress_sink.h"

namespace ab::test {

class RecordingProgress : public ProgressSink {
 public:
  struct Start {
    std::string name;
    std::uint32_t attempt = 0;
    std::uint64_t estimate_bytes = 0;
  };
  struct End {
    std::string name, status, detail;
    std::uint64_t peak_bytes = 0;
    bool band_limited = false;
  };

  std::vector<Start> starts;
  std::vector<End> ends;
  std::vector<std::string> messages;
  ProgressState last;  ///< the state of the latest call

  void job_started(const std::string& name, std::uint32_t attempt, std::uint64_t estimate_bytes,
                   const ProgressState& state) override {
    starts.push_back({name, attempt, estimate_bytes});
    last = state;
  }
  void job_ended(const std::string& name, const std::string& status, const std::string& detail,
                 std::uint64_t peak_bytes, double, const ProgressState& state, bool band_limited) override {
    ends.push_back({name, status, detail, peak_bytes, band_limited});
    last = state;
  }
  void message(const std::string& text) override { messages.push_back(text); }
  /// Not the user's words (those are cli/'s): the kind and its two main figures, in bytes, then
  /// a count, an allowance (in ms), a subject and a last error where the reason has them.
  std::string describe(const Reason& reason) const override { return words(reason); }
  static std::string words(const Reason& r) {
    std::string w = "reason " + std::to_string(static_cast<int>(r.kind)) + ", need " + std::to_string(r.need_bytes) +
                    ", limit " + std::to_string(r.limit_bytes);
    if (r.count) w += ", count " + std::to_string(r.count);
    if (r.limit_s > 0) w += ", limit_ms " + std::to_string(std::llround(r.limit_s * 1000));
    if (!r.subject.empty()) w += ", subject " + r.subject;
    if (!r.last_error.empty()) w += ", last error " + r.last_error;
    return w;
  }
  /// The start of words(r) for a reason of `kind`.
  static std::string words_of(Reason::Kind kind) { return "reason " + std::to_string(static_cast<int>(kind)) + ", "; }
  void tick(const ProgressState& state) override { last = state; }
};

}  // namespace ab::test
