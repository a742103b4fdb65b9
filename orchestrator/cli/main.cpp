// align-batch: the parent process. Parses the command line and hands off to each command.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "orchestrator/batch/exit_code.h"
#include "orchestrator/cli/doctor_command.h"
#include "orchestrator/cli/history_command.h"
#include "orchestrator/cli/replay_command.h"
#include "orchestrator/cli/report_command.h"
#include "orchestrator/cli/run_command.h"

int main(int argc, char** argv) {
  CLI::App app{"align-batch: align or transcribe a speech corpus with as many workers as memory allows\n"
               "usage: align-batch [OPTIONS] CORPUS... [-- COMMAND ARGS...]   (external command: {in} {out} {stem} {dir})\n"
               "exit status (every command): 0 all done, 1 some files failed (listed), 2 could not run (bad usage, setup error, output in use by another run, no such history or run), 130 interrupted"};
  app.set_version_flag("--version", AB_VERSION);
  int exit_code = ab::kExitOk;
  // Everything after the first "--" is the external command, never an option of ours.
  const ab::SplitArgs split = ab::split_at_dashdash(argc, argv);
  ab::RunOptions run;
  ab::add_run_options(app, run);
  // Each command registers itself here: add_X_command(app, exit_code).
  ab::add_doctor_command(app, exit_code);
  ab::add_history_command(app, exit_code);
  ab::add_replay_command(app, exit_code);
  ab::add_report_command(app, exit_code);
  std::vector<const char*> cli_argv;
  for (const auto& a : split.cli) cli_argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(cli_argv.size()), cli_argv.data());
  } catch (const CLI::ParseError& e) {
    if (const std::string explained = ab::explain_parse_error(app, e); !explained.empty()) {
      std::fprintf(stderr, "align-batch: %s\n", explained.c_str());
      return ab::kExitCannotRun;
    }
    const int code = app.exit(e);
    return code == 0 ? ab::kExitOk : ab::kExitCannotRun;
  }
  ab::note_explicit_options(app, run);
  if (app.get_subcommands().empty()) exit_code = ab::run_batch(run, split.command, split.dashdash);
  return exit_code;
}
