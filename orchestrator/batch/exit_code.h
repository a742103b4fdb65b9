// The exit status of every align-batch command, one map (README, "Exit status").
#pragma once

namespace ab {

enum ExitCode : int {
  kExitOk = 0,
  /// A run processed the corpus and some files failed (each is listed with its reason).
  kExitFilesFailed = 1,
  /// The command could not do what was asked, for a reason of its own, not a file's: bad usage,
  /// a setup error (a model that does not load, a budget below one idle worker), the output or
  /// history in use by another run, a history that is missing, unreadable or has no such run.
  kExitCannotRun = 2,
  /// Stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
  kExitInterrupted = 130,
};

}  // namespace ab
