// Transcript: UTF-8 validation, normalisation to the model's labels, token ids and word spans.
#include "protocol/transcript.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <locale>
#include <map>
#include <set>
#include <sstream>

namespace ab {

namespace {

/// Decodes one UTF-8 sequence at `i`; returns its length, or 0 when it is invalid.
std::size_t decode_utf8(std::string_view s, std::size_t i, char32_t* out) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    *out = b0;
    return 1;
  }
  std::size_t len;
  char32_t cp;
  char32_t min;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  *out = cp;
  return len;
}

std::string encode_utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

/// Character classes for any Unicode code point, from the C.UTF-8 locale (ASCII rules without it).
class CharClasses {
 public:
  CharClasses() {
    try {
      locale_ = std::locale("C.UTF-8");
      have_utf8_ = true;
    } catch (const std::runtime_error&) {
      have_utf8_ = false;
    }
  }
  char32_t lower(char32_t c) const {
    if (have_utf8_ && c > 0x7F) return static_cast<char32_t>(facet().tolower(static_cast<wchar_t>(c)));
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  }
  char32_t upper(char32_t c) const {
    if (have_utf8_ && c > 0x7F) return static_cast<char32_t>(facet().toupper(static_cast<wchar_t>(c)));
    return (c >= 'a' && c <= 'z') ? c - 32 : c;
  }
  bool space(char32_t c) const {
    if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
    return c == 0x00A0 || (have_utf8_ && facet().is(std::ctype_base::space, static_cast<wchar_t>(c)));
  }
  bool punct(char32_t c) const {
    if (c < 0x80) return std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", static_cast<int>(c)) != nullptr && c != 0;
    return have_utf8_ && facet().is(std::ctype_base::punct, static_cast<wchar_t>(c));
  }

 private:
  const std::ctype<wchar_t>& facet() const { return std::use_facet<std::ctype<wchar_t>>(locale_); }
  std::locale locale_;
  bool have_utf8_ = false;
};

const CharClasses& char_classes() {
  static const CharClasses classes;
  return classes;
}

}  // namespace

std::optional<int> LabelSet::separator_index() const {
  if (word_separator.empty()) return std::nullopt;
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] == word_separator) return static_cast<int>(i);
  return std::nullopt;
}

std::optional<std::size_t> find_invalid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    char32_t cp;
    const std::size_t len = decode_utf8(text, i, &cp);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

Result<Transcript> normalize_transcript(std::string_view text, const LabelSet& labels, const std::string& source_name) {
  using R = Result<Transcript>;
  if (const auto bad = find_invalid_utf8(text))
    return R::failure(source_name + ": not valid UTF-8 at byte offset " + std::to_string(*bad) +
                      "; save the transcript as UTF-8");
  const CharClasses& classes = char_classes();
  std::map<std::string, int> label_ids;
  for (std::size_t i = 0; i < labels.labels.size(); ++i)
    if (static_cast<int>(i) != labels.blank) label_ids.emplace(labels.labels[i], static_cast<int>(i));
  const std::optional<int> separator = labels.separator_index();

  Transcript out;
  std::set<std::string> unknown;  // characters the model cannot emit, for the error
  std::string word_text;
  std::vector<int> word_tokens;
  auto end_word = [&] {
    if (!word_tokens.empty()) {
      if (separator && !out.tokens.empty()) out.tokens.push_back(*separator);
      out.words.push_back(TranscriptWord{word_text, out.tokens.size(), word_tokens.size()});
      out.tokens.insert(out.tokens.end(), word_tokens.begin(), word_tokens.end());
    }
    word_text.clear();
    word_tokens.clear();
  };

  std::size_t i = 0;
  while (i < text.size()) {
    char32_t cp = 0;
    const std::size_t len = decode_utf8(text, i, &cp);
    const std::string original(text.substr(i, len));
    i += len;
    if (cp == 0xFEFF && i == len) continue;  // byte order mark at the start
    if (classes.space(cp) || (!labels.word_separator.empty() && original == labels.word_separator)) {
      end_word();
      continue;
    }
    word_text += original;
    const std::string lowered = encode_utf8(classes.lower(cp));
    auto it = label_ids.find(lowered);
    if (it == label_ids.end()) it = label_ids.find(original);
    // Some exported models (torchaudio's English bundles) use upper-case labels.
    if (it == label_ids.end()) it = label_ids.find(encode_utf8(classes.upper(cp)));
    if (it != label_ids.end() && (!separator || it->second != *separator)) {
      word_tokens.push_back(it->second);
      continue;
    }
    if (classes.punct(cp)) continue;
    if (labels.star) {
      if (word_tokens.empty() || word_tokens.back() != *labels.star) word_tokens.push_back(*labels.star);
    } else {
      unknown.insert(original);
    }
  }
  end_word();

  if (!unknown.empty()) {
    std::string list;
    for (const auto& c : unknown) {
      if (!list.empty()) list += ' ';
      list += '\'' + c + '\'';
    }
    return R::failure(source_name + ": characters the model cannot emit and it has no star token: " + list +
                      "; spell them out in the transcript or use a model with these labels");
  }
  if (out.tokens.empty())
    return R::failure(source_name + ": no words the model can align (empty or only punctuation)");
  return out;
}

Result<Transcript> read_transcript(const std::string& path, const LabelSet& labels) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return Result<Transcript>::failure(path + ": cannot open transcript (" + std::strerror(err) + ")");
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return Result<Transcript>::failure(path + ": reading the transcript failed");
  return normalize_transcript(buffer.str(), labels, path);
}

}  // namespace ab
