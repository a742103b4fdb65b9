// `align-batch doctor`: prints what memguard finds about this machine's memory and the budget the flags give.
#pragma once

#include <cstdio>
#include <string>

namespace CLI {
class App;
}

namespace ab {

/// Registers the `doctor` subcommand on `app`. When it runs it sets `exit_code` (exit_code.h): 0 when
/// it could report a budget, 2 for a malformed --mem-budget/--reserve or a budget that leaves nothing.
void add_doctor_command(CLI::App& app, int& exit_code);

/// doctor's flags, as given on the command line.
struct DoctorFlags {
  std::string mem_budget;  ///< "" when not given
  std::string reserve;     ///< "" when not given
  std::string root = "/";  ///< where /proc and /sys are read (the command: /; tests: a fake tree)
  bool json = false;
};

/// Runs doctor: the report on `out`, errors on `err`. Returns the exit status (0, or 2).
int run_doctor(const DoctorFlags& flags, std::FILE* out, std::FILE* err);

}  // namespace ab
