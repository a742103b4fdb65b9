// The scheduler's and the loop's reasons in words: every message a kill, a failure decision, a
// job's end the loop diagnosed or the run's setup fault shows the user.
#include "orchestrator/cli/decision_words.h"

#include "common/bytes.h"

namespace ab {
namespace {

// A kill's reason ends with the job it stops.
std::string victim(const Reason& r) {
  return "; stopping the youngest job (running " + fixed(r.running_s, 1) + " s, using " + format_bytes(r.job_bytes) +
         ") to requeue it";
}

// What a run that no worker fits in can do.
constexpr const char* kRaiseBudget = "raise --mem-budget (or the container's memory limit), or use a smaller model";

// The run's setup faults: a worker cannot start, or one worker alone does not fit the budget.
std::string setup_words(const Reason& r) {
  using K = Reason::Kind;
  const std::string held = format_bytes(r.need_bytes), budget = format_bytes(r.limit_bytes);
  switch (r.kind) {
    case K::kWorkerSetupFailed:
      return r.last_error;
    case K::kWorkerOverBudgetLoading:
      return "one align-batch-worker needs more than the budget even idle: stopped while still loading the model (it "
             "held " + held + "), it would need more than the budget " + budget + " to finish loading; " + kRaiseBudget;
    case K::kWorkerAboveMarkLoading:
      return "one align-batch-worker needs more than the budget even idle: it held " + held +
             " while still loading the model, above " + fixed(r.percent, 0) + "% of the budget " + budget + "; " +
             kRaiseBudget;
    case K::kWorkerIdleOverBudget:
      return "one align-batch-worker needs " + held + " even idle (its PSS once the model was loaded), more than the "
             "budget " + budget + "; " + kRaiseBudget;
    case K::kWorkerPeaksOverBudget:
      return "one align-batch-worker needs at least " + held + " (the smallest peak of the " + std::to_string(r.count) +
             " jobs history holds for this model), more than the budget " + budget + "; " + kRaiseBudget;
    default:
      return {};
  }
}

}  // namespace

std::string describe(const Reason& r) {
  using K = Reason::Kind;
  switch (r.kind) {
    case K::kNone:
      return {};
    case K::kNeedsMoreThanBudget:
      return "needs ~" + format_bytes(r.need_bytes) + " at peak but the budget is " + format_bytes(r.limit_bytes) +
             "; raise --mem-budget or split the file";
    case K::kNeedsMoreThanVramBudget:
      return "needs ~" + format_bytes(r.need_bytes) + " of GPU memory at peak but the VRAM budget is " +
             format_bytes(r.limit_bytes) + "; raise --vram-budget or split the file";
    case K::kNeedsMoreBesideShared:
      return "needs ~" + format_bytes(r.need_bytes) + " at peak, plus " + format_bytes(r.shared_bytes) +
             " of model weights shared by all workers, but the budget is " + format_bytes(r.limit_bytes) +
             "; raise --mem-budget or split the file";
    case K::kCrashedTooOften:
      return "failed " + std::to_string(r.count) + " times; last error: " +
             (r.last_error.empty() ? std::string("the worker died") : r.last_error);
    case K::kGuardKilledTooOften:
      return "stopped " + std::to_string(r.count) + " times to keep memory inside the budget (peak seen " +
             format_bytes(r.need_bytes) + "); lower the number of workers or raise --mem-budget";
    case K::kMemoryAboveMark:
      return "memory in use " + format_bytes(r.used_bytes) + " is above " + format_bytes(r.line_bytes) + " (" +
             fixed(r.percent, 0) + "% of the " + format_bytes(r.limit_bytes) + " budget)" + victim(r);
    case K::kVramAboveMark:
      return "GPU memory in use " + format_bytes(r.used_bytes) + " is above " + format_bytes(r.line_bytes) + " (" +
             fixed(r.percent, 0) + "% of the " + format_bytes(r.limit_bytes) + " VRAM budget)" + victim(r);
    case K::kAvailableBelowReserve:
      return "available memory " + format_bytes(r.used_bytes) + " is below the reserve " + format_bytes(r.limit_bytes) +
             victim(r);
    case K::kPressureStall:
      return "memory pressure (PSI full avg10) " + fixed(r.percent, 1) + "% is above " + fixed(r.limit_percent, 1) +
             "%" + victim(r);
    case K::kTimedOut:
      return "ran longer than --timeout (" + fixed(r.limit_s, 0) + " s) and was stopped; raise --timeout or check the file";
    case K::kHung:
      return "its worker stopped responding (no heartbeat for " + fixed(r.limit_s, 0) + " s) and was killed";
    case K::kKilledByOther:
      return r.last_error +
             " (not by align-batch, and no out-of-memory kill was recorded: someone or something else sent it)";
    case K::kWorkerSetupFailed:
    case K::kWorkerOverBudgetLoading:
    case K::kWorkerAboveMarkLoading:
    case K::kWorkerIdleOverBudget:
    case K::kWorkerPeaksOverBudget:
      return setup_words(r);
    case K::kWorkerSilent:
      return "its worker has not beaten for " + fixed(r.silent_s, 1) + " s; killing it and retrying the file";
  }
  return {};
}

}  // namespace ab
