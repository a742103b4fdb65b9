// The scheduler's and the loop's reasons in words: each kind names its figures and says what to do.
#include "orchestrator/cli/decision_words.h"

#include <doctest/doctest.h>

using namespace ab;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

Reason reason_of(Reason::Kind kind) {
  Reason r;
  r.kind = kind;
  return r;
}

}  // namespace

TEST_CASE("failure reasons name the need and the budget and say what to raise") {
  Reason r = reason_of(Reason::Kind::kNeedsMoreThanBudget);
  r.need_bytes = 6 * kGiB + 100 * kMiB;
  r.limit_bytes = 4 * kGiB;
  CHECK(describe(r) == "needs ~6.1 GiB at peak but the budget is 4.0 GiB; raise --mem-budget or split the file");
  r.kind = Reason::Kind::kNeedsMoreThanVramBudget;
  r.need_bytes = 9 * kGiB;
  r.limit_bytes = 8 * kGiB;
  CHECK(describe(r) ==
        "needs ~9.0 GiB of GPU memory at peak but the VRAM budget is 8.0 GiB; raise --vram-budget or split the file");
  r = reason_of(Reason::Kind::kNeedsMoreBesideShared);
  r.need_bytes = 8 * kGiB;
  r.shared_bytes = 4 * kGiB;
  r.limit_bytes = 10 * kGiB;
  CHECK(describe(r) == "needs ~8.0 GiB at peak, plus 4.0 GiB of model weights shared by all workers, but the budget "
                       "is 10.0 GiB; raise --mem-budget or split the file");
  r = reason_of(Reason::Kind::kCrashedTooOften);
  r.count = 3;
  r.last_error = "killed by signal 6 (SIGABRT)";
  CHECK(describe(r) == "failed 3 times; last error: killed by signal 6 (SIGABRT)");
  r.last_error.clear();
  CHECK(describe(r) == "failed 3 times; last error: the worker died");
  r = reason_of(Reason::Kind::kGuardKilledTooOften);
  r.count = 3;
  r.need_bytes = 5 * kGiB;
  CHECK(describe(r) == "stopped 3 times to keep memory inside the budget (peak seen 5.0 GiB); lower the number of "
                       "workers or raise --mem-budget");
  CHECK(describe(reason_of(Reason::Kind::kNone)).empty());
}

TEST_CASE("kill reasons name what crossed which line, and the job they stop") {
  Reason r = reason_of(Reason::Kind::kMemoryAboveMark);
  r.used_bytes = 9 * kGiB + 512 * kMiB;
  r.line_bytes = 9 * kGiB;
  r.percent = 90;
  r.limit_bytes = 10 * kGiB;
  r.running_s = 1.25;
  r.job_bytes = 2 * kGiB + 512 * kMiB;
  CHECK(describe(r) == "memory in use 9.5 GiB is above 9.0 GiB (90% of the 10.0 GiB budget); stopping the youngest "
                       "job (running 1.2 s, using 2.5 GiB) to requeue it");
  r.kind = Reason::Kind::kVramAboveMark;
  r.used_bytes = 7 * kGiB + 512 * kMiB;
  r.line_bytes = 7 * kGiB + 200 * kMiB;
  r.limit_bytes = 8 * kGiB;
  CHECK(describe(r).find("GPU memory in use 7.5 GiB is above 7.2 GiB (90% of the 8.0 GiB VRAM budget)") == 0);
  r.kind = Reason::Kind::kAvailableBelowReserve;
  r.used_bytes = 400 * kMiB;
  r.limit_bytes = 512 * kMiB;
  CHECK(describe(r).find("available memory 400.0 MiB is below the reserve 512.0 MiB; stopping the youngest") == 0);
  r.kind = Reason::Kind::kPressureStall;
  r.percent = 35;
  r.limit_percent = 20;
  CHECK(describe(r).find("memory pressure (PSI full avg10) 35.0% is above 20.0%; stopping") == 0);
}

TEST_CASE("end reasons name the flag whose allowance the job overran, or who did not kill it") {
  Reason r = reason_of(Reason::Kind::kTimedOut);
  r.limit_s = 90;
  CHECK(describe(r) == "ran longer than --timeout (90 s) and was stopped; raise --timeout or check the file");
  r = reason_of(Reason::Kind::kHung);
  r.limit_s = 30;
  CHECK(describe(r) == "its worker stopped responding (no heartbeat for 30 s) and was killed");
  r = reason_of(Reason::Kind::kKilledByOther);
  r.last_error = "worker killed by signal 9";
  CHECK(describe(r) == "worker killed by signal 9 (not by align-batch, and no out-of-memory kill was recorded: "
                       "someone or something else sent it)");
}

TEST_CASE("setup faults name what one worker holds against the budget and say what to raise") {
  const std::string advice = "raise --mem-budget (or the container's memory limit), or use a smaller model";
  Reason r = reason_of(Reason::Kind::kWorkerOverBudgetLoading);
  r.need_bytes = 900 * kMiB;
  r.limit_bytes = 512 * kMiB;
  CHECK(describe(r) == "one align-batch-worker needs more than the budget even idle: stopped while still loading the "
                       "model (it held 900.0 MiB), it would need more than the budget 512.0 MiB to finish loading; " +
                           advice);
  r.kind = Reason::Kind::kWorkerAboveMarkLoading;
  r.percent = 90;
  CHECK(describe(r) == "one align-batch-worker needs more than the budget even idle: it held 900.0 MiB while still "
                       "loading the model, above 90% of the budget 512.0 MiB; " + advice);
  r.kind = Reason::Kind::kWorkerIdleOverBudget;
  CHECK(describe(r) == "one align-batch-worker needs 900.0 MiB even idle (its PSS once the model was loaded), more "
                       "than the budget 512.0 MiB; " + advice);
  r.kind = Reason::Kind::kWorkerPeaksOverBudget;
  r.count = 4;
  CHECK(describe(r) == "one align-batch-worker needs at least 900.0 MiB (the smallest peak of the 4 jobs history holds "
                       "for this model), more than the budget 512.0 MiB; " + advice);
  r = reason_of(Reason::Kind::kWorkerSetupFailed);
  r.last_error = "align-batch-worker exited with status 1 before it was ready (loading the model)";
  CHECK(describe(r) == r.last_error);
}

TEST_CASE("a silent worker's notice says how long it has been silent and what is done about it") {
  Reason r = reason_of(Reason::Kind::kWorkerSilent);
  r.silent_s = 2.25;
  CHECK(describe(r) == "its worker has not beaten for 2.2 s; killing it and retrying the file");
}

TEST_CASE("the Slurm executor's reasons name the task and the flag that gives it more") {
  Reason r = reason_of(Reason::Kind::kSlurmTimeLimit);
  r.subject = "123_4";
  CHECK(describe(r) == "its Slurm task 123_4 hit its time limit; give tasks more with --slurm-arg=--time=...");
  r = reason_of(Reason::Kind::kSlurmOutOfMemoryTooOften);
  r.subject = "125_0";
  r.count = 4;
  r.limit_bytes = 800 * kMiB;
  CHECK(describe(r) == "ran out of memory in 4 Slurm tasks (the last, 125_0, asked for --mem=800.0 MiB); give it a "
                       "node with more memory (--slurm-partition) or split the file");
  r = reason_of(Reason::Kind::kSlurmOverLargestNode);
  r.subject = "126_1";
  r.limit_bytes = 400 * kMiB;
  CHECK(describe(r) == "needs more than the largest node's memory (400.0 MiB): task 126_1 asked for all of it and ran "
                       "out; use a partition with bigger nodes (--slurm-partition) or split the file");
  r = reason_of(Reason::Kind::kSlurmSubmitted);
  r.subject = "127";
  r.count = 5;
  r.limit_bytes = 750 * kMiB;
  CHECK(describe(r) == "submitted array 127: 5 tasks at --mem=750.0 MiB each");
  r.count = 1;
  CHECK(describe(r) == "submitted array 127: 1 task at --mem=750.0 MiB each");
  r = reason_of(Reason::Kind::kSlurmCannotCreateDir);
  r.subject = "/out/.align-batch/slurm/3/array-0";
  r.last_error = "Permission denied";
  CHECK(describe(r) == "cannot create /out/.align-batch/slurm/3/array-0: Permission denied; check --out (it must be "
                       "on storage the nodes share)");
  r = reason_of(Reason::Kind::kSlurmCannotWriteShards);
  r.subject = "/out/a";
  CHECK(describe(r) == "cannot write the shard files in /out/a; check --out");
  r = reason_of(Reason::Kind::kSlurmCannotWriteScript);
  r.subject = "/out/a/task.sh";
  CHECK(describe(r) == "cannot write /out/a/task.sh; check --out");
}

TEST_CASE("a file the run cannot do, or whose outputs it cannot put in place: its words") {
  Reason r = reason_of(Reason::Kind::kNoTranscript);
  r.subject = "spk1-a";
  CHECK(describe(r) == "no transcript beside it (spk1-a.txt or .lab); add one or use --task transcribe");
  r = reason_of(Reason::Kind::kOutputMissing);
  r.subject = "out/spk1/a.json";
  CHECK(describe(r) == "output out/spk1/a.json is missing right after the worker wrote it; check --out");
  r = reason_of(Reason::Kind::kCannotCreateOutputDir);
  r.subject = "/out/spk1";
  r.last_error = "Not a directory";
  CHECK(describe(r) == "cannot create output directory /out/spk1: Not a directory; check --out");
}
