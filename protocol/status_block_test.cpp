// Tests for the shared status block: a real shared-memory object written by one process, read by another.
#include "protocol/status_block.h"

#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <thread>

#include <doctest/doctest.h>

namespace ab {

namespace {
std::string unique_name(const char* what) { return std::string("ab-test-") + what + "-" + std::to_string(getpid()); }
bool shm_exists(const std::string& name) {
  try {
    boost::interprocess::shared_memory_object shm(boost::interprocess::open_only, name.c_str(),
                                                  boost::interprocess::read_only);
    return true;
  } catch (const boost::interprocess::interprocess_exception&) {
    return false;
  }
}
}  // namespace

TEST_CASE("status_block: a fresh block reads as starting with no job") {
  const std::string name = unique_name("fresh");
  auto block = StatusBlock::create(name);
  StatusSnapshot s = block->read();
  CHECK(s.phase == WorkerPhase::kStarting);
  CHECK(!s.job_id);
  CHECK(s.file.empty());
  CHECK(s.heartbeat == 0);
  CHECK(s.jobs_done == 0);
  CHECK(std::string(phase_name(WorkerPhase::kEmissions)) == "emissions");
}

TEST_CASE("status_block: create never takes over an object that exists already (another user's, say)") {
  const std::string name = unique_name("taken");
  {
    // Someone else's object of that name, with something in it.
    boost::interprocess::shared_memory_object other(boost::interprocess::create_only, name.c_str(),
                                                    boost::interprocess::read_write);
    other.truncate(4096);
  }
  bool already_exists = false;
  try {
    StatusBlock::create(name);
  } catch (const boost::interprocess::interprocess_exception& e) {
    already_exists = e.get_error_code() == boost::interprocess::already_exists_error;
  }
  CHECK(already_exists);
  CHECK(shm_exists(name));  // neither removed nor replaced by the failed create
  CHECK_THROWS(StatusBlock::open(name));  // and still not a status block: nothing was written to it
  boost::interprocess::shared_memory_object::remove(name.c_str());
}

TEST_CASE("status_block: what a child process writes, the parent reads without a round trip") {
  const std::string name = unique_name("child");
  auto owner = StatusBlock::create(name);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int rc = 0;
    try {
      auto block = StatusBlock::open(name);
      WorkerStatus& st = block->status();
      st.pid.store(getpid());
      st.set_phase(WorkerPhase::kAligning);
      st.set_job(42, "/corpus/speaker 1/a.flac");
      st.set_fraction(0.375);
      st.heap_bytes.store(123456789);
      for (int i = 0; i < 5; ++i) st.beat();
    } catch (...) {
      rc = 1;
    }
    _exit(rc);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  StatusSnapshot s = owner->read();
  CHECK(s.pid == child);
  CHECK(s.phase == WorkerPhase::kAligning);
  REQUIRE(s.job_id);
  CHECK(*s.job_id == 42);
  CHECK(s.file == "/corpus/speaker 1/a.flac");
  CHECK(s.fraction_done == doctest::Approx(0.375).epsilon(1e-6));
  CHECK(s.heap_bytes == 123456789u);
  CHECK(s.heartbeat == 5u);
  CHECK(s.heartbeat_unix_ms > 1'600'000'000'000);

  owner->status().clear_job();
  s = owner->read();
  CHECK(!s.job_id);
  CHECK(s.file.empty());
  CHECK(s.jobs_done == 1u);
}

TEST_CASE("status_block: the creator removes the object; open fails on missing or foreign objects") {
  const std::string name = unique_name("owner");
  {
    auto owner = StatusBlock::create(name);
    CHECK(shm_exists(name));
    auto reader = StatusBlock::open(name);  // a reader does not remove it
    reader.reset();
    CHECK(shm_exists(name));
  }
  CHECK(!shm_exists(name));
  CHECK_THROWS_AS(StatusBlock::open(name), boost::interprocess::interprocess_exception);

  const std::string foreign = unique_name("foreign");
  {
    namespace bip = boost::interprocess;
    bip::shared_memory_object shm(bip::create_only, foreign.c_str(), bip::read_write);
    shm.truncate(sizeof(WorkerStatus));  // zero-filled: wrong magic
  }
  CHECK_THROWS_WITH_AS(StatusBlock::open(foreign), doctest::Contains("not a version-1 worker status block"),
                       std::runtime_error);
  boost::interprocess::shared_memory_object::remove(foreign.c_str());
}

TEST_CASE("status_block: long paths keep their tail; a reader never sees a torn file name") {
  auto block = StatusBlock::local();
  const std::string long_path = "/" + std::string(3000, 'x') + "/end.wav";
  block->status().set_job(1, long_path);
  StatusSnapshot s = block->read();
  CHECK(s.file.size() == WorkerStatus::kFileBytes - 1);
  CHECK(s.file == long_path.substr(long_path.size() - (WorkerStatus::kFileBytes - 1)));

  // One thread alternates two names of different lengths; the reader must only ever see one of them.
  const std::string a = "/a/" + std::string(200, 'a') + ".wav";
  const std::string b = "/b/" + std::string(37, 'b') + ".flac";
  block->status().set_job(0, b);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) block->status().set_job(i, (i % 2) ? a : b);
  });
  int torn = 0, empty = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string f = block->read().file;
    if (f.empty()) ++empty;
    else if (f != a && f != b) ++torn;
  }

  stop = true;
  writer.join();
  CHECK(torn == 0);
  // A reader that cannot get a clean copy after many tries reports "" (unknown), never a mix; even
  // against a writer rewriting the name non-stop that stays rare.
  CHECK(empty < 200);
}

}  // namespace ab
