// SlurmNode: runs scripts/slurm-node.sh start in a fresh temporary directory, stop at the end.
#include "tests/testutil/slurm_node.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace ab::test {

std::string shell_output(const std::string& command, int* exit_code) {
  std::string out;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) {
    if (exit_code) *exit_code = -1;
    return out;
  }
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (exit_code) *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

SlurmNode::SlurmNode(const std::filesystem::path& script, int real_memory_mb, int cpus) : script_(script) {
  char tmpl[] = "/tmp/ab-slurm-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    error_ = "cannot create a temporary directory";
    return;
  }
  dir_ = tmpl;
  int rc = 0;
  const std::string out = shell_output(script_.string() + " start " + dir_.string() + " " + std::to_string(real_memory_mb) +
                                           " " + std::to_string(cpus),
                                       &rc);
  started_ = true;
  if (rc != 0) {
    error_ = "scripts/slurm-node.sh start failed (exit " + std::to_string(rc) + "): " + out;
    return;
  }
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("SLURM_CONF=", 0) == 0) ::setenv("SLURM_CONF", line.substr(11).c_str(), 1);
    if (line.rfind("AB_SLURM_NODE=", 0) == 0) node_ = line.substr(14);
  }
  if (node_.empty()) error_ = "scripts/slurm-node.sh start printed no node name: " + out;
}

SlurmNode::~SlurmNode() {
  if (!started_) return;
  shell_output(script_.string() + " stop " + dir_.string());
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
  ::unsetenv("SLURM_CONF");
}

}  // namespace ab::test
