// The scheduler's, the loop's and the Slurm executor's reasons in words: every message a kill, a
// failure decision, a job's end the loop diagnosed, the run's setup fault or a Slurm task's end
// shows the user.
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

// The Slurm executor's: how a file ended in its tasks, a submission, a run directory it cannot write.
std::string slurm_words(const Reason& r) {
  using K = Reason::Kind;
  const std::string mem = format_bytes(r.limit_bytes);
  switch (r.kind) {
    case K::kSlurmTimeLimit:
      return "its Slurm task " + r.subject + " hit its time limit; give tasks more with --slurm-arg=--time=...";
    case K::kSlurmOutOfMemoryTooOften:
      return "ran out of memory in " + std::to_string(r.count) + " Slurm tasks (the last, " + r.subject +
             ", asked for --mem=" + mem + "); give it a node with more memory (--slurm-partition) or split the file";
    case K::kSlurmOverLargestNode:
      return "needs more than the largest node's memory (" + mem + "): task " + r.subject +
             " asked for all of it and ran out; use a partition with bigger nodes (--slurm-partition) or split the file";
    case K::kSlurmSubmitted:
      return "submitted array " + r.subject + ": " + std::to_string(r.count) + " task" + (r.count == 1 ? "" : "s") +
             " at --mem=" + mem + " each";
    case K::kSlurmCannotCreateDir:
      return "cannot create " + r.subject + ": " + r.last_error + "; check --out (it must be on storage the nodes share)";
    case K::kSlurmCannotWriteShards:
      return "cannot write the shard files in " + r.subject + "; check --out";
    case K::kSlurmCannotWriteScript:
      return "cannot write " + r.subject + "; check --out";
    default:
      return {};
  }
}

// A file the run cannot do, or whose outputs it cannot put in place.
std::string file_words(const Reason& r) {
  using K = Reason::Kind;
  switch (r.kind) {
    case K::kNoTranscript:
      return "no transcript beside it (" + r.subject + ".txt or .lab); add one or use --task transcribe";
    case K::kOutputMissing:
      return "output " + r.subject + " is missing right after the worker wrote it; check --out";
    case K::kCannotCreateOutputDir:
      return "cannot create output directory " + r.subject + ": " + r.last_error + "; check --out";
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
    case K::kSlurmTimeLimit:
    case K::kSlurmOutOfMemoryTooOften:
    case K::kSlurmOverLargestNode:
    case K::kSlurmSubmitted:
    case K::kSlurmCannotCreateDir:
    case K::kSlurmCannotWriteShards:
    case K::kSlurmCannotWriteScript:
      return slurm_words(r);
    case K::kNoTranscript:
    case K::kOutputMissing:
    case K::kCannotCreateOutputDir:
      return file_words(r);
  }
  return {};
}

}  // namespace ab
