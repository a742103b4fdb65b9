// Tests for `align-batch doctor`: exit codes, messages, and the report on a fake 3 GiB container.
#include "orchestrator/cli/doctor_command.h"

#include <CLI/CLI.hpp>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

#include "tests/testutil/fake_machine.h"
#include "tests/testutil/read_all.h"
#include "tests/testutil/temp_dir.h"

namespace ab {
namespace {

struct Run {
  int status = -1;
  std::string out, err;
};


Run doctor(const DoctorFlags& flags) {
  std::FILE* out = std::tmpfile();
  std::FILE* err = std::tmpfile();
  REQUIRE(out);
  REQUIRE(err);
  Run r;
  r.status = run_doctor(flags, out, err);
  r.out = test::read_all_and_close(out);
  r.err = test::read_all_and_close(err);
  return r;
}


}  // namespace

TEST_CASE("doctor: a malformed --mem-budget or --reserve exits 2 with a message showing accepted forms") {
  Run a = doctor({"12 parsecs", "", "/", false});
  CHECK(a.status == 2);
  CHECK(a.out.empty());
  CHECK(a.err == "align-batch doctor: --mem-budget '12 parsecs': not a size; use e.g. 12G, 800M, 1.5T or 75%\n");
  Run b = doctor({"", "150%", "/", false});
  CHECK(b.status == 2);
  CHECK(b.err.find("--reserve '150%': a percentage must be above 0 and at most 100") != std::string::npos);
}

TEST_CASE("doctor: a fake 3 GiB container — text and JSON") {
  test::TempDir root;
  test::write_fake_container(root, {});  // 3 GiB v2 cgroup, no OOM kills, no pressure
  Run text = doctor({"", "", root.path().string(), false});
  CHECK(text.status == 0);
  CHECK(text.err.empty());
  CHECK(text.out.find("cgroup         v2 /job") != std::string::npos);
  CHECK(text.out.find("limit 3.0 GiB, usage 512.0 MiB, OOM kills 0") != std::string::npos);
  CHECK(text.out.find("budget         2.8 GiB = cgroup limit 3.0 GiB - reserve 256.0 MiB") != std::string::npos);
  CHECK(text.out.find("  - this process is in a cgroup limited to 3.0 GiB: the machine's free memory is not your budget") !=
        std::string::npos);

  Run json = doctor({"75%", "", root.path().string(), true});
  CHECK(json.status == 0);
  auto j = nlohmann::json::parse(json.out);
  CHECK(j["cgroup"]["version"] == 2);
  CHECK(j["cgroup"]["limit_bytes"] == 3221225472ull);
  CHECK(j["budget"]["effective_bytes"] == 3221225472ull * 3 / 4);
  CHECK(j["budget"]["ceiling_source"] == "--mem-budget");
  CHECK(j["memory"]["mem_total_bytes"] == 25165824ull * 1024);
  CHECK(j["gpu"]["available"].is_boolean());
  CHECK(j["psi"]["full_avg10"] == 0.0);
  CHECK(j["warnings"].size() >= 1);
}

TEST_CASE("doctor: a reserve that leaves nothing exits 2; the registered subcommand sets the exit code") {
  test::TempDir root;
  test::write_fake_container(root, {});  // 3 GiB v2 cgroup, no OOM kills, no pressure
  Run r = doctor({"", "3G", root.path().string(), false});
  CHECK(r.status == 2);
  CHECK(r.err == "align-batch doctor: --reserve 3.0 GiB leaves nothing of the 3.0 GiB cgroup limit; lower --reserve\n");

  // The registered command reads this machine's /proc and /sys: no machine here has 1 PiB to
  // reserve.
  CLI::App app{"test"};
  int exit_code = -1;
  add_doctor_command(app, exit_code);
  const char* argv[] = {"align-batch", "doctor", "--reserve", "1024T"};
  app.parse(4, const_cast<char**>(argv));
  CHECK(exit_code == 2);
}

}  // namespace ab
