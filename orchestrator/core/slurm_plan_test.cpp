// Level-1 tests of the Slurm executor's pure parts: sharding by need, sbatch arguments, the task
// script, sacct/sinfo parsing, state mapping.
#include "orchestrator/core/slurm_plan.h"

#include <doctest/doctest.h>

#include <algorithm>

using namespace ab;

namespace {
constexpr std::uint64_t kMiB = 1ull << 20;
}

TEST_CASE("task_mem_bytes: need x jobs at once / high water + idle worker + overhead, whole MiB") {
  SlurmPlanConfig c;
  c.concurrency = 2;
  c.worker_idle_bytes = 10 * kMiB;
  c.task_overhead_bytes = 24 * kMiB;
  c.high_water = 0.5;
  CHECK(task_mem_bytes(100 * kMiB, 1, c) == (200 + 10 + 24) * kMiB);  // one file: one job at once
  CHECK(task_mem_bytes(100 * kMiB, 5, c) == (400 + 10 + 24) * kMiB);  // two at once
  CHECK(task_mem_bytes(100 * kMiB + 1, 1, c) % kMiB == 0);
  CHECK(task_mem_bytes(100 * kMiB + 1, 1, c) == (201 + 10 + 24) * kMiB);
}

TEST_CASE("plan_arrays: classes within class_step share an array; largest first; files_per_task files a task") {
  SlurmPlanConfig c;
  c.task_overhead_bytes = 0;
  c.high_water = 1.0;
  c.files_per_task = 2;
  c.class_step = 1.15;
  // needs 300, 290 (same class as 300), 200, 100, 95, 60 (95 and 100 share; 60 is below 100/1.15 = 87).
  std::vector<ShardFile> files = {{0, 100 * kMiB}, {1, 300 * kMiB}, {2, 60 * kMiB}, {3, 290 * kMiB}, {4, 200 * kMiB}, {5, 95 * kMiB}};
  auto arrays = plan_arrays(files, c);
  REQUIRE(arrays.size() == 4);
  CHECK(arrays[0].mem_bytes == 300 * kMiB);
  REQUIRE(arrays[0].tasks.size() == 1);
  CHECK(arrays[0].tasks[0].files == std::vector<std::size_t>{1, 3});
  CHECK(arrays[1].mem_bytes == 200 * kMiB);
  CHECK(arrays[2].mem_bytes == 100 * kMiB);
  CHECK(arrays[2].tasks[0].files == std::vector<std::size_t>{0, 5});
  CHECK(arrays[3].mem_bytes == 60 * kMiB);
  CHECK(plan_arrays({}, c).empty());
  // Every file placed exactly once, whatever the sizes.
  std::vector<ShardFile> many;
  for (std::size_t i = 0; i < 100; ++i) many.push_back({i, (10 + (i * 37) % 300) * kMiB});
  std::vector<int> seen(100, 0);
  for (const auto& a : plan_arrays(many, c))
    for (const auto& t : a.tasks) {
      CHECK(t.files.size() <= 2);
      CHECK(a.mem_bytes >= t.largest_need_bytes);
      CHECK(static_cast<double>(a.mem_bytes) <= 1.15 * static_cast<double>(t.largest_need_bytes) + 1);
      for (auto f : t.files) ++seen[f];
    }
  for (int s : seen) CHECK(s == 1);
}

TEST_CASE("plan_arrays: a task holds files of one group only (one --out per task)") {
  SlurmPlanConfig c;
  c.files_per_task = 4;
  std::vector<ShardFile> files = {{0, 100 * kMiB, 0}, {1, 100 * kMiB, 1}, {2, 100 * kMiB, 0}, {3, 100 * kMiB, 1}, {4, 100 * kMiB, 2}};
  auto arrays = plan_arrays(files, c);
  REQUIRE(arrays.size() == 1);
  REQUIRE(arrays[0].tasks.size() == 3);
  CHECK(arrays[0].tasks[0].files == std::vector<std::size_t>{0, 2});
  CHECK(arrays[0].tasks[1].files == std::vector<std::size_t>{1, 3});
  CHECK(arrays[0].tasks[2].files == std::vector<std::size_t>{4});
}

TEST_CASE("plan_arrays: a class's files are dealt round-robin, largest first, over as few tasks as files_per_task allows") {
  SlurmPlanConfig c;
  c.files_per_task = 2;
  std::vector<ShardFile> files = {{0, 100 * kMiB}, {1, 99 * kMiB}, {2, 98 * kMiB}, {3, 97 * kMiB}, {4, 96 * kMiB}};
  auto arrays = plan_arrays(files, c);
  REQUIRE(arrays.size() == 1);
  REQUIRE(arrays[0].tasks.size() == 3);
  CHECK(arrays[0].tasks[0].files == std::vector<std::size_t>{0, 3});
  CHECK(arrays[0].tasks[1].files == std::vector<std::size_t>{1, 4});
  CHECK(arrays[0].tasks[2].files == std::vector<std::size_t>{2});
  CHECK(arrays[0].tasks[2].largest_need_bytes == 98 * kMiB);
}

TEST_CASE("plan_arrays: the last classes to run get fewer files a task (at most half the waves left)") {
  SlurmPlanConfig c;
  c.files_per_task = 3;
  c.task_overhead_bytes = 0;
  c.high_water = 1.0;
  // 6 files of 300 MiB (4 at once: 0.25 waves each), then 6 of 100 MiB (8 at once: 0.125 each).
  std::vector<ShardFile> files;
  for (std::size_t i = 0; i < 6; ++i) files.push_back({i, 300 * kMiB, 0, 0.25});
  for (std::size_t i = 6; i < 12; ++i) files.push_back({i, 100 * kMiB, 0, 0.125});
  auto arrays = plan_arrays(files, c);
  REQUIRE(arrays.size() == 2);
  // 2.25 waves left at the first class: 1 file a task (round(1.125)); 0.75 at the second: 1.
  CHECK(arrays[0].tasks.size() == 6);
  CHECK(arrays[1].tasks.size() == 6);
  // Twice the files: 4.5 waves left at the first class: 2 a task; 1.5 at the second: 1 a task.
  std::vector<ShardFile> more;
  for (std::size_t i = 0; i < 12; ++i) more.push_back({i, 300 * kMiB, 0, 0.25});
  for (std::size_t i = 12; i < 24; ++i) more.push_back({i, 100 * kMiB, 0, 0.125});
  arrays = plan_arrays(more, c);
  REQUIRE(arrays.size() == 2);
  CHECK(arrays[0].tasks.size() == 6);
  CHECK(arrays[1].tasks.size() == 12);
  // Without waves, files_per_task alone.
  for (auto& f : more) f.waves = 0;
  CHECK(plan_arrays(more, c)[1].tasks.size() == 4);
}

TEST_CASE("files_per_task_for and pick_cold_wave") {
  CHECK(files_per_task_for(0) == 1);
  CHECK(files_per_task_for(256) == 1);
  CHECK(files_per_task_for(257) == 2);
  CHECK(files_per_task_for(65000) == 254);
  // Spread over the size order, smallest and largest included.
  std::vector<std::uint64_t> sizes = {50, 10, 90, 30, 70, 20, 80, 40, 60};
  auto wave = pick_cold_wave(sizes, 3);
  REQUIRE(wave.size() == 3);
  CHECK(sizes[wave[0]] == 10);
  CHECK(sizes[wave[1]] == 50);
  CHECK(sizes[wave[2]] == 90);
  CHECK(pick_cold_wave({5, 6}, 5).size() == 2);
}

TEST_CASE("sbatch_argv and task_script") {
  SbatchArray a;
  a.mem_bytes = 300 * kMiB + 5;
  a.task_count = 4;
  a.max_running = 2;
  a.cpus_per_task = 1;
  a.partition = "short";
  a.extra_args = {"--account=lab", "--time=1:00:00"};
  a.log_pattern = "/o/%a.log";
  a.script_path = "/o/task.sh";
  CHECK(sbatch_argv(a) == std::vector<std::string>{"sbatch", "--parsable", "--job-name=align-batch", "--array=0-3%2",
                                                   "--mem=301M", "--cpus-per-task=1", "--output=/o/%a.log",
                                                   "--partition=short", "--account=lab", "--time=1:00:00", "/o/task.sh"});
  a.max_running = 0;
  a.partition.clear();
  a.extra_args.clear();
  CHECK(sbatch_argv(a)[3] == "--array=0-3");
  const std::string s = task_script({"/bin/align-batch", "--workers", "1"}, "/out dir/a", {"--", "cmd", "it's", "{in}"});
  CHECK(s.rfind("#!/bin/sh\n", 0) == 0);
  CHECK(s.find("\n/bin/align-batch --workers 1 --history '/out dir/a'/\"$SLURM_ARRAY_TASK_ID\".sqlite --slurm-task "
               "'/out dir/a'/\"$SLURM_ARRAY_TASK_ID\".shard -- cmd 'it'\\''s' '{in}'\nrc=$?\n: >'/out dir/a'/\"$SLURM_ARRAY_TASK_ID\".ended\n"
               "exit $rc\n") != std::string::npos);
  CHECK(shell_quote("") == "''");
  CHECK(shell_quote("a b") == "'a b'");
}

TEST_CASE("shard_text and parse_shard: names with newlines, spaces, '#' and '@' come back unchanged") {
  const Shard shard{"/out/a\nb", {"/c/x\ny.wav", " /c/lead space.wav", "/c/#hash.wav", "/c/@at.wav", "/c/tail\n"}};
  const std::string text = shard_text(shard);
  CHECK(std::count(text.begin(), text.end(), '\0') == 6);
  auto back = parse_shard(text);
  REQUIRE(back);
  CHECK(back->out_dir == shard.out_dir);
  CHECK(back->files == shard.files);
  CHECK(parse_shard(shard_text({"/out", {}}))->files.empty());
  CHECK_FALSE(parse_shard(""));
  CHECK_FALSE(parse_shard(text.substr(0, text.size() - 1)));  // cut short
  CHECK_FALSE(parse_shard(std::string("\0/x.wav\0", 8)));     // no --out
}

TEST_CASE("parse_squeue and merge_controller_states: the controller's fresh State wins, a terminal one always") {
  const auto q = parse_squeue("7_3|FAILED|768\n7_4|OUT_OF_MEMORY|125\n7_5|RUNNING|0\n8_0|COMPLETED|0\njunk\n9|RUNNING|0\n");
  REQUIRE(q.size() == 4);
  CHECK(q[0].array_job_id == "7");
  CHECK(q[0].task == 3u);
  CHECK(q[0].exit_code == 3);
  CHECK(q[0].exit_signal == 0);
  CHECK(q[1].exit_signal == 125);
  CHECK(q[1].step.empty());
  // sacct lags: 7_3 still RUNNING there, 7_5 already COMPLETED (ended after squeue's snapshot),
  // 8_0 not in sacct at all yet; 7_6 only in sacct (the controller forgot it).
  auto merged = merge_controller_states(parse_sacct("7_3|RUNNING|0:0||||0\n7_3.batch|RUNNING|0:0||1000K|0\n"
                                                    "7_5|COMPLETED|0:0|100M||3\n7_6|COMPLETED|0:0|100M||3\n"),
                                        q);
  auto find = [&](const std::string& id, std::uint32_t task, const std::string& step = "") {
    for (const auto& r : merged)
      if (r.array_job_id == id && r.task == task && r.step == step) return r;
    FAIL("no row " << id << "_" << task << "." << step);
    return SacctRow{};
  };
  CHECK(find("7", 3).state == "FAILED");
  CHECK(find("7", 3).exit_code == 3);
  CHECK(find("7", 3, "batch").state == "RUNNING");  // steps are sacct's alone
  CHECK(find("7", 4).state == "OUT_OF_MEMORY");
  CHECK(find("7", 5).state == "COMPLETED");
  CHECK(find("7", 6).state == "COMPLETED");
  CHECK(find("8", 0).state == "COMPLETED");
  CHECK(merged.size() == 6);
}

TEST_CASE("parse_sacct: tasks, steps, pending ranges, states with 'by', sizes") {
  const char* text =
      "12_3|OUT_OF_MEMORY|0:125|200M||2\n"
      "12_3.batch|OUT_OF_MEMORY|0:125||87488K|2\n"
      "12_[4-6,9%2]|PENDING|0:0|200M||0\n"
      "13_0|CANCELLED by 0|0:15|1.5G||7\n"
      "14|COMPLETED|0:0|100Mn||1\n"
      "garbage line\n"
      "x_1|COMPLETED|0:0|1M||1\n";
  auto rows = parse_sacct(text);
  REQUIRE(rows.size() == 5);
  CHECK(rows[0].array_job_id == "12");
  CHECK(rows[0].task == 3u);
  CHECK(rows[0].step.empty());
  CHECK(rows[0].state == "OUT_OF_MEMORY");
  CHECK(rows[0].exit_code == 0);
  CHECK(rows[0].exit_signal == 125);
  CHECK(rows[0].req_mem_bytes == 200 * kMiB);
  CHECK(!rows[0].max_rss_bytes);
  CHECK(rows[0].elapsed_s == 2);
  CHECK(rows[1].step == "batch");
  CHECK(rows[1].max_rss_bytes == 87488ull * 1024);
  CHECK(!rows[2].task);
  CHECK(rows[2].pending_tasks == std::vector<std::uint32_t>{4, 5, 6, 9});
  CHECK(rows[3].state == "CANCELLED");
  CHECK(rows[3].req_mem_bytes == 1536 * kMiB);
  CHECK(!rows[4].task);
  CHECK(rows[4].req_mem_bytes == 100 * kMiB);
}

TEST_CASE("parse_slurm_size_bytes, parse_sinfo_nodes and task_slots") {
  CHECK(parse_slurm_size_bytes("0", 1024) == 0u);
  CHECK(parse_slurm_size_bytes("2000", kMiB) == 2000 * kMiB);
  CHECK(parse_slurm_size_bytes("1T", 1) == 1ull << 40);
  CHECK(!parse_slurm_size_bytes("", 1));
  CHECK(!parse_slurm_size_bytes("abc", 1));
  const auto nodes = parse_sinfo_nodes("2000 8 1\n64000+ 32+ 10\nbad line\n0 4 2\n");
  REQUIRE(nodes.size() == 2);
  CHECK(nodes[1].mem_bytes == 64000 * kMiB);
  CHECK(nodes[1].cpus == 32);
  CHECK(nodes[1].count == 10);
  CHECK(parse_sinfo_nodes("\n").empty());
  // 400 MiB tasks of 1 CPU: 5 on the small node (memory), 32 on each big one (CPUs).
  CHECK(task_slots(nodes, 400 * kMiB, 1) == 5 + 320);
  CHECK(task_slots({{2000 * kMiB, 8, 1}}, 100 * kMiB, 2) == 4);
}

TEST_CASE("files_per_task_for_overhead: sqrt(2 x waves x overhead / job length), 1 when every file runs at once") {
  // The bench's corpus on its node: ~6.7 waves, ~1 s a task's overhead, ~1.85 s a job: 3 files a task.
  CHECK(files_per_task_for_overhead(6.7, 1.0, 1.85) == 3);
  CHECK(files_per_task_for_overhead(0.9, 1.0, 1.0) == 1);
  CHECK(files_per_task_for_overhead(10000, 1.0, 2.0) == 100);
  CHECK(files_per_task_for_overhead(50, 1.0, 0) == 1);  // no job length known
  CHECK(files_per_task_for_overhead(50, 0, 1.0) == 1);
}

TEST_CASE("task_fate maps every Slurm state the executor acts on") {
  CHECK(task_fate("COMPLETED") == TaskFate::kCompleted);
  CHECK(task_fate("FAILED") == TaskFate::kFailed);
  CHECK(task_fate("OUT_OF_MEMORY") == TaskFate::kOutOfMemory);
  CHECK(task_fate("NODE_FAIL") == TaskFate::kLost);
  CHECK(task_fate("PREEMPTED") == TaskFate::kLost);
  CHECK(task_fate("BOOT_FAIL") == TaskFate::kLost);
  CHECK(task_fate("CANCELLED") == TaskFate::kCancelled);
  CHECK(task_fate("TIMEOUT") == TaskFate::kTimeout);
  CHECK(task_fate("DEADLINE") == TaskFate::kTimeout);
  for (const char* s : {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "SUSPENDED", "RESIZING"})
    CHECK(task_fate(s) == TaskFate::kRunning);
}
