// RunReport: draws one run's memory, predictions and throughput as inline SVG, and its tables.
#include "orchestrator/cli/run_report.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <functional>
#include <map>
#include <set>

#include <fmt/format.h>

#include "memguard/size.h"

namespace ab {
namespace {

// Time steps the stacked memory chart is drawn on: finer than a 900 px plot needs, and it keeps
// the page small (each job's band has at most this many points per edge).
constexpr int kMemoryGridSteps = 600;
// Rows of the "slowest" and "furthest above prediction" tables.
constexpr std::size_t kTableRows = 10;

constexpr double kMiB = 1024.0 * 1024.0;

/// More attempts than kReportJobsDrawnEach: every chart draws them in aggregate (run_report.h).
bool drawn_in_aggregate(const ReportInput& in) { return in.jobs.size() > kReportJobsDrawnEach; }

std::string esc(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string utc(std::int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string num(double v) { return fmt::format("{:.1f}", v); }

/// Where an attempt sits in time, in ms since the run started.
struct Span {
  double start_ms = 0;
  double end_ms = 0;
};

Span span_of(const JobRow& row, std::int64_t run_start_ms) {
  const double end = static_cast<double>(row.finished_at_ms - run_start_ms);
  const double start = row.started_at_ms ? static_cast<double>(*row.started_at_ms - run_start_ms)
                                         : end - row.wall_s * 1000.0;
  return {std::max(0.0, start), std::max(end, std::max(0.0, start))};
}

/// The unit memory axes use: MiB below 4 GiB, GiB above.
struct ByteUnit {
  double bytes;
  const char* name;
};
ByteUnit byte_unit(double max_bytes) {
  return max_bytes >= 4.0 * 1024 * kMiB ? ByteUnit{1024 * kMiB, "GiB"} : ByteUnit{kMiB, "MiB"};
}

/// A linear or log mapping from data to pixels.
struct Scale {
  double d0 = 0, d1 = 1, r0 = 0, r1 = 1;
  bool log = false;
  double operator()(double v) const {
    if (log) {
      v = std::max(v, d0 * 1e-3);
      return r0 + (std::log(v) - std::log(d0)) / (std::log(d1) - std::log(d0)) * (r1 - r0);
    }
    return r0 + (v - d0) / (d1 - d0) * (r1 - r0);
  }
};

/// 1-2-5 steps giving about `target` ticks over [0, max].
std::vector<double> linear_ticks(double max, int target = 6) {
  if (!(max > 0)) return {0};
  const double raw = max / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> ticks;
  for (double t = 0; t <= max * (1 + 1e-9); t += step) ticks.push_back(t);
  return ticks;
}

/// 1-2-5 × 10^k inside [lo, hi]; across less than a decade, evenly spaced round values (a log
/// axis over 80-160 MiB would otherwise show one or two ticks).
std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> ticks;
  if (hi < lo * 10) {
    for (double t : linear_ticks(hi, 8))
      if (t >= lo) ticks.push_back(t);
    return ticks;
  }
  for (double mag = std::pow(10.0, std::floor(std::log10(lo))); mag <= hi; mag *= 10)
    for (double m : {1.0, 2.0, 5.0})
      if (m * mag >= lo && m * mag <= hi) ticks.push_back(m * mag);
  return ticks;
}

std::string tick_label(double v) {
  if (v == 0) return "0";
  if (std::fabs(v) >= 100 || std::fabs(v - std::round(v)) < 1e-9) return fmt::format("{:.0f}", v);
  if (std::fabs(v) >= 1) return fmt::format("{:.1f}", v);
  return fmt::format("{:.2g}", v);
}

/// A plot area inside an SVG, its scales, and its axes drawn with ticks, grid and labels.
struct Plot {
  double left = 70, top = 20, width = 800, height = 300;
  Scale x, y;
  void set(double x_max, double y_max, bool log_x = false, double x_min = 0, bool log_y = false,
           double y_min = 0) {
    x = {x_min, x_max, left, left + width, log_x};
    y = {y_min, y_max, top + height, top, log_y};
  }
  std::string axes(const std::vector<double>& xt, const std::vector<double>& yt, const std::string& x_label,
                   const std::string& y_label) const {
    std::string s = fmt::format(R"(<rect class="frame" x="{}" y="{}" width="{}" height="{}"/>)", left, top, width,
                                height);
    for (double t : xt) {
      const double px = x(t);
      s += fmt::format(R"(<line class="grid" x1="{0}" y1="{1}" x2="{0}" y2="{2}"/>)", num(px), top, top + height);
      s += fmt::format(R"(<text class="tick" x="{}" y="{}" text-anchor="middle">{}</text>)", num(px),
                       top + height + 15, tick_label(t));
    }
    for (double t : yt) {
      const double py = y(t);
      s += fmt::format(R"(<line class="grid" x1="{1}" y1="{0}" x2="{2}" y2="{0}"/>)", num(py), left, left + width);
      s += fmt::format(R"(<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>)", left - 6, num(py + 4),
                       tick_label(t));
    }
    s += fmt::format(R"(<text class="label" x="{}" y="{}" text-anchor="middle">{}</text>)", left + width / 2,
                     top + height + 34, esc(x_label));
    s += fmt::format(R"~(<text class="label" transform="translate({},{}) rotate(-90)" text-anchor="middle">{}</text>)~",
                     left - 48, top + height / 2, esc(y_label));
    return s;
  }
};

std::string svg_open(double w, double h, const std::string& label) {
  return fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {0} {1}" width="{0}" height="{1}" role="img" aria-label="{2}">)",
                     w, h, esc(label));
}

/// A job's PSS at `t_ms` after its start: the latest reading at or before it (the first reading
/// before that one; its recorded peak where no reading landed).
double pss_at(const ReportJob& job, double t_ms) {
  const auto& tl = job.timeline;
  if (tl.empty()) return static_cast<double>(job.row.peak_pss_bytes);
  auto it = std::upper_bound(tl.begin(), tl.end(), t_ms,
                             [](double t, const TimelinePoint& p) { return t < static_cast<double>(p.t_ms); });
  const auto& p = it == tl.begin() ? *it : *(it - 1);
  return static_cast<double>(p.pss_bytes ? p.pss_bytes : p.rss_bytes);
}

const char* mark_class(ReportMark m) {
  switch (m) {
    case ReportMark::kGuardKill: return "guard-kill";
    case ReportMark::kOomDeath: return "oom-death";
    case ReportMark::kCrash: return "crash";
    case ReportMark::kInterrupted: return "interrupted";
    case ReportMark::kNone: break;
  }
  return "";
}

const char* mark_title(ReportMark m) {
  switch (m) {
    case ReportMark::kGuardKill: return "stopped by the memory guard";
    case ReportMark::kOomDeath: return "killed by the kernel (out of memory)";
    case ReportMark::kCrash: return "its worker died";
    case ReportMark::kInterrupted: return "interrupted";
    case ReportMark::kNone: break;
  }
  return "";
}

std::string job_title(const JobRow& r) {
  return fmt::format("{} (attempt {}): {}, peak {}, {:.1f} s{}", r.input_path, r.attempts, to_string(r.status),
                     format_bytes(r.peak_pss_bytes), r.wall_s, r.error.empty() ? "" : ": " + r.error);
}

/// The points of a scatter chart: one circle per file (with `data-file`), or for a dense run
/// (drawn_in_aggregate) counted in squares of kBinPx, each as opaque as its count is high.
class Scatter {
 public:
  Scatter(const Plot& p, bool dense, double radius) : p_(p), dense_(dense), r_(radius) {}
  /// A point at data (x, y) of class `cls` for `file`; `title` (called only when drawn one by
  /// one) says what hovering it shows.
  template <class Title>
  void add(double x, double y, const char* cls, const std::string& file, Title&& title) {
    const double px = p_.x(x), py = p_.y(y);
    if (!dense_) {
      s_ += fmt::format(R"(<circle class="point {}" data-file="{}" cx="{}" cy="{}" r="{}"><title>{}</title></circle>)", cls,
                        esc(file), num(px), num(py), r_, title()) + "\n";
      return;
    }
    ++bins_[{cls, static_cast<int>((px - p_.left) / kBinPx), static_cast<int>((py - p_.top) / kBinPx)}];
  }
  std::string svg() const {
    if (!dense_) return s_;
    std::size_t most = 1;
    for (const auto& [cell, n] : bins_) most = std::max(most, n);
    std::string s;
    for (const auto& [cell, n] : bins_) {
      const auto& [cls, cx, cy] = cell;
      const double opacity = 0.2 + 0.8 * std::log1p(static_cast<double>(n)) / std::log1p(static_cast<double>(most));
      s += fmt::format(R"(<rect class="bin {}" data-count="{}" x="{}" y="{}" width="{}" height="{}" fill-opacity="{:.2f}"><title>{} files</title></rect>)",
                       cls, n, num(p_.left + cx * kBinPx), num(p_.top + cy * kBinPx), kBinPx, kBinPx, opacity, n) + "\n";
    }
    return s;
  }
  /// A line for the chart's caption: how the points are drawn.
  std::string note() const {
    return dense_ ? fmt::format(" More than {} attempts: each square counts the files that fall in it (darker: more); "
                                "the tables below name the notable ones.", kReportJobsDrawnEach)
                  : std::string();
  }

 private:
  static constexpr double kBinPx = 5;
  const Plot& p_;
  bool dense_;
  double r_;
  std::string s_;
  std::map<std::tuple<std::string, int, int>, std::size_t> bins_;
};

// ---- 1. memory over time, and concurrency beneath -------------------------------------------

/// The run's attempts in time: each one's span, the run's end, and the order they started in.
struct RunSpans {
  std::vector<Span> spans;         ///< one per ReportInput::jobs
  std::vector<std::size_t> order;  ///< indices into spans by start time (ties: job order)
  double end_ms = 1;
};

RunSpans run_spans(const ReportInput& in) {
  RunSpans r;
  const std::int64_t t0 = in.run.info.started_at_ms;
  r.end_ms = in.run.ended_at_ms ? static_cast<double>(*in.run.ended_at_ms - t0) : 0;
  for (const auto& j : in.jobs) {
    r.spans.push_back(span_of(j.row, t0));
    r.end_ms = std::max(r.end_ms, r.spans.back().end_ms);
  }
  r.end_ms = std::max(r.end_ms, 1.0);
  r.order.resize(in.jobs.size());
  for (std::size_t i = 0; i < r.order.size(); ++i) r.order[i] = i;
  const auto& spans = r.spans;
  std::sort(r.order.begin(), r.order.end(), [&](std::size_t a, std::size_t b) {
    return spans[a].start_ms != spans[b].start_ms ? spans[a].start_ms < spans[b].start_ms : a < b;
  });
  return r;
}

/// One attempt's band in the stacked chart: the grid cells it covers, its lower and upper edge.
struct Band {
  std::size_t job;
  std::vector<int> cells;
  std::vector<double> lo, hi;
};

/// Every attempt stacked on those that started before it, on a grid of kMemoryGridSteps steps.
struct MemoryStack {
  std::vector<Band> bands;  ///< in start order
  double dt_ms = 1;         ///< the grid's step
  double max_bytes = 0;     ///< the highest sum
};

/// The grid cells attempt `sp` covers: [first, last] (one cell, its middle, when it is shorter).
std::pair<int, int> cells_of(const Span& sp, double dt, int n) {
  int first = static_cast<int>(std::ceil(sp.start_ms / dt));
  int last = static_cast<int>(std::floor(sp.end_ms / dt));
  if (last < first) first = last = std::clamp(static_cast<int>(std::lround((sp.start_ms + sp.end_ms) / 2 / dt)), 0, n);
  return {std::clamp(first, 0, n), std::clamp(last, 0, n)};
}

/// More attempts than kReportJobsDrawnEach: one band per way they ended (ok, stopped by the guard,
/// died, failed), stacked in that order, each attempt counted at its recorded peak while it ran.
MemoryStack stack_by_status(const ReportInput& in, const RunSpans& r) {
  MemoryStack st;
  const int n = kMemoryGridSteps;
  const double dt = st.dt_ms = r.end_ms / n;
  const JobStatus order[] = {JobStatus::kOk, JobStatus::kKilled, JobStatus::kDied, JobStatus::kFailed};
  std::map<JobStatus, std::vector<double>> sums;
  std::map<JobStatus, std::size_t> example;  // a job of that status: the band's colour and name
  for (std::size_t k = 0; k < in.jobs.size(); ++k) {
    const JobStatus status = in.jobs[k].row.status;
    auto& sum = sums[status];
    if (sum.empty()) {
      sum.assign(n + 1, 0.0);
      example[status] = k;
    }
    const auto [first, last] = cells_of(r.spans[k], dt, n);
    for (int i = first; i <= last; ++i) sum[i] += static_cast<double>(in.jobs[k].row.peak_pss_bytes);
  }
  std::vector<double> below(n + 1, 0.0);
  for (JobStatus status : order) {
    auto it = sums.find(status);
    if (it == sums.end()) continue;
    Band b{example[status], {}, {}, {}};
    for (int i = 0; i <= n; ++i) {
      b.cells.push_back(i);
      b.lo.push_back(below[i]);
      b.hi.push_back(below[i] + it->second[i]);
      below[i] += it->second[i];
    }
    st.bands.push_back(std::move(b));
  }
  st.max_bytes = *std::max_element(below.begin(), below.end());
  return st;
}

MemoryStack stack_bands(const ReportInput& in, const RunSpans& r) {
  if (drawn_in_aggregate(in)) return stack_by_status(in, r);
  MemoryStack st;
  const int n = kMemoryGridSteps;
  const double dt = st.dt_ms = r.end_ms / n;
  std::vector<double> below(n + 1, 0.0);
  for (std::size_t k : r.order) {
    const Span& sp = r.spans[k];
    Band b{k, {}, {}, {}};
    const auto [first, last] = cells_of(sp, dt, n);
    for (int i = first; i <= last; ++i) {
      const double v = pss_at(in.jobs[k], std::max(0.0, i * dt - sp.start_ms));
      b.cells.push_back(i);
      b.lo.push_back(below[i]);
      b.hi.push_back(below[i] + v);
      below[i] += v;
    }
    st.bands.push_back(std::move(b));
  }
  st.max_bytes = *std::max_element(below.begin(), below.end());
  return st;
}

/// Concurrency: +1 at each start, -1 at each end; an end sorts before a start at the same time.
std::vector<std::pair<double, int>> concurrency_events(const std::vector<Span>& spans) {
  std::vector<std::pair<double, int>> events;
  for (const auto& sp : spans) {
    events.push_back({sp.start_ms, +1});
    events.push_back({sp.end_ms, -1});
  }
  std::sort(events.begin(), events.end());
  return events;
}

std::size_t most_running(const std::vector<std::pair<double, int>>& events) {
  std::size_t max_running = 0;
  long running = 0;
  for (const auto& e : events) {
    running += e.second;
    max_running = std::max<std::size_t>(max_running, static_cast<std::size_t>(std::max(0L, running)));
  }
  return max_running;
}

/// The fill of a band whose attempt ended as `status` (`index`: its place in start order).
const char* band_fill(JobStatus status, std::size_t index) {
  static const char* const kOkColours[] = {"#4e79a7", "#76b7b2", "#59a14f", "#a0cbe8", "#8cd17d", "#499894"};
  switch (status) {
    case JobStatus::kOk: return kOkColours[index % 6];
    case JobStatus::kKilled: return "#e15759";
    case JobStatus::kDied: return "#f28e2b";
    case JobStatus::kFailed: return "#b07aa1";
  }
  return "#999";
}

/// A band's outline: along its upper edge, back along its lower one (a sliver: one cell wide).
std::string band_outline(const Band& b, const Plot& p, double dt, const ByteUnit& unit) {
  std::string d;
  auto x_of = [&](std::size_t i) { return p.x(b.cells[i] * dt / 1000); };
  const bool sliver = b.cells.size() == 1;
  const double half = sliver ? std::max(0.5, (p.x(dt / 1000) - p.x(0)) / 2) : 0;
  for (std::size_t i = 0; i < b.cells.size(); ++i) {
    const double y = p.y(b.hi[i] / unit.bytes);
    if (sliver) d += fmt::format("M{},{}L{},{}", num(x_of(i) - half), num(y), num(x_of(i) + half), num(y));
    else d += fmt::format("{}{},{}", i == 0 ? "M" : "L", num(x_of(i)), num(y));
  }
  for (std::size_t i = b.cells.size(); i-- > 0;) {
    const double y = p.y(b.lo[i] / unit.bytes);
    if (sliver) d += fmt::format("L{},{}L{},{}", num(x_of(i) + half), num(y), num(x_of(i) - half), num(y));
    else d += fmt::format("L{},{}", num(x_of(i)), num(y));
  }
  return d + "Z";
}

/// One attempt's band as an SVG path, coloured by how it ended.
std::string band_path(const ReportInput& in, const Band& b, std::size_t index, const Plot& p, double dt,
                      const ByteUnit& unit) {
  const JobRow& row = in.jobs[b.job].row;
  return fmt::format(R"(<path class="job {}" data-file="{}" data-attempt="{}" fill="{}" d="{}"><title>{}</title></path>)",
                     to_string(row.status), esc(row.input_path), row.attempts, band_fill(row.status, index),
                     band_outline(b, p, dt, unit), esc(job_title(row))) +
         "\n";
}

/// stack_by_status's band of every attempt that ended as its example did: `count` of them.
std::string status_band_path(const ReportInput& in, const Band& b, std::size_t count, const Plot& p, double dt,
                             const ByteUnit& unit) {
  const JobStatus status = in.jobs[b.job].row.status;
  return fmt::format(R"(<path class="jobs {}" data-count="{}" fill="{}" d="{}"><title>{} attempts {}, each at its recorded peak while it ran</title></path>)",
                     to_string(status), count, band_fill(status, 0), band_outline(b, p, dt, unit), count,
                     to_string(status)) +
         "\n";
}

/// The memory chart's horizontal lines (budget, high-water mark, cgroup limit): drawn where they
/// fall on the axis, named at the top where they are above it.
class LimitLines {
 public:
  LimitLines(const Plot& p, const ByteUnit& unit, double y_max) : p_(p), unit_(unit), y_max_(y_max) {}
  std::string line(double bytes, const char* cls, const std::string& label) {
    if (bytes <= 0) return {};
    if (bytes / unit_.bytes > y_max_ / unit_.bytes) {
      std::string s = fmt::format(R"(<text class="limit-note {}" x="{}" y="{}" text-anchor="end">{} {} (above the chart)</text>)",
                                  cls, p_.left + p_.width - 6, num(off_chart_y_), esc(label),
                                  format_bytes(static_cast<std::uint64_t>(bytes)));
      off_chart_y_ += 14;
      return s;
    }
    const double y = p_.y(bytes / unit_.bytes);
    return fmt::format(R"(<line class="limit {}" x1="{}" y1="{}" x2="{}" y2="{}"/>)", cls, p_.left, num(y),
                       p_.left + p_.width, num(y)) +
           fmt::format(R"(<text class="limit-note {}" x="{}" y="{}" text-anchor="end">{} {}</text>)", cls,
                       p_.left + p_.width - 6, num(y - 4), esc(label), format_bytes(static_cast<std::uint64_t>(bytes)));
  }

 private:
  const Plot& p_;
  ByteUnit unit_;
  double y_max_;
  double off_chart_y_ = p_.top + 12;
};

/// Marks above the plot: at the end of a killed or dead attempt, at the start of every retry.
std::string attempt_marks(const ReportInput& in, const std::vector<Span>& spans, const Plot& p) {
  std::string s;
  for (std::size_t k = 0; k < in.jobs.size(); ++k) {
    const JobRow& row = in.jobs[k].row;
    const ReportMark m = mark_of(row);
    if (m != ReportMark::kNone) {
      const double x = p.x(spans[k].end_ms / 1000);
      s += fmt::format(
          R"(<g class="mark {}" data-file="{}"><line x1="{}" y1="{}" x2="{}" y2="{}"/><path d="M{},{}l-5,-9h10z"/><title>{}: {} at {:.1f} s{}</title></g>)",
          mark_class(m), esc(row.input_path), num(x), p.top, num(x), p.top + p.height, num(x), p.top - 1,
          esc(row.input_path), mark_title(m), spans[k].end_ms / 1000, row.error.empty() ? "" : " (" + esc(row.error) + ")");
      s += "\n";
    }
    if (row.attempts > 1) {
      const double x = p.x(spans[k].start_ms / 1000);
      s += fmt::format(R"(<g class="mark retry" data-file="{}"><circle cx="{}" cy="{}" r="4"/><title>{}: attempt {} starts at {:.1f} s</title></g>)",
                       esc(row.input_path), num(x), p.top - 6, esc(row.input_path), row.attempts, spans[k].start_ms / 1000);
      s += "\n";
    }
  }
  return s;
}

/// Jobs running over time, as a step line on plot `c` ending at `end_ms`: a step per start and
/// end, or with more than kReportJobsDrawnEach attempts the most running in each grid step.
std::string concurrency_path(const Plot& c, const std::vector<std::pair<double, int>>& events, double end_ms,
                             bool dense) {
  std::string d = fmt::format("M{},{}", c.x(0), c.y(0));
  auto step = [&](double t_ms, long running) {
    d += fmt::format("H{}V{}", num(c.x(t_ms / 1000)), num(c.y(static_cast<double>(std::max(0L, running)))));
  };
  long running = 0;
  if (!dense) {
    for (const auto& e : events) step(e.first, running += e.second);
  } else {
    const double dt = end_ms / kMemoryGridSteps;
    std::size_t i = 0;
    for (int cell = 0; cell < kMemoryGridSteps; ++cell) {
      long most = running;
      for (; i < events.size() && events[i].first < (cell + 1) * dt; ++i) most = std::max(most, running += events[i].second);
      step(cell * dt, most);
    }
  }
  d += fmt::format("H{}", num(c.x(end_ms / 1000)));
  return fmt::format(R"(<path class="concurrency" d="{}"/>)", d);
}

std::string memory_chart(const ReportInput& in) {
  const RunSpans r = run_spans(in);
  const MemoryStack st = stack_bands(in, r);
  const double budget = static_cast<double>(in.run.info.budget_bytes);
  const double high_water = budget * in.run.info.settings.high_water.value_or(0);
  const std::optional<double> cgroup = in.run.info.settings.cgroup_limit_bytes;
  // A budget far above what the run used would flatten the picture to a line at the bottom: the
  // axis then ends above the run's peak, and lines above it are named at the top instead.
  double y_max = std::max(st.max_bytes, 1.0) * 1.15;
  for (double line : {budget, high_water, cgroup.value_or(0)})
    if (line > 0 && line <= std::max(st.max_bytes, 1.0) * 4) y_max = std::max(y_max, line * 1.05);
  const ByteUnit unit = byte_unit(y_max);

  Plot p;
  p.height = 280;
  p.set(r.end_ms / 1000, y_max / unit.bytes);
  Plot c;  // concurrency beneath, on the same time axis
  c.top = p.top + p.height + 70;
  c.height = 90;
  const auto events = concurrency_events(r.spans);
  const std::size_t max_running = most_running(events);
  c.set(r.end_ms / 1000, static_cast<double>(std::max<std::size_t>(max_running, 1)) * 1.15);

  std::string s = "<section id=\"memory\"><h2>Memory over time</h2>\n";
  const bool dense = drawn_in_aggregate(in);
  std::map<JobStatus, std::size_t> by_status;
  for (const auto& j : in.jobs) ++by_status[j.row.status];
  if (dense)
    s += fmt::format("<p>The sum of the workers' PSS against the budget the scheduler admitted to. {} attempts, more than "
                     "the {} drawn one by one: one band per way they ended, each attempt counted at its recorded peak "
                     "while it ran. ", in.jobs.size(), kReportJobsDrawnEach);
  else
    s += "<p>The sum of the workers' PSS, one band per job attempt stacked in start order, against the budget the "
         "scheduler admitted to. ";
  s += "Marks above the plot: every guard kill, OOM death, crash and retry (hover for the file).</p>\n";
  s += svg_open(p.left + p.width + 20, c.top + c.height + 50, "memory over time");
  s += p.axes(linear_ticks(r.end_ms / 1000), linear_ticks(y_max / unit.bytes), "time since the run started (s)",
              fmt::format("PSS of all workers ({})", unit.name));
  for (std::size_t bi = 0; bi < st.bands.size(); ++bi) {
    const Band& b = st.bands[bi];
    s += dense ? status_band_path(in, b, by_status[in.jobs[b.job].row.status], p, st.dt_ms, unit)
               : band_path(in, b, bi, p, st.dt_ms, unit);
  }
  LimitLines limits(p, unit, y_max);
  s += limits.line(budget, "budget", "budget");
  s += limits.line(high_water, "high-water", "high-water mark");
  if (cgroup) s += limits.line(*cgroup, "cgroup", "cgroup limit");
  s += attempt_marks(in, r.spans, p);
  s += c.axes(linear_ticks(r.end_ms / 1000), linear_ticks(c.y.d1, 3), "time since the run started (s)", "jobs running");
  s += concurrency_path(c, events, r.end_ms, dense);
  s += "</svg>\n";
  s += fmt::format("<p class=\"legend\"><span class=\"key ok\"></span>ok <span class=\"key killed\"></span>stopped by the "
                   "guard <span class=\"key died\"></span>died <span class=\"key failed\"></span>failed &#183; marks: "
                   "<span class=\"sym guard-kill\">&#9660;</span> guard kill <span class=\"sym oom-death\">&#9660;</span> OOM "
                   "death <span class=\"sym crash\">&#9660;</span> crash <span class=\"sym retry\">&#9679;</span> retry &#183; "
                   "highest sum drawn {}, at most {} jobs at once</p>\n",
                   format_bytes(static_cast<std::uint64_t>(st.max_bytes)), max_running);
  s += "</section>\n";
  return s;
}

// ---- 2. predicted against measured -----------------------------------------------------------

std::string prediction_chart(const ReportInput& in) {
  const PredictionRatios r = prediction_ratios(in.jobs);
  std::string s = "<section id=\"prediction\"><h2>Predicted against measured peak</h2>\n";
  if (r.files == 0) {
    s += fmt::format("<p class=\"empty\">No file of this run started with a prediction ({} started without one: "
                     "history had no jobs of this key yet). The next run of the key will have them.</p></section>\n",
                     r.unpredicted);
    return s;
  }
  s += fmt::format("<p class=\"figures\">measured &#247; predicted over {} files: median <b>{:.2f}</b>, p95 <b>{:.2f}</b>; "
                   "{} above the line (measured more than predicted){}.</p>\n",
                   r.files, r.median, r.p95, r.above,
                   r.unpredicted ? fmt::format("; {} more started without a prediction", r.unpredicted) : std::string());
  double lo = 1e300, hi = 0;
  for (const auto& j : in.jobs) {
    if (j.row.status != JobStatus::kOk || !j.row.predicted_peak_bytes || j.row.peak_pss_bytes == 0) continue;
    for (double v : {static_cast<double>(*j.row.predicted_peak_bytes), static_cast<double>(j.row.peak_pss_bytes)}) {
      lo = std::min(lo, v / kMiB);
      hi = std::max(hi, v / kMiB);
    }
  }
  lo /= 1.25;
  hi *= 1.25;
  Plot p;
  p.width = 420;
  p.height = 360;
  p.set(hi, hi, true, lo, true, lo);
  s += svg_open(p.left + p.width + 20, p.top + p.height + 50, "predicted against measured peak");
  const auto ticks = log_ticks(lo, hi);
  s += p.axes(ticks, ticks, "predicted peak (MiB, log)", "measured peak PSS (MiB, log)");
  s += fmt::format(R"(<line class="diagonal" x1="{}" y1="{}" x2="{}" y2="{}"/>)", num(p.x(lo)), num(p.y(lo)), num(p.x(hi)),
                   num(p.y(hi)));
  s += fmt::format(R"(<text class="limit-note" x="{}" y="{}">y = x</text>)", num(p.x(hi) - 40), num(p.y(hi) + 14));
  Scatter points(p, drawn_in_aggregate(in), 3.5);
  for (const auto& j : in.jobs) {
    const JobRow& row = j.row;
    if (row.status != JobStatus::kOk || !row.predicted_peak_bytes || row.peak_pss_bytes == 0) continue;
    const bool above = row.peak_pss_bytes > *row.predicted_peak_bytes;
    points.add(static_cast<double>(*row.predicted_peak_bytes) / kMiB, static_cast<double>(row.peak_pss_bytes) / kMiB,
               above ? "above" : "within", row.input_path, [&] {
                 return fmt::format("{}: predicted {}, measured {} ({:.2f}&#215;)", esc(row.input_path),
                                    format_bytes(*row.predicted_peak_bytes), format_bytes(row.peak_pss_bytes),
                                    static_cast<double>(row.peak_pss_bytes) / static_cast<double>(*row.predicted_peak_bytes));
               });
  }
  s += points.svg();
  s += "</svg>\n<p class=\"legend\"><span class=\"sym above\">&#9679;</span> above the line (more than predicted) "
       "<span class=\"sym within\">&#9679;</span> at or below it." + points.note() + "</p></section>\n";
  return s;
}

// ---- 3. throughput and the peak law ----------------------------------------------------------

std::string audio_charts(const ReportInput& in) {
  std::vector<const JobRow*> rows;
  for (const auto& j : in.jobs)
    if (j.row.status == JobStatus::kOk && j.row.audio_duration_s && *j.row.audio_duration_s > 0) rows.push_back(&j.row);
  std::string s = "<section id=\"audio\"><h2>Time and memory against audio length</h2>\n";
  if (rows.empty()) {
    s += "<p class=\"empty\">No finished file of this run has a known audio duration.</p></section>\n";
    return s;
  }
  double audio_max = 0, wall_max = 0, peak_max = 0, audio_sum = 0, wall_sum = 0;
  for (const auto* r : rows) {
    audio_max = std::max(audio_max, *r->audio_duration_s);
    wall_max = std::max(wall_max, r->wall_s);
    peak_max = std::max(peak_max, static_cast<double>(r->peak_pss_bytes));
    audio_sum += *r->audio_duration_s;
    wall_sum += r->wall_s;
  }
  s += fmt::format("<p class=\"figures\">{} files, {:.1f} s of audio in {:.1f} s of job time: <b>{:.3f}</b> s per audio "
                   "second per job ({:.0f}&#215; real time per worker).</p>\n",
                   rows.size(), audio_sum, wall_sum, audio_sum > 0 ? wall_sum / audio_sum : 0,
                   wall_sum > 0 ? audio_sum / wall_sum : 0);
  s += "<div class=\"pair\">";
  std::string dense_note;
  {
    Plot p;
    p.width = 380;
    p.height = 280;
    p.set(audio_max * 1.05, std::max(wall_max, 1e-3) * 1.1);
    s += svg_open(p.left + p.width + 20, p.top + p.height + 50, "wall time against audio seconds");
    s += p.axes(linear_ticks(p.x.d1, 5), linear_ticks(p.y.d1, 5), "audio (s)", "wall time per job (s)");
    Scatter points(p, drawn_in_aggregate(in), 3);
    for (const auto* r : rows)
      points.add(*r->audio_duration_s, r->wall_s, "wall", r->input_path, [&] {
        return fmt::format("{}: {:.1f} s audio, {:.2f} s", esc(r->input_path), *r->audio_duration_s, r->wall_s);
      });
    s += points.svg() + "</svg>";
    dense_note = points.note();
  }
  {
    const ByteUnit unit = byte_unit(peak_max);
    double y_max = peak_max * 1.15;
    const auto& fit = in.duration_fit;
    if (fit) y_max = std::max(y_max, (fit->baseline_bytes + fit->ratio * audio_max * 1.05) * (1 + fit->margin) * 1.05);
    Plot p;
    p.width = 380;
    p.height = 280;
    p.set(audio_max * 1.05, y_max / unit.bytes);
    s += svg_open(p.left + p.width + 20, p.top + p.height + 50, "peak against audio seconds");
    s += p.axes(linear_ticks(p.x.d1, 5), linear_ticks(p.y.d1, 5), "audio (s)", fmt::format("peak PSS per job ({})", unit.name));
    if (fit) {
      auto line = [&](double scale, const char* cls) {
        const double x1 = p.x.d1;
        s += fmt::format(R"(<line class="fit {}" x1="{}" y1="{}" x2="{}" y2="{}"/>)", cls, num(p.x(0)),
                         num(p.y(fit->baseline_bytes * scale / unit.bytes)), num(p.x(x1)),
                         num(p.y((fit->baseline_bytes + fit->ratio * x1) * scale / unit.bytes)));
      };
      line(1.0, "central");
      line(1.0 + fit->margin, "upper");
    }
    Scatter points(p, drawn_in_aggregate(in), 3);
    for (const auto* r : rows)
      points.add(*r->audio_duration_s, static_cast<double>(r->peak_pss_bytes) / unit.bytes, "peak", r->input_path, [&] {
        return fmt::format("{}: {:.1f} s audio, peak {}", esc(r->input_path), *r->audio_duration_s,
                           format_bytes(r->peak_pss_bytes));
      });
    s += points.svg() + "</svg>";
  }
  s += "</div>\n";
  if (in.duration_fit)
    s += fmt::format("<p class=\"legend\">History's law for this key (Theil&#8211;Sen over {} ok jobs): peak &#8776; {} + "
                     "{} per audio second (solid); dashed: with its p95 margin of {:.0f}%, what admission reserves.</p>\n",
                     in.duration_fit->n, format_bytes(static_cast<std::uint64_t>(in.duration_fit->baseline_bytes)),
                     format_bytes(static_cast<std::uint64_t>(in.duration_fit->ratio)), in.duration_fit->margin * 100);
  else
    s += "<p class=\"legend\">History has no law on audio seconds for this key yet (it needs 5 ok jobs with different "
         "durations).</p>\n";
  if (!dense_note.empty()) s += "<p class=\"legend\">" + dense_note.substr(1) + "</p>\n";
  s += "</section>\n";
  return s;
}

// ---- 4. tables -------------------------------------------------------------------------------

/// A table's rows: the file a row is about (empty: none) and its cells.
using TableRows = std::vector<std::pair<std::string, std::vector<std::string>>>;

std::string table(const std::string& id, const std::string& title, const std::vector<std::string>& header,
                  const TableRows& rows, const std::string& empty) {
  std::string s = fmt::format("<section id=\"{}\"><h2>{}</h2>\n", id, esc(title));
  if (rows.empty()) return s + "<p class=\"empty\">" + esc(empty) + "</p></section>\n";
  s += "<table><thead><tr>";
  for (const auto& h : header) s += "<th>" + esc(h) + "</th>";
  s += "</tr></thead><tbody>\n";
  for (const auto& [file, cells] : rows) {
    s += file.empty() ? "<tr>" : "<tr data-file=\"" + esc(file) + "\">";
    for (const auto& c : cells) s += "<td>" + esc(c) + "</td>";
    s += "</tr>\n";
  }
  return s + "</tbody></table></section>\n";
}

/// Failed files: no ok attempt in this run; the last attempt says why.
std::string failed_table(const ReportInput& in) {
  std::map<std::string, const JobRow*> last;
  std::set<std::string> ok;
  for (const auto& j : in.jobs) {
    if (j.row.status == JobStatus::kOk) ok.insert(j.row.input_path);
    auto& l = last[j.row.input_path];
    if (!l || j.row.finished_at_ms > l->finished_at_ms ||
        (j.row.finished_at_ms == l->finished_at_ms && j.row.attempts > l->attempts))
      l = &j.row;
  }
  TableRows failed;
  for (const auto& [path, row] : last) {
    if (ok.count(path)) continue;
    std::string reason = row->error;
    if (reason.empty()) reason = mark_title(mark_of(*row));
    failed.push_back({path, {path, to_string(row->status), std::to_string(row->attempts), format_bytes(row->peak_pss_bytes), reason}});
  }
  return table("failed", "Files that did not finish", {"file", "last attempt", "attempts", "peak PSS", "reason"}, failed,
               "Every file of this run that started finished. (Files refused before starting, such as unreadable "
               "audio, are listed in the run's summary.)");
}

/// The ok attempts, slowest first.
std::vector<const JobRow*> done_by_wall_time(const ReportInput& in) {
  std::vector<const JobRow*> done;
  for (const auto& j : in.jobs)
    if (j.row.status == JobStatus::kOk) done.push_back(&j.row);
  std::sort(done.begin(), done.end(), [](const JobRow* a, const JobRow* b) { return a->wall_s > b->wall_s; });
  return done;
}

std::string slowest_table(const std::vector<const JobRow*>& done) {
  TableRows slow;
  for (std::size_t i = 0; i < done.size() && i < kTableRows; ++i) {
    const JobRow& r = *done[i];
    slow.push_back({r.input_path, {r.input_path, fmt::format("{:.2f}", r.wall_s),
                                   r.audio_duration_s ? fmt::format("{:.1f}", *r.audio_duration_s) : "-",
                                   r.audio_duration_s && r.wall_s > 0 ? fmt::format("{:.0f}", *r.audio_duration_s / r.wall_s) : "-",
                                   fmt::format("{:.2f}", r.cpu_s)}});
  }
  return table("slowest", "Slowest files", {"file", "wall (s)", "audio (s)", "× real time", "CPU (s)"}, slow,
               "No file finished.");
}

std::string above_prediction_table(const std::vector<const JobRow*>& done) {
  std::vector<const JobRow*> over;
  for (const auto* r : done)
    if (r->predicted_peak_bytes && r->peak_pss_bytes > *r->predicted_peak_bytes) over.push_back(r);
  auto ratio = [](const JobRow* r) {
    return static_cast<double>(r->peak_pss_bytes) / static_cast<double>(*r->predicted_peak_bytes);
  };
  std::sort(over.begin(), over.end(), [&](const JobRow* a, const JobRow* b) { return ratio(a) > ratio(b); });
  TableRows above;
  for (std::size_t i = 0; i < over.size() && i < kTableRows; ++i) {
    const JobRow& r = *over[i];
    above.push_back({r.input_path, {r.input_path, format_bytes(*r.predicted_peak_bytes), format_bytes(r.peak_pss_bytes),
                                    fmt::format("{:.2f}", ratio(&r))}});
  }
  return table("above", "Furthest above their prediction", {"file", "predicted", "measured", "measured ÷ predicted"},
               above, "No finished file used more than predicted.");
}

std::string settings_table(const ReportInput& in) {
  const auto& info = in.run.info;
  const RunSettings& f = info.settings;
  auto text = [](const std::string& v) { return v.empty() ? std::string("-") : v; };
  auto number = [](const auto& v) { return v ? fmt::format("{}", *v) : std::string("-"); };
  std::string budget = format_bytes(info.budget_bytes);
  if (!f.budget_source.empty()) budget += " (" + f.budget_source + ")";
  if (!f.mem_budget.empty()) budget += "; --mem-budget " + f.mem_budget;
  const auto& cgroup = f.cgroup_limit_bytes;
  const auto& hw = f.high_water;
  TableRows settings = {
      {"", {"run", fmt::format("{} on {} ({} cores, {} memory), align-batch {}", in.run.id, info.host, info.cores,
                               format_bytes(info.mem_total_bytes), info.version)}},
      {"", {"started", utc(info.started_at_ms)}},
      {"", {"ended", in.run.ended_at_ms ? fmt::format("{} (exit {})", utc(*in.run.ended_at_ms), in.run.exit_code.value_or(-1))
                                        : "- (still running, or the process died)"}},
      {"", {"engine", text(f.engine_text())}},
      {"", {"budget", budget}},
      {"", {"high-water mark", hw ? fmt::format("{:.0f}% of the budget ({})", *hw * 100,
                                                format_bytes(static_cast<std::uint64_t>(*hw * static_cast<double>(info.budget_bytes))))
                                  : "-"}},
      {"", {"cgroup limit", cgroup ? format_bytes(*cgroup) : "none"}},
      {"", {"workers", text(f.workers)}},
      {"", {"prediction margin", number(f.margin)}},
      {"", {"task", text(f.task)}},
      {"", {"retries", number(f.retries)}},
      {"", {"outputs", text(f.out)}},
      {"", {"history", in.history_path.empty() ? "-" : in.history_path}},
  };
  return table("settings", "Settings of the run", {"setting", "value"}, settings, "");
}

std::string tables(const ReportInput& in) {
  const std::vector<const JobRow*> done = done_by_wall_time(in);
  return failed_table(in) + slowest_table(done) + above_prediction_table(done) + settings_table(in);
}

const char* const kStyle = R"css(
body { font: 14px/1.45 sans-serif; color: #222; margin: 24px auto; max-width: 960px; padding: 0 12px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 28px 0 6px; }
.summary { color: #444; } .figures b { font-size: 15px; }
svg { display: block; margin: 6px 0; background: #fff; } .pair { display: flex; flex-wrap: wrap; gap: 8px; }
.frame { fill: none; stroke: #888; } .grid { stroke: #e6e6e6; } .tick { font-size: 11px; fill: #555; }
.label { font-size: 12px; fill: #222; } .limit-note { font-size: 11px; fill: #333; }
.job { stroke: #fff; stroke-width: 0.3; fill-opacity: 0.9; }
.jobs { fill-opacity: 0.9; } .bin.within, .bin.wall, .bin.peak { fill: #4e79a7; } .bin.above { fill: #e15759; }
.limit { stroke-width: 1.5; } .limit.budget { stroke: #222; } .limit.high-water { stroke: #e15759; stroke-dasharray: 6 4; }
.limit.cgroup { stroke: #7f3c8d; stroke-dasharray: 2 3; }
.mark line { stroke-width: 1; stroke-dasharray: 3 3; } .mark path, .mark circle { stroke: none; }
.mark.guard-kill line { stroke: #c00; } .mark.guard-kill path, .sym.guard-kill { fill: #c00; color: #c00; }
.mark.oom-death line { stroke: #600; } .mark.oom-death path, .sym.oom-death { fill: #600; color: #600; }
.mark.crash line { stroke: #f28e2b; } .mark.crash path, .sym.crash { fill: #f28e2b; color: #f28e2b; }
.mark.interrupted line { stroke: #999; } .mark.interrupted path { fill: #999; }
.mark.retry circle, .sym.retry { fill: #f28e2b; color: #f28e2b; }
.concurrency { fill: none; stroke: #4e79a7; stroke-width: 1.5; }
.diagonal { stroke: #666; stroke-dasharray: 4 3; }
.point.within, .sym.within { fill: #4e79a7; color: #4e79a7; } .point.above, .sym.above { fill: #e15759; color: #e15759; }
.point.wall, .point.peak { fill: #4e79a7; fill-opacity: 0.75; }
.fit { stroke: #e15759; stroke-width: 1.5; } .fit.upper { stroke-dasharray: 6 4; }
.legend { font-size: 12px; color: #444; } .key { display: inline-block; width: 12px; height: 10px; margin: 0 3px 0 10px; }
.key.ok { background: #4e79a7; } .key.killed { background: #e15759; } .key.died { background: #f28e2b; } .key.failed { background: #b07aa1; }
table { border-collapse: collapse; font-size: 13px; } th, td { border-bottom: 1px solid #ddd; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
td { word-break: break-all; } .empty { color: #666; font-style: italic; }
)css";

}  // namespace

ReportMark mark_of(const JobRow& row) {
  switch (row.status) {
    case JobStatus::kKilled: return row.error == "interrupted" ? ReportMark::kInterrupted : ReportMark::kGuardKill;
    case JobStatus::kDied: return row.oom_suspected ? ReportMark::kOomDeath : ReportMark::kCrash;
    case JobStatus::kOk:
    case JobStatus::kFailed: break;
  }
  return ReportMark::kNone;
}

PredictionRatios prediction_ratios(const std::vector<ReportJob>& jobs) {
  PredictionRatios r;
  std::vector<double> ratios;
  for (const auto& j : jobs) {
    if (j.row.status != JobStatus::kOk || j.row.peak_pss_bytes == 0) continue;
    if (!j.row.predicted_peak_bytes || *j.row.predicted_peak_bytes == 0) {
      ++r.unpredicted;
      continue;
    }
    ratios.push_back(static_cast<double>(j.row.peak_pss_bytes) / static_cast<double>(*j.row.predicted_peak_bytes));
    if (j.row.peak_pss_bytes > *j.row.predicted_peak_bytes) ++r.above;
  }
  r.files = ratios.size();
  if (ratios.empty()) return r;
  std::sort(ratios.begin(), ratios.end());
  const std::size_t n = ratios.size();
  r.median = n % 2 ? ratios[n / 2] : (ratios[n / 2 - 1] + ratios[n / 2]) / 2;
  r.p95 = ratios[static_cast<std::size_t>(std::ceil(0.95 * static_cast<double>(n))) - 1];
  return r;
}

std::string render_report(const ReportInput& in) {
  const auto& run = in.run;
  std::size_t ok = 0, files = 0;
  std::set<std::string> names;
  for (const auto& j : in.jobs) {
    names.insert(j.row.input_path);
    if (j.row.status == JobStatus::kOk) ++ok;
  }
  files = names.size();
  const double wall_s = run.ended_at_ms ? static_cast<double>(*run.ended_at_ms - run.info.started_at_ms) / 1000.0 : 0;
  std::string s = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n";
  s += fmt::format("<title>align-batch run {}</title>\n", run.id);
  s += "<style>" + std::string(kStyle) + "</style></head><body>\n";
  s += fmt::format("<h1>align-batch run {}</h1>\n<p class=\"summary\">{}: {} attempts of {} files, {} done{}; budget {}{}.{}</p>\n",
                   run.id, esc(run.info.settings.engine_text().empty() ? "engine not recorded" : run.info.settings.engine_text()),
                   in.jobs.size(), files, ok, wall_s > 0 ? fmt::format(" in {:.1f} s", wall_s) : std::string(),
                   format_bytes(run.info.budget_bytes), esc(run.info.host.empty() ? "" : " on " + run.info.host),
                   in.generated_at_ms ? " Report written " + utc(in.generated_at_ms) + "." : std::string());
  s += memory_chart(in);
  s += prediction_chart(in);
  s += audio_charts(in);
  s += tables(in);
  s += "</body></html>\n";
  return s;
}

}  // namespace ab
