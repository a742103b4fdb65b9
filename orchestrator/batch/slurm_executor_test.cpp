// Level-2 tests of the Slurm executor: its loop against a fake cluster (no Slurm), a real corpus
// directory and real SQLite histories (the main one, and each task's, as a real task writes it).
#include "tests/testutil/recording_progress.h"
#include "orchestrator/batch/slurm_executor.h"

#include <sys/stat.h>

#include <doctest/doctest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "history/history_store.h"
#include "orchestrator/batch/resume.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using namespace ab;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
const std::string kKey = "cmd:fake {in}";

/// A file's true peak from its name "<anything>-n<MIB>[-...].wav"; "bad" in the name: the task's
/// align-batch reports the file failed (not memory); "slow": its task never ends until cancelled.
std::uint64_t true_need_bytes(const std::string& path) {
  const std::string stem = fs::path(path).stem().string();
  const auto at = stem.find("-n");
  return std::stoull(stem.substr(at + 2)) * kMiB;
}

/// Runs each submitted task at the first query after its submission: files in list order; a
/// file whose true need exceeds the task's --mem ends the task OUT_OF_MEMORY (files before it
/// are done, recorded in the task's history as a real task's align-batch records them).
class FakeCluster : public SlurmCluster {
 public:
  struct TaskOutcome {
    std::string state = "COMPLETED";
    int exit_code = 0;
    std::uint64_t max_rss_bytes = 0;
  };
  Result<std::string> submit(const SbatchArray& a) override {
    if (!submit_error.empty()) return Result<std::string>::failure(submit_error);
    const std::string id = std::to_string(next_id_++);
    submitted.push_back(a);
    ids.push_back(id);
    for (std::size_t t = 0; t < a.task_count; ++t) pending_[id].push_back({fs::path(a.script_path).parent_path(), t, a.mem_bytes});
    return id;
  }
  Result<std::vector<SacctRow>> query(const std::vector<std::string>& wanted) override {
    ++queries;
    std::vector<SacctRow> rows;
    for (const auto& id : wanted) {
      for (auto& p : pending_[id]) {
        const std::string tid = id + "_" + std::to_string(p.task);
        if (!outcomes_.count(tid)) {
          if (cancelled_.count(id)) outcomes_[tid] = {"CANCELLED", 0, 0};
          else if (auto o = run_task(p)) outcomes_[tid] = *o;
          else continue;  // slow: still running
        }
        const auto& o = outcomes_[tid];
        SacctRow r;
        r.array_job_id = id;
        r.task = static_cast<std::uint32_t>(p.task);
        r.state = o.state;
        r.exit_code = o.exit_code;
        r.req_mem_bytes = p.mem_bytes;
        r.elapsed_s = 2;
        rows.push_back(r);
        if (o.state != "CANCELLED") {
          r.step = "batch";
          r.max_rss_bytes = o.max_rss_bytes;
          rows.push_back(r);
        }
      }
    }
    return rows;
  }
  Result<Done> cancel(const std::vector<std::string>& which) override {
    for (const auto& id : which) cancelled_.insert(id);
    cancel_calls.push_back(which);
    return Done{};
  }
  Result<std::vector<NodeGroup>> nodes(const std::string&) override { return std::vector<NodeGroup>{{node_mem_bytes, node_cpus, 1}}; }

  std::uint64_t node_mem_bytes = 1000 * kMiB;
  std::uint32_t node_cpus = 8;
  std::string submit_error;
  std::vector<SbatchArray> submitted;
  std::vector<std::string> ids;
  std::vector<std::vector<std::string>> cancel_calls;
  int queries = 0;

 private:
  struct Pending {
    fs::path dir;
    std::size_t task;
    std::uint64_t mem_bytes;
  };
  std::optional<TaskOutcome> run_task(const Pending& p) {
    std::ifstream in(p.dir / (std::to_string(p.task) + ".shard"), std::ios::binary);
    const auto shard = parse_shard(std::string(std::istreambuf_iterator<char>(in), {}));
    REQUIRE(shard);
    const std::vector<std::string>& paths = shard->files;
    for (const auto& path : paths)
      if (path.find("slow") != std::string::npos) return std::nullopt;
    auto h = HistoryStore::open(p.dir / (std::to_string(p.task) + ".sqlite"));
    REQUIRE(h.ok());
    auto run = h.value()->begin_run({});
    REQUIRE(run.ok());
    TaskOutcome o;
    for (const auto& path : paths) {
      JobRecord rec;
      rec.run_id = run.value();
      rec.input_path = path;
      rec.input_size_bytes = fs::file_size(path);
      struct stat st {};
      REQUIRE(::stat(path.c_str(), &st) == 0);
      rec.input_mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
      rec.job_key = kKey;
      const std::uint64_t need = true_need_bytes(path);
      if (need + 24 * kMiB > p.mem_bytes) {
        // The kernel kills the job inside the task's cgroup; the task's align-batch records a died
        // attempt, and Slurm reports the whole task OUT_OF_MEMORY.
        rec.status = JobStatus::kDied;
        rec.peak_pss_bytes = p.mem_bytes - 24 * kMiB;
        rec.error = "killed by signal 9";
        REQUIRE(h.value()->record_job(rec).ok());
        o.state = "OUT_OF_MEMORY";
        o.exit_code = 0;
        o.max_rss_bytes = p.mem_bytes;
        return o;
      }
      if (path.find("bad") != std::string::npos) {
        rec.status = JobStatus::kFailed;
        rec.error = path + ": cannot decode audio; re-encode it";
        o.state = "FAILED";
        o.exit_code = 1;
      } else {
        rec.peak_pss_bytes = rec.peak_rss_bytes = need;
        // Its output, where the task's --out puts it, recorded as a real task records it.
        const fs::path out = fs::path(shard->out_dir) / (fs::path(path).stem().string() + ".done");
        fs::create_directories(out.parent_path());
        std::ofstream(out) << "done\n";
        rec.outputs.push_back(*stat_output(out.string()));
      }
      rec.task = "command";
      o.max_rss_bytes = std::max(o.max_rss_bytes, need);
      REQUIRE(h.value()->record_job(rec).ok());
    }
    return o;
  }
  int next_id_ = 100;
  std::map<std::string, std::vector<Pending>> pending_;
  std::map<std::string, TaskOutcome> outcomes_;
  std::set<std::string> cancelled_;
};

struct World {
  test::TempDir dir{"ab-slurm"};
  std::unique_ptr<HistoryStore> history;
  RunLoopConfig loop;
  SlurmConfig config;
  FakeCluster cluster;

  World() {
    auto h = HistoryStore::open(dir.path() / "out" / ".align-batch" / "history.sqlite");
    REQUIRE(h.ok());
    history = std::move(h.value());
    loop.out_dir = dir.path() / "out";
    loop.job_key = kKey;
    loop.command = CommandTemplate::parse({"fake", "{in}", "{out}"}).value();
    config.align_batch_path = "/bin/align-batch";
    config.tail = {"--", "fake", "{in}", "{out}"};
    config.poll_ms = 0;
    config.settle_ms = 0;
    config.plan.high_water = 1.0;
  }
  /// Files of `kib` KiB named NAME-nMIB.wav: history teaches 1 MiB of peak per KiB of input.
  void file(const std::string& name, std::size_t kib, const std::string& sub = "") {
    dir.write("corpus/" + sub + name + ".wav", std::string(kib * 1024, 'x'));
  }
  /// Past runs: ok jobs of 10..300 KiB whose peaks are 1 MiB per KiB (an exact line), each
  /// `wall_s` long.
  void teach_history(double wall_s = 0) {
    auto run = history->begin_run({});
    REQUIRE(run.ok());
    for (std::uint64_t kib = 10; kib <= 300; kib += 10) {
      JobRecord rec;
      rec.run_id = run.value();
      rec.input_path = "/old/" + std::to_string(kib) + ".wav";
      rec.input_size_bytes = kib * 1024;
      rec.job_key = kKey;
      rec.peak_pss_bytes = rec.peak_rss_bytes = kib * kMiB;
      rec.wall_s = wall_s;
      REQUIRE(history->record_job(rec).ok());
    }
  }
  RunSummary run(std::function<int()> interrupts = nullptr) {
    Corpus corpus = scan_corpus({(dir.path() / "corpus").string()}, loop.out_dir);
    test::RecordingProgress progress;
    SlurmExecutor executor(loop, config, cluster, history.get(), progress, std::move(interrupts));
    REQUIRE(executor.prepare() == "");
    auto s = executor.run(corpus);
    stats = executor.stats();
    messages = progress.messages;
    return s;
  }
  /// Per file stem, the statuses the main history holds for it, in order.
  std::map<std::string, std::vector<std::string>> main_rows() {
    std::map<std::string, std::vector<std::string>> out;
    auto rows = history->jobs_for_key(kKey);
    REQUIRE(rows.ok());
    for (auto it = rows.value().rbegin(); it != rows.value().rend(); ++it)
      if (it->input_path.rfind("/old/", 0) != 0) out[fs::path(it->input_path).stem().string()].push_back(to_string(it->status));
    return out;
  }
  SlurmStats stats;
  std::vector<std::string> messages;  ///< the last run's plain messages
};

}  // namespace

TEST_CASE("slurm executor: when the cluster would run many tasks one after another in each slot, a task runs several files") {
  World w;
  w.teach_history(2.0);  // jobs of 2 s
  // 24 files needing 200 MiB on one node of 1000 MiB and 8 CPUs: 4 tasks at once, 6 waves of
  // one file a task; a task's 1 s overhead against 2 s jobs: sqrt(2 x 6 x 1 / 2) = 2.4 -> 2 files.
  for (int i = 0; i < 24; ++i) w.file("f" + std::to_string(i) + "-n200", 200);
  auto s = w.run();
  CHECK(s.exit_code() == 0);
  CHECK(s.done == 24);
  REQUIRE(w.cluster.submitted.size() == 1);
  CHECK(w.cluster.submitted[0].task_count == 12);
  CHECK(w.stats.tasks == 12);
  SUBCASE("jobs of unknown length: one file a task, as before") {
    World v;
    v.teach_history();
    for (int i = 0; i < 24; ++i) v.file("f" + std::to_string(i) + "-n200", 200);
    CHECK(v.run().done == 24);
    CHECK(v.stats.tasks == 24);
  }
}

TEST_CASE("slurm executor, warm: arrays sized from history, every file done, peaks merged into the main history") {
  World w;
  w.teach_history();
  w.file("a-n100", 100);
  w.file("b-n200", 200);
  w.file("c-n205", 205);
  w.file("d-n50", 50);
  auto s = w.run();
  CHECK(s.exit_code() == 0);
  CHECK(s.done == 4);
  CHECK(s.failed.empty());
  CHECK(w.stats.out_of_memory_tasks == 0);
  // 200 and 205 share an array (within 1.15); 100 and 50 are each their own class.
  REQUIRE(w.cluster.submitted.size() == 3);
  CHECK(w.cluster.submitted[0].task_count == 2);
  // Each submission is told as a typed notice (cli/ words it): the array, its tasks and their --mem.
  REQUIRE(w.messages.size() >= 1);
  CHECK(w.messages[0] == test::RecordingProgress::words_of(Reason::Kind::kSlurmSubmitted) + "need 0, limit " +
                             std::to_string(w.cluster.submitted[0].mem_bytes) + ", count 2, subject " + w.cluster.ids[0]);
  // Each request is the prediction plus the task overhead, not a blanket figure.
  const std::uint64_t want0 = task_mem_bytes(205 * kMiB, 1, w.config.plan);
  CHECK(w.cluster.submitted[0].mem_bytes >= want0);
  CHECK(w.cluster.submitted[0].mem_bytes <= want0 + want0 / 10);
  CHECK(w.cluster.submitted[2].mem_bytes < 100 * kMiB);
  CHECK(w.cluster.submitted[0].extra_args.empty());
  auto rows = w.main_rows();
  CHECK(rows["a-n100"] == std::vector<std::string>{"ok"});
  CHECK(rows["c-n205"] == std::vector<std::string>{"ok"});
  // sacct's figures: one row per task in the run's Slurm tasks, none among the jobs.
  auto runs = w.history->runs(1);
  REQUIRE(runs.ok());
  REQUIRE(runs->size() == 1);
  auto tasks = w.history->slurm_tasks_for_run(runs->front().id);
  REQUIRE(tasks.ok());
  CHECK(tasks.value().size() == 4);
  for (const auto& t : tasks.value()) CHECK(t.job_key == kKey);
  auto keys = w.history->keys();
  REQUIRE(keys.ok());
  REQUIRE(keys->size() == 1);
  CHECK(keys->front().job_key == kKey);
  // The task script runs the tasks' align-batch with each task's history and shard file.
  std::ifstream script(fs::path(w.cluster.submitted[0].script_path));
  std::stringstream ss;
  ss << script.rdbuf();
  CHECK(ss.str().find("/bin/align-batch --history") != std::string::npos);
  CHECK(ss.str().find(".shard -- fake") != std::string::npos);
  CHECK(ss.str().find("-- fake '{in}' '{out}'") != std::string::npos);

  SUBCASE("a second run submits nothing: every file is done in the main history") {
    w.cluster.submitted.clear();
    auto again = w.run();
    CHECK(again.exit_code() == 0);
    CHECK(again.skipped == 4);
    CHECK(w.cluster.submitted.empty());
  }
}

TEST_CASE("slurm executor: a task too small ends OUT_OF_MEMORY; its file is resubmitted with a raised request and finishes") {
  World w;
  w.teach_history();
  w.file("ok-n100", 100);
  // 100 KiB predicts 100 MiB, but it needs 300: 100 -> 200 -> 400 MiB (two resubmissions).
  w.file("liar-n300", 100);
  auto s = w.run();
  CHECK(s.exit_code() == 0);
  CHECK(s.done == 2);
  CHECK(w.stats.out_of_memory_tasks == 2);
  CHECK(w.stats.resubmitted_files == 2);
  CHECK(s.retried == 2);
  auto rows = w.main_rows();
  CHECK(rows["liar-n300"] == std::vector<std::string>{"died", "died", "ok"});
  // Each resubmission asked for more than the last.
  std::vector<std::uint64_t> liar_mem;
  for (std::size_t k = 1; k < w.cluster.submitted.size(); ++k) liar_mem.push_back(w.cluster.submitted[k].mem_bytes);
  REQUIRE(liar_mem.size() == 2);
  CHECK(liar_mem[0] > w.cluster.submitted[0].mem_bytes);
  CHECK(liar_mem[1] > liar_mem[0]);
  CHECK(liar_mem[1] >= 300 * kMiB);
}

TEST_CASE("slurm executor: a file bigger than the largest node fails naming the node's memory; the rest finish") {
  World w;
  w.teach_history();
  w.cluster.node_mem_bytes = 400 * kMiB;
  w.file("ok-n100", 100);
  w.file("huge-n900", 300);  // predicted 300 MiB, needs 900: raised to the node's 400, still out
  w.file("bad-n50", 50);
  auto s = w.run();
  CHECK(s.exit_code() == 1);
  CHECK(s.done == 1);
  REQUIRE(s.failed.size() == 2);
  std::map<std::string, std::string> reasons;
  for (const auto& f : s.failed) reasons[fs::path(f.path).stem().string()] = f.reason;
  // The executor's reason (cli/ words it): the largest node's memory, and the task that asked for all of it.
  CHECK(reasons["huge-n900"].rfind(test::RecordingProgress::words_of(Reason::Kind::kSlurmOverLargestNode), 0) == 0);
  CHECK(reasons["huge-n900"].find(", limit " + std::to_string(400 * kMiB) + ", subject ") != std::string::npos);
  CHECK(reasons["bad-n50"] == "cannot decode audio; re-encode it");
  for (const auto& a : w.cluster.submitted) CHECK(a.mem_bytes <= 400 * kMiB);
}

TEST_CASE("slurm executor, cold: a small first wave with generous requests, the rest sized from its peaks") {
  World w;
  for (int k = 1; k <= 12; ++k) w.file("f" + std::to_string(k) + "-n" + std::to_string(20 * k), 20 * k);
  auto s = w.run();
  CHECK(s.exit_code() == 0);
  CHECK(s.done == 12);
  REQUIRE(w.cluster.submitted.size() >= 2);
  CHECK(w.cluster.submitted[0].task_count == w.config.cold_wave_files);
  CHECK(w.cluster.submitted[0].mem_bytes == w.cluster.node_mem_bytes / 2);
  // After the wave, requests follow the learned line: none is half the node any more.
  std::size_t later_tasks = 0;
  for (std::size_t k = 1; k < w.cluster.submitted.size(); ++k) {
    CHECK(w.cluster.submitted[k].mem_bytes < 300 * kMiB);
    later_tasks += w.cluster.submitted[k].task_count;
  }
  CHECK(later_tasks == 12 - w.config.cold_wave_files);
  CHECK(w.stats.out_of_memory_tasks == 0);
}

TEST_CASE("slurm executor: Ctrl-C cancels exactly the arrays it submitted; the files stay to do; a re-run does only them") {
  World w;
  w.teach_history();
  w.file("a-n100", 100);
  w.file("slow-n50", 50);
  int polls = 0;
  auto s = w.run([&] { return w.cluster.queries >= 2 ? (++polls, 1) : 0; });
  CHECK(s.interrupted);
  CHECK(s.exit_code() == 130);
  CHECK(s.done == 1);
  REQUIRE(w.cluster.cancel_calls.size() == 1);
  // a-n100's array had ended: only the slow one's is cancelled.
  REQUIRE(w.cluster.cancel_calls[0].size() == 1);
  CHECK(w.cluster.cancel_calls[0][0] == w.cluster.ids.back());
  CHECK(s.failed.empty());

  // The re-run (the slow file now quick) submits only it.
  fs::rename(w.dir.path() / "corpus" / "slow-n50.wav", w.dir.path() / "corpus" / "quick-n50.wav");
  w.cluster.submitted.clear();
  auto again = w.run();
  CHECK(again.exit_code() == 0);
  CHECK(again.skipped == 1);
  CHECK(again.done == 1);
  REQUIRE(w.cluster.submitted.size() == 1);
  CHECK(w.cluster.submitted[0].task_count == 1);
}

TEST_CASE("slurm executor: sbatch refusing the array fails its files with sbatch's words, submits nothing more") {
  World w;
  w.teach_history();
  w.file("a-n100", 100);
  w.file("b-n200", 200);
  w.cluster.submit_error = "sbatch failed (exit 1): sbatch: error: invalid account";
  auto s = w.run();
  CHECK(s.exit_code() == 1);
  REQUIRE(s.failed.size() == 2);
  CHECK(s.failed[0].reason == "not submitted: sbatch failed (exit 1): sbatch: error: invalid account");
}
