// `align-batch history`: lists what history knows per job key, its runs and jobs; forgets keys.
#pragma once

namespace CLI {
class App;
}

namespace ab {

/// Registers the `history` command and its subcommands on `app`:
///   align-batch history [--history PATH | --out DIR] [--json | --csv]   keys, fits, measured error
///   align-batch history runs  [...]                                    runs, newest first
///   align-batch history run ID [...]                                   one run and its jobs
///   align-batch history forget KEY [--history PATH | --out DIR]        delete a key's jobs
/// The database is `--history PATH`, else default_history_path(--out, default "aligned"), the
/// same default the main command uses. It is never created here. Sets `exit_code` when the
/// command runs (exit_code.h): 0 done; 2 bad usage, no such database / run / key, or the database
/// failed.
void add_history_command(CLI::App& app, int& exit_code);

}  // namespace ab
