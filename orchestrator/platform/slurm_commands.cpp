// SlurmCommands: sbatch, sacct, scancel and sinfo run as child processes, their output parsed.
#include "orchestrator/platform/slurm_commands.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace ab {
namespace {

std::string first_line(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

std::string tool_error(const std::vector<std::string>& argv, const CommandOutput& r) {
  const std::string said = first_line(r.err.empty() ? r.out : r.err);
  if (r.exit_code == 127) return fmt::format("{} not found on $PATH: install Slurm's client tools (slurm-client) or run where they are", argv[0]);
  return fmt::format("{} failed (exit {}){}{}", argv[0], r.exit_code, said.empty() ? "" : ": ", said);
}

}  // namespace

CommandOutput run_and_capture(const std::vector<std::string>& argv) {
  CommandOutput r;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return r;
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ::close(out_pipe[0]);
    ::close(out_pipe[1]);
    return r;
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (pid < 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return r;
  }
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

Result<std::string> SlurmCommands::submit(const SbatchArray& array) {
  const auto argv = sbatch_argv(array);
  const CommandOutput r = run_and_capture(argv);
  if (r.exit_code != 0) return Result<std::string>::failure(tool_error(argv, r));
  // --parsable: "JOBID" or "JOBID;CLUSTER".
  std::string id = first_line(r.out);
  id = id.substr(0, id.find(';'));
  if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
    return Result<std::string>::failure("sbatch printed '" + first_line(r.out) + "', not a job id");
  return id;
}

Result<std::vector<SacctRow>> SlurmCommands::query(const std::vector<std::string>& ids) {
  if (ids.empty()) return std::vector<SacctRow>{};
  std::string list;
  for (const auto& id : ids) list += (list.empty() ? "" : ",") + id;
  // The controller first (fresh States), then slurmdbd (MaxRSS, and tasks the controller has
  // forgotten after MinJobAge): merge_controller_states says why both.
  const std::vector<std::string> squeue = {"squeue", "-h", "-r", "-t", "all", "-j", list, "-O", "JobArrayID:|,State:|,exit_code:"};
  const CommandOutput q = run_and_capture(squeue);  // fails when it knows none of the ids: sacct alone then
  const std::vector<std::string> argv = {"sacct", "-n", "-P", "-j", list, "-o", "JobID,State,ExitCode,ReqMem,MaxRSS,ElapsedRaw"};
  const CommandOutput r = run_and_capture(argv);
  if (r.exit_code != 0) return Result<std::vector<SacctRow>>::failure(tool_error(argv, r));
  return merge_controller_states(parse_sacct(r.out), q.exit_code == 0 ? parse_squeue(q.out) : std::vector<SacctRow>{});
}

Result<Done> SlurmCommands::cancel(const std::vector<std::string>& ids) {
  if (ids.empty()) return Done{};
  std::vector<std::string> argv = {"scancel"};
  argv.insert(argv.end(), ids.begin(), ids.end());
  const CommandOutput r = run_and_capture(argv);
  if (r.exit_code != 0) return Result<Done>::failure(tool_error(argv, r));
  return Done{};
}

Result<std::vector<NodeGroup>> SlurmCommands::nodes(const std::string& partition) {
  std::vector<std::string> argv = {"sinfo", "-h", "-o", "%m %c %D"};
  if (!partition.empty()) argv.insert(argv.end(), {"-p", partition});
  const CommandOutput r = run_and_capture(argv);
  if (r.exit_code != 0) return Result<std::vector<NodeGroup>>::failure(tool_error(argv, r));
  auto nodes = parse_sinfo_nodes(r.out);
  if (nodes.empty())
    return Result<std::vector<NodeGroup>>::failure(
        fmt::format("sinfo reports no node memory{}; check --slurm-partition and that the nodes set RealMemory",
                    partition.empty() ? std::string() : " in partition " + partition));
  return nodes;
}

}  // namespace ab
