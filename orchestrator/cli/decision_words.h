// The scheduler's, the loop's and the Slurm executor's reasons in words: what a kill, a failure
// decision, a job's end the loop diagnosed, the run's setup fault or a Slurm task's end tells the user.
#pragma once

#include <string>

#include "orchestrator/core/scheduler.h"

namespace ab {

/// `reason` as the user reads it, naming its figures and what to do: "needs ~6.1 GiB at peak
/// but the budget is 4.0 GiB; raise --mem-budget or split the file". Empty for kNone.
std::string describe(const Reason& reason);

}  // namespace ab
