// Replay: recorded jobs run through the batch driver (the real run's loop) on a virtual clock.
//
// One loop: the driver polls the same Scheduler, confirms kills with a fresh reading, maps ends
// to outcomes and refits predictions exactly as in a real run. Only the seams are simulated: a
// worker runner whose jobs take their recorded durations (slowed by processor sharing when they
// ask for more cores than the machine has), a memory probe that reads each job's recorded
// timeline (PSS and VRAM) at its age, and a clock that only the runner's wait() moves.
#pragma once

#include <cstdint>
#include <vector>

#include "history/run_sample.h"
#include "orchestrator/core/replay.h"
#include "orchestrator/core/scheduler.h"

namespace ab {

/// The simulated machine and settings.
struct ReplaySettings {
  SchedulerConfig scheduler;            ///< budget, max_workers (cap), high_water, VRAM budget, ...
  std::uint32_t cores = 0;              ///< 0: CPU never limits
  double prediction_scale = 1.0;        ///< margin: predictions are multiplied by this
  bool use_predictions = true;          ///< false: no job ever has a prediction (slow start only)
  /// A first run as the real loop runs it: jobs start without predictions, and the driver's
  /// PredictionPolicy learns each job that finishes and refits on refit_due()'s schedule (after
  /// each of the first 8, then at the 16th, 32nd, ...), handing the queued jobs its predictions
  /// times prediction_scale. Every replayed job is taken as one key's.
  bool cold = false;
  /// 50 ms: the real loop's default sampling tick (align-batch --sample-ms).
  std::int64_t sample_interval_ms = 50;
  /// The recorded run's own time before its first job started (history, the plan) and after its
  /// last job ended (the workers' exit once their stdin closes: LibTorch's teardown, 0.13 s of a
  /// 3.2 s examples/corpus run): the replayed run spends them too, so its makespan is the real
  /// run's wall time, not only its jobs'. 0: none (a synthetic workload).
  std::int64_t startup_ms = 0;
  std::int64_t shutdown_ms = 0;
  /// One recorded run replayed: the machine around its jobs, a reading a second (history's
  /// run_samples). At each moment the replay charges the recorded shared weights, sees the
  /// recorded pressure (PSI), and sees as available what was available then, give or take what
  /// its own jobs hold more or less than the real ones did: the other programs' memory is the
  /// recorded one. Past the last reading (a replay that runs longer than the run did) the weights
  /// and the others' memory hold, and there is no pressure. Empty: no weights, nothing else on the
  /// machine, no pressure (a synthetic workload, or a key's jobs of many runs).
  std::vector<RunSample> machine;
};

/// Replays jobs `picks[i]` (indices into `recorded`; the same record may be picked many times).
ReplayResult replay(const std::vector<RecordedJob>& recorded, const std::vector<std::uint32_t>& picks,
                    const ReplaySettings& settings);

/// Replays every combination of the grid over `base`.
std::vector<SweepRow> sweep(const std::vector<RecordedJob>& recorded, const std::vector<std::uint32_t>& picks,
                            const ReplaySettings& base, const SweepGrid& grid);

}  // namespace ab
