// align-batch: the parent process. Parses the command line and hands off to each command.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "orchestrator/doctor_command.h"
#include "orchestrator/history_command.h"
#include "orchestrator/replay_command.h"

int main(int argc, char** argv) {
  CLI::App app{"align-batch: align or transcribe a speech corpus with as many workers as memory allows"};
  app.set_version_flag("--version", AB_VERSION);
  int exit_code = 0;
  // Each command registers itself here: add_X_command(app, exit_code).
  ab::add_history_command(app, exit_code);
  ab::add_doctor_command(app, exit_code);
  ab::add_replay_command(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
