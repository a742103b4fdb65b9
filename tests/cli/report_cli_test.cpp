// Black-box tests of run reports: written at a run's end and by `align-batch report`, and opened
// in a real browser (Debian's headless chromium): one mark per job, a picture that is not blank,
// and a guard kill's mark where the run had one.
#include <doctest/doctest.h>

#include <regex>
#include <set>
#include <string>
#include <vector>

#include "history/history_store.h"
#include "tests/cli/cli_process.h"
#include "tests/testutil/temp_dir.h"

namespace fs = std::filesystem;
using ab::cli::Result;

namespace {

const char* const kChromium = "/usr/bin/chromium";
const char* const kPython = "/usr/bin/python3";  // Debian's, with python3-pil

bool browser_available() {
  return fs::exists(kChromium) &&
         ab::cli::run({kPython, "-c", "import PIL"}, fs::temp_directory_path()).exit_code == 0;
}

/// A corpus of 1-KiB-per-unit files and a memhog command turning each KiB into `mib_per_kib` MiB.
struct Run {
  ab::test::TempDir dir{"ab-report"};
  fs::path out() const { return dir.path() / "out"; }
  void add(const std::string& name, std::size_t kib) { dir.write("corpus/" + name, std::string(kib * 1024, 'a')); }
  Result run(const std::vector<std::string>& options, double mib_per_kib, int ramp_ms, double hold_s) const {
    std::vector<std::string> a = {AB_BIN, "--progress", "plain", "--out", out().string()};
    a.insert(a.end(), options.begin(), options.end());
    for (const std::string& s : {(dir.path() / "corpus").string(), std::string("--"), std::string(AB_MEMHOG_BIN),
                                 std::string("--in"), std::string("{in}"), std::string("--mib-per-mib"),
                                 std::to_string(mib_per_kib * 1024), std::string("--ramp-ms"), std::to_string(ramp_ms),
                                 std::string("--hold-s"), std::to_string(hold_s), std::string("--out"), std::string("{out}.done")})
      a.push_back(s);
    return ab::cli::run(a, dir.path());
  }
  /// The run's recorded attempts.
  std::vector<ab::JobRow> jobs(std::int64_t run_id) const {
    auto store = ab::HistoryStore::open(ab::default_history_path(out()), ab::HistoryStore::Create::kNever);
    REQUIRE(store.ok());
    auto rows = store.value()->jobs_for_run(run_id);
    REQUIRE(rows.ok());
    return rows.value();
  }
};

std::string last_line(const std::string& text) {
  const auto end = text.find_last_not_of('\n');
  if (end == std::string::npos) return {};
  const auto start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
}

std::size_t count(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
  return n;
}

/// Chromium's flags for a headless run that reaches no network: the page must stand alone.
std::vector<std::string> chromium(const fs::path& profile, const std::string& what) {
  return {kChromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--user-data-dir=" + profile.string(), "--window-size=1000,1800", what};
}

/// The DOM chromium built from `html` (after layout), and a screenshot of it at `png`.
std::string render(const ab::test::TempDir& dir, const fs::path& html, const fs::path& png) {
  Result dom = ab::cli::run([&] {
    auto a = chromium(dir.path() / "profile-dom", "--dump-dom");
    a.push_back("file://" + html.string());
    return a;
  }(), dir.path());
  INFO(dom.err);
  REQUIRE(dom.exit_code == 0);
  Result shot = ab::cli::run([&] {
    auto a = chromium(dir.path() / "profile-shot", "--screenshot=" + png.string());
    a.push_back("file://" + html.string());
    return a;
  }(), dir.path());
  INFO(shot.err);
  REQUIRE(shot.exit_code == 0);
  REQUIRE(fs::exists(png));
  return dom.out;
}

/// Share of the screenshot's pixels that are not the page's white, and how many colours it has.
std::pair<double, int> ink(const ab::test::TempDir& dir, const fs::path& png) {
  Result r = ab::cli::run({kPython, "-c",
                           "import sys\nfrom PIL import Image\nim = Image.open(sys.argv[1]).convert('RGB')\n"
                           "px = list(im.getdata())\nink = sum(1 for p in px if p != (255, 255, 255))\n"
                           "print(ink / len(px), len(set(px)))\n",
                           png.string()},
                          dir.path());
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  double share = 0;
  int colours = 0;
  REQUIRE(std::sscanf(r.out.c_str(), "%lf %d", &share, &colours) == 2);
  return {share, colours};
}

}  // namespace

TEST_CASE("a run writes its report at its end and names it last; `report` writes any run again; --no-report skips") {
  Run f;
  for (const char* n : {"a.wav", "b.wav", "c.wav", "d.wav"}) f.add(n, 2);
  Result r = f.run({"--mem-budget", "1G"}, 10, 50, 0.1);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const fs::path report = f.out() / ".align-batch" / "report-1.html";
  CHECK(last_line(r.out) == "report: " + report.string());
  CHECK(r.out.find("outputs in " + f.out().string() + "\n") != std::string::npos);
  REQUIRE(fs::exists(report));
  const std::string html = ab::cli::slurp(report);
  CHECK(count(html, "<path class=\"job ") == 4);
  for (const char* n : {"a.wav", "b.wav", "c.wav", "d.wav"})
    CHECK(count(html, "data-file=\"" + (f.dir.path() / "corpus" / n).string() + "\"") >= 1);
  CHECK(html.find("<td>engine</td><td>command " AB_MEMHOG_BIN) != std::string::npos);
  CHECK(html.find("<script") == std::string::npos);

  // A second run, with --no-report: history has it, no page is written.
  Result again = f.run({"--mem-budget", "1G", "--force", "--no-report"}, 10, 50, 0.1);
  REQUIRE(again.exit_code == 0);
  CHECK_FALSE(fs::exists(f.out() / ".align-batch" / "report-2.html"));
  CHECK(again.out.find("report:") == std::string::npos);
  // `report` draws it on demand: the newest run of the --out given (as for the run and `history`)
  // by default, to --html when given.
  Result made = ab::cli::run({AB_BIN, "report", "--out", f.out().string()}, f.dir.path());
  INFO(made.err);
  CHECK(made.exit_code == 0);
  CHECK(made.out.find("report of run 2: " + (f.out() / ".align-batch" / "report-2.html").string()) != std::string::npos);
  // Run 2 started with history's predictions (run 1 taught them): the scatter has its 4 points.
  const std::string second = ab::cli::slurp(f.out() / ".align-batch" / "report-2.html");
  CHECK(count(second, "<circle class=\"point within\"") + count(second, "<circle class=\"point above\"") == 4);
  CHECK(second.find("over 4 files: median <b>") != std::string::npos);
  const fs::path chosen = f.dir.path() / "one.html";
  CHECK(ab::cli::run({AB_BIN, "report", "--out", f.out().string(), "--run", "1", "--html", chosen.string()}, f.dir.path())
            .exit_code == 0);
  CHECK(ab::cli::slurp(chosen).find("<h1>align-batch run 1</h1>") != std::string::npos);

  Result none = ab::cli::run({AB_BIN, "report", "--out", f.out().string(), "--run", "9"}, f.dir.path());
  CHECK(none.exit_code == 2);
  CHECK(none.err.find("no run 9; `align-batch history runs` lists them") != std::string::npos);
  Result missing = ab::cli::run({AB_BIN, "report", "--out", (f.dir.path() / "nowhere").string()}, f.dir.path());
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("no history database there") != std::string::npos);
  CHECK_FALSE(fs::exists(f.dir.path() / "nowhere"));
}

TEST_CASE("in headless chromium a run's report shows one band per job and a picture that is not blank" *
          doctest::skip(!browser_available()) *
          doctest::description("needs Debian's chromium and python3-pil (scripts/setup.sh test installs both)")) {
  Run f;
  const std::vector<std::string> names = {"a.wav", "b.wav", "c.wav", "d.wav", "e.wav", "f.wav"};
  for (std::size_t i = 0; i < names.size(); ++i) f.add(names[i], 1 + i);
  Result r = f.run({"--mem-budget", "1G", "--sample-ms", "20"}, 10, 150, 0.2);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto jobs = f.jobs(1);
  REQUIRE(jobs.size() == names.size());

  const fs::path png = f.dir.path() / "report.png";
  const std::string dom = render(f.dir, f.out() / ".align-batch" / "report-1.html", png);
  // The DOM as the browser parsed it: one band per attempt, each naming its file.
  std::set<std::string> drawn;
  const std::regex band("<path class=\"job ok\" data-file=\"([^\"]+)\"");
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), band); it != std::sregex_iterator(); ++it)
    drawn.insert((*it)[1]);
  CHECK(count(dom, "<path class=\"job ") == jobs.size());
  std::set<std::string> recorded;
  for (const auto& j : jobs) recorded.insert(j.input_path);
  CHECK(drawn == recorded);
  CHECK(count(dom, "class=\"mark ") == 0);  // nothing was killed, nothing died

  // The picture: a white page with text and charts has well under 50% ink and many colours; a
  // blank or unstyled page has next to none, or a single colour.
  const auto [share, colours] = ink(f.dir, png);
  CHECK(share > 0.03);
  CHECK(share < 0.6);
  CHECK(colours > 50);
}

TEST_CASE("in headless chromium the report of a run with a guard kill shows its mark on the killed file" *
          doctest::skip(!browser_available()) *
          doctest::description("needs Debian's chromium and python3-pil (scripts/setup.sh test installs both)")) {
  Run f;
  f.add("s1.wav", 2);
  f.add("s2.wav", 2);
  f.add("huge.wav", 40);  // 40 KiB x 10 MiB/KiB = 400 MiB, ramped over 1.5 s, against a 150 MiB budget
  Result r = f.run({"--mem-budget", "150M", "--sample-ms", "20"}, 10, 1500, 0.2);
  INFO(r.out);
  REQUIRE(r.exit_code == 1);
  const auto jobs = f.jobs(1);
  const std::string huge = (f.dir.path() / "corpus" / "huge.wav").string();
  // The guard stops the youngest job, which may be a small one that started after huge.wav.
  std::size_t killed = 0, huge_killed = 0;
  for (const auto& j : jobs)
    if (j.status == ab::JobStatus::kKilled) {
      ++killed;
      huge_killed += j.input_path == huge;
    }
  REQUIRE(huge_killed >= 1);

  const fs::path png = f.dir.path() / "report.png";
  const std::string dom = render(f.dir, f.out() / ".align-batch" / "report-1.html", png);
  CHECK(count(dom, "<g class=\"mark guard-kill\" ") == killed);
  CHECK(count(dom, "<g class=\"mark guard-kill\" data-file=\"" + huge + "\"") == huge_killed);
  CHECK(count(dom, "class=\"job killed\" data-file=\"" + huge + "\"") == huge_killed);
  CHECK(count(dom, "<path class=\"job ") == jobs.size());
  // The failed-files table names it with the guard's reason.
  CHECK(dom.find("<tr data-file=\"" + huge + "\"><td>" + huge + "</td><td>killed</td>") != std::string::npos);
  // The 150 MiB budget is on the chart, as a line.
  CHECK(dom.find("class=\"limit budget\"") != std::string::npos);
  const auto [share, colours] = ink(f.dir, png);
  CHECK(share > 0.03);
  CHECK(colours > 50);
}
