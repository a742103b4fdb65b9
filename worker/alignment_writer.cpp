// Alignment outputs: TextGrid (long text format), JSON and CTM; each file written atomically.
#include "worker/alignment_writer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "worker/atomic_file.h"

namespace ab {

namespace {

std::string quote_praat(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';  // Praat doubles quotes inside strings
    out += c;
  }
  return out + "\"";
}

/// A tier's intervals covering [0, xmax]: the items, with empty intervals in the gaps.
std::vector<TimedItem> fill_gaps(const std::vector<TimedItem>& items, double xmax) {
  std::vector<TimedItem> out;
  double t = 0.0;
  for (const TimedItem& item : items) {
    const double start = std::max(item.start_s, t);
    const double end = std::min(std::max(item.end_s, start), xmax);
    if (end <= start) continue;
    if (start > t + 1e-9) out.push_back(TimedItem{"", t, start, 0.0});
    out.push_back(TimedItem{item.text, start, end, item.score});
    t = end;
  }
  if (xmax > t + 1e-9 || out.empty()) out.push_back(TimedItem{"", t, xmax, 0.0});
  return out;
}

double tier_xmax(const TimedAlignment& timed) {
  double xmax = timed.duration_s;
  for (const auto& w : timed.words) xmax = std::max(xmax, w.end_s);
  for (const auto& t : timed.tokens) xmax = std::max(xmax, t.end_s);
  return xmax;
}

void append_tier(std::string& out, int index, const std::string& name, const std::vector<TimedItem>& items,
                 double xmax) {
  const std::vector<TimedItem> intervals = fill_gaps(items, xmax);
  out += fmt::format("    item [{}]:\n", index);
  out += "        class = \"IntervalTier\" \n";
  out += fmt::format("        name = {} \n", quote_praat(name));
  out += "        xmin = 0 \n";
  out += fmt::format("        xmax = {} \n", xmax);
  out += fmt::format("        intervals: size = {} \n", intervals.size());
  for (std::size_t i = 0; i < intervals.size(); ++i) {
    out += fmt::format("        intervals [{}]:\n", i + 1);
    out += fmt::format("            xmin = {} \n", intervals[i].start_s);
    out += fmt::format("            xmax = {} \n", intervals[i].end_s);
    out += fmt::format("            text = {} \n", quote_praat(intervals[i].text));
  }
}

}  // namespace

TimedAlignment timed_from_alignment(const Alignment& alignment, const Transcript& transcript, const LabelSet& labels,
                                    const FrameClock& clock, double duration_s, const std::string& utterance_id) {
  TimedAlignment timed;
  timed.utterance_id = utterance_id;
  timed.task = "align";
  timed.duration_s = duration_s;
  const std::vector<WordSpan> spans = word_spans(alignment, transcript.words);
  for (std::size_t i = 0; i < spans.size(); ++i)
    timed.words.push_back(TimedItem{transcript.words[i].text, clock.seconds(spans[i].start_frame),
                                    clock.seconds(spans[i].end_frame), spans[i].score});
  const std::optional<int> separator = labels.separator_index();
  for (const TokenSpan& tok : alignment.tokens) {
    if (separator && tok.token == *separator) continue;
    timed.tokens.push_back(TimedItem{labels.labels.at(std::size_t(tok.token)), clock.seconds(tok.start_frame),
                                     clock.seconds(tok.end_frame), tok.score});
  }
  return timed;
}

TimedAlignment timed_from_decoding(const Decoding& decoding, const LabelSet& labels, const FrameClock& clock,
                                   double duration_s, const std::string& utterance_id) {
  TimedAlignment timed;
  timed.utterance_id = utterance_id;
  timed.task = "transcribe";
  timed.duration_s = duration_s;
  for (const DecodedWord& w : decoding.words)
    timed.words.push_back(TimedItem{w.text, clock.seconds(w.start_frame), clock.seconds(w.end_frame), w.score});
  for (const DecodedToken& tok : decoding.tokens)
    timed.tokens.push_back(TimedItem{labels.labels.at(std::size_t(tok.label)), clock.seconds(tok.start_frame),
                                     clock.seconds(tok.end_frame), tok.score});
  return timed;
}

std::string format_textgrid(const TimedAlignment& timed) {
  const double xmax = tier_xmax(timed);
  std::string out;
  out += "File type = \"ooTextFile\"\n";
  out += "Object class = \"TextGrid\"\n\n";
  out += "xmin = 0 \n";
  out += fmt::format("xmax = {} \n", xmax);
  out += "tiers? <exists> \n";
  out += "size = 2 \n";
  out += "item []: \n";
  append_tier(out, 1, "words", timed.words, xmax);
  append_tier(out, 2, "tokens", timed.tokens, xmax);
  return out;
}

std::string format_json(const TimedAlignment& timed) {
  auto items = [](const std::vector<TimedItem>& list) {
    nlohmann::json arr = nlohmann::json::array();
    for (const TimedItem& item : list)
      arr.push_back({{"text", item.text}, {"start_s", item.start_s}, {"end_s", item.end_s}, {"score", item.score}});
    return arr;
  };
  nlohmann::json j = {{"utterance", timed.utterance_id},
                      {"task", timed.task},
                      {"duration_s", timed.duration_s},
                      {"words", items(timed.words)},
                      {"tokens", items(timed.tokens)}};
  // Texts come from validated UTF-8, but a bad label in a sidecar must not throw here.
  return j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string format_ctm(const TimedAlignment& timed) {
  std::string out;
  for (const TimedItem& w : timed.words)
    out += fmt::format("{} 1 {:.3f} {:.3f} {} {:.4f}\n", timed.utterance_id, w.start_s, w.end_s - w.start_s, w.text,
                       std::clamp(std::exp(w.score), 0.0, 1.0));
  return out;
}

Result<std::vector<std::string>> write_alignment_outputs(const TimedAlignment& timed, const std::string& out_base) {
  std::vector<std::string> paths;
  const std::pair<const char*, std::string> files[] = {
      {".TextGrid", format_textgrid(timed)}, {".json", format_json(timed)}, {".ctm", format_ctm(timed)}};
  for (const auto& [ext, content] : files) {
    Result<std::string> written = write_file_atomically(out_base + ext, content);
    if (!written) return Result<std::vector<std::string>>::failure(written.error());
    paths.push_back(written.value());
  }
  return paths;
}

}  // namespace ab
