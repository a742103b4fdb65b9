// AudioSource: libsndfile block reads, channel downmix, libsamplerate streaming conversion.
#include "worker/audio_source.h"

#include <fcntl.h>
#include <samplerate.h>
#include <sndfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include <spdlog/fmt/fmt.h>

#include "worker/container_end.h"

namespace ab {

namespace {

/// Frames read from the file per block: 4096 frames is 0.09 s at 44.1 kHz, small enough that any
/// channel count stays well under a megabyte, large enough that per-call overhead does not show.
constexpr std::size_t kBlockFrames = 4096;

/// Whether the first bytes look like a container libsndfile reads, so that a failure to open
/// means "truncated or corrupt" rather than "not a sound file".
bool looks_like_audio(const unsigned char* head, std::size_t n) {
  auto starts = [&](const char* magic) {
    const std::size_t len = std::strlen(magic);
    return n >= len && std::memcmp(head, magic, len) == 0;
  };
  if (starts("RIFF") || starts("RF64") || starts("FORM") || starts("fLaC") || starts("OggS") || starts("ID3") ||
      starts("caff") || starts(".snd"))
    return true;
  return n >= 2 && head[0] == 0xFF && (head[1] & 0xE0) == 0xE0;  // MPEG audio frame sync
}

/// The log line where libsndfile noted that a WAV/AIFF data chunk is shorter than its header says.
std::string truncated_chunk_note(SNDFILE* file) {
  std::vector<char> log(16384, '\0');
  sf_command(file, SFC_GET_LOG_INFO, log.data(), int(log.size() - 1));
  const std::string text(log.data());
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    if ((line.rfind("data", 0) == 0 || line.rfind("SSND", 0) == 0) && line.find("(should be") != std::string::npos)
      return line;
    start = end + 1;
  }
  return "";
}

/// How far MP3 decoding may fall short of libsndfile's length before the file counts as cut.
/// libsndfile takes an MP3's length from its Xing/Info header (exact: 0 samples off on 70 intact
/// files written by libsndfile/LAME and by sox -C -4.2, 8-48 kHz, 1-60 s) or, without one, estimates
/// it from the file size and the first frame's bitrate: sox CBR files at 22.05/44.1 kHz came out up
/// to 0.469% long (padding frames), 16/48/8 kHz ones exact, examples/corpus ones exact. A file cut at
/// 90% falls 9.5-10.2% short with a Xing header. 1% plus two frames of 1152 samples keeps every
/// measured intact file in with room to spare.
constexpr double kMpegLengthTolerance = 0.01;
constexpr std::int64_t kMpegLengthSlackFrames = 2 * 1152;

/// "MP3"/"Ogg" for messages.
const char* container_word(int major) { return major == SF_FORMAT_OGG ? "Ogg" : "MP3"; }

/// The user-facing error for a compressed file whose framing shows it was cut (see container_end.h).
std::string cut_file_message(const std::string& path, const SF_INFO& info, const ContainerEnd& end) {
  const int major = info.format & SF_FORMAT_TYPEMASK;
  const bool length_known = info.frames > 0 && info.frames != SF_COUNT_MAX;
  const double header_s = length_known ? double(info.frames) / info.samplerate : -1;
  std::string lengths;
  if (major == SF_FORMAT_OGG) {
    lengths = "Ogg files carry no length header";
  } else if (length_known && end.readable_s >= 0 && header_s > end.readable_s * (1 + kMpegLengthTolerance) + 0.1) {
    lengths = fmt::format("its header promises {:.1f} s of audio", header_s);
  } else {
    lengths = length_known ? fmt::format("it has no length header (libsndfile estimates {:.1f} s from the file size)", header_s)
                           : std::string("it has no length header");
  }
  const std::string readable = end.readable_s >= 0 ? fmt::format("only about {:.1f} s can be read", end.readable_s)
                                                   : std::string("how much can be read is unknown");
  return fmt::format("{}: truncated or corrupt {} file: {}; {}, {}. The copy or download was probably cut short: "
                     "re-copy the file from its source, or re-encode it from the original",
                     path, container_word(major), end.detail, lengths, readable);
}

}  // namespace

struct AudioSource::Impl {
  std::string path;
  int fd = -1;  // ours: libsndfile is told not to close it, so failure paths are unambiguous
  SNDFILE* file = nullptr;
  SF_INFO info{};
  int target_rate_hz = 0;
  SRC_STATE* resampler = nullptr;
  double ratio = 1.0;
  std::vector<float> interleaved;  // one block as read from the file
  std::vector<float> mono;         // the block downmixed
  std::size_t mono_pos = 0;        // first unconsumed sample of `mono`
  std::int64_t frames_read = 0;
  bool input_done = false;  // the file gave its last frame
  bool output_done = false;
  std::string error;

  ~Impl() {
    if (resampler) src_delete(resampler);
    if (file) sf_close(file);
    if (fd >= 0) ::close(fd);
  }

  /// Refills `mono` with the next block; sets input_done at the end of the file.
  void fill() {
    mono_pos = 0;
    mono.clear();
    if (input_done) return;
    const sf_count_t got = sf_readf_float(file, interleaved.data(), sf_count_t(kBlockFrames));
    if (got <= 0) {
      input_done = true;
      const bool mpeg = (info.format & SF_FORMAT_TYPEMASK) == SF_FORMAT_MPEG;
      const std::int64_t allowed_short =
          mpeg ? std::int64_t(double(info.frames) * kMpegLengthTolerance) + kMpegLengthSlackFrames : 0;
      const bool short_read = info.frames > 0 && frames_read < info.frames - allowed_short;
      const std::string libsndfile_says =
          sf_error(file) != SF_ERR_NO_ERROR ? std::string(" (libsndfile: ") + sf_strerror(file) + ")" : "";
      if (short_read) {
        error = fmt::format("{}: truncated or corrupt audio file: its header promises {:.2f} s of audio but only "
                            "{:.2f} s could be read{}. The copy or download was probably cut short: re-copy the file "
                            "from its source, or re-encode it from the original",
                            path, double(info.frames) / info.samplerate, double(frames_read) / info.samplerate,
                            libsndfile_says);
      } else if (!libsndfile_says.empty()) {
        error = path + ": read failed after " + std::to_string(frames_read) + " frames" + libsndfile_says +
                "; the file is probably corrupt: re-copy or re-encode it";
      }
      return;
    }
    frames_read += got;
    const int ch = info.channels;
    mono.resize(std::size_t(got));
    for (sf_count_t f = 0; f < got; ++f) {
      float sum = 0.0f;
      for (int c = 0; c < ch; ++c) sum += interleaved[std::size_t(f * ch + c)];
      mono[std::size_t(f)] = sum / float(ch);
    }
  }
};

AudioSource::AudioSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AudioSource::AudioSource(AudioSource&&) noexcept = default;
AudioSource& AudioSource::operator=(AudioSource&&) noexcept = default;
AudioSource::~AudioSource() = default;

Result<AudioSource> AudioSource::open(const std::string& path, int target_rate_hz) {
  using R = Result<AudioSource>;
  if (target_rate_hz <= 0) return R::failure(path + ": invalid target sample rate " + std::to_string(target_rate_hz));
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return R::failure(path + ": audio file does not exist (moved or deleted?)");
    if (err == EACCES) return R::failure(path + ": permission denied reading the audio file; make it readable");
    return R::failure(path + ": cannot open audio file (" + std::strerror(err) + ")");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return R::failure(path + ": not a regular file (a directory or device?)");
  }
  if (st.st_size == 0) {
    ::close(fd);
    return R::failure(path + ": empty file (0 bytes); the audio was never written or the copy failed");
  }
  unsigned char head[16] = {};
  const ssize_t head_n = ::pread(fd, head, sizeof head, 0);

  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->target_rate_hz = target_rate_hz;
  impl->fd = fd;
  impl->file = sf_open_fd(fd, SFM_READ, &impl->info, SF_FALSE);
  if (!impl->file) {
    // libsndfile 1.2.0 closes the fd on some failed opens despite SF_FALSE (a 2-byte file: strace
    // showed our close hit EBADF), so close it only if it is still open: a second close could
    // hit a number another thread had been given meanwhile.
    if (::fcntl(fd, F_GETFD) == -1) impl->fd = -1;
    const std::string why = sf_strerror(nullptr);
    if (looks_like_audio(head, head_n > 0 ? std::size_t(head_n) : 0))
      return R::failure(path + ": truncated or corrupt audio file (libsndfile: " + why + ")");
    return R::failure(path + ": not a sound file libsndfile can read (libsndfile: " + why +
                      "); convert it to WAV or FLAC");
  }
  const SF_INFO& info = impl->info;
  // libsndfile opens a WAV/AIFF whose data chunk is cut short and only notes it in its log
  // ("data : 32000 (should be 16000)"); a cut file is a failed copy or a crashed recorder.
  if (const std::string cut = truncated_chunk_note(impl->file); !cut.empty())
    return R::failure(path + ": truncated audio file (header and size disagree: " + cut +
                      "); re-export or re-copy the file");
  // Ogg and MP3 have no exact length libsndfile could check against the data (see container_end.h):
  // their own framing shows whether the file stops mid-page/mid-frame or before the stream's end.
  if (const int major = info.format & SF_FORMAT_TYPEMASK; major == SF_FORMAT_OGG || major == SF_FORMAT_MPEG) {
    // The walks ask for a few bytes per page/frame, front to back: serve them from 64 KiB blocks.
    // A 30-minute 44.1 kHz MP3 (68,900 frames) takes 44 ms with one pread per frame.
    auto block = std::make_shared<std::vector<unsigned char>>();
    auto block_at = std::make_shared<std::uint64_t>(0);
    const ByteReader reader = [fd, block, block_at](std::uint64_t offset, unsigned char* buf, std::size_t n) {
      std::size_t done = 0;
      while (done < n) {
        const std::uint64_t at = offset + done;
        if (at < *block_at || at >= *block_at + block->size()) {
          block->resize(64 * 1024);
          ssize_t got = -1;
          do got = ::pread(fd, block->data(), block->size(), off_t(at));
          while (got < 0 && errno == EINTR);
          block->resize(got > 0 ? std::size_t(got) : 0);
          *block_at = at;
          if (block->empty()) break;
        }
        const std::size_t from = std::size_t(at - *block_at);
        const std::size_t take = std::min(n - done, block->size() - from);
        std::memcpy(buf + done, block->data() + from, take);
        done += take;
      }
      return done;
    };
    const ContainerEnd end = major == SF_FORMAT_OGG ? check_ogg_end(reader, std::uint64_t(st.st_size))
                                                    : check_mpeg_end(reader, std::uint64_t(st.st_size));
    if (end.cut) return R::failure(cut_file_message(path, info, end));
  }
  // libsndfile's "length unknown": seen for Ogg files cut mid-page (when the check above has no verdict).
  if (info.frames == SF_COUNT_MAX)
    return R::failure(path + ": truncated or corrupt audio file: libsndfile cannot find where its audio ends; "
                             "re-copy the file from its source, or re-encode it from the original");
  if (info.frames <= 0)
    return R::failure(path + ": zero-length audio (a valid header holding no samples)");
  if (info.channels <= 0 || info.samplerate <= 0)
    return R::failure(path + ": invalid header (" + std::to_string(info.channels) + " channels at " +
                      std::to_string(info.samplerate) + " Hz)");
  impl->interleaved.resize(kBlockFrames * std::size_t(info.channels));
  impl->mono.reserve(kBlockFrames);
  if (info.samplerate != target_rate_hz) {
    int err = 0;
    // SINC_FASTEST: 97 dB SNR, passband 80% of Nyquist (6.4 kHz at 16 kHz), enough for speech
    // models. Measured on 10 min of 44.1 kHz stereo WAV (2-core box under load): 131x real time
    // against 54x for SINC_MEDIUM, in 5 MB RSS either way.
    impl->resampler = src_new(SRC_SINC_FASTEST, 1, &err);
    if (!impl->resampler) return R::failure(path + ": resampler failed to start (" + src_strerror(err) + ")");
    impl->ratio = double(target_rate_hz) / double(info.samplerate);
  }
  return AudioSource(std::move(impl));
}

std::size_t AudioSource::read(float* out, std::size_t max_samples) {
  Impl& d = *impl_;
  if (d.output_done || max_samples == 0) return 0;
  std::size_t written = 0;
  while (written == 0) {
    if (d.mono_pos >= d.mono.size() && !d.input_done) d.fill();
    if (!d.error.empty()) {
      d.output_done = true;
      return 0;
    }
    const std::size_t available = d.mono.size() - d.mono_pos;
    if (!d.resampler) {
      if (available == 0) {
        d.output_done = true;
        return 0;
      }
      const std::size_t n = std::min(available, max_samples);
      std::copy_n(d.mono.data() + d.mono_pos, n, out);
      d.mono_pos += n;
      return n;
    }
    SRC_DATA data{};
    data.data_in = d.mono.data() + d.mono_pos;
    data.input_frames = long(available);
    data.data_out = out;
    data.output_frames = long(max_samples);
    data.src_ratio = d.ratio;
    data.end_of_input = d.input_done ? 1 : 0;
    const int err = src_process(d.resampler, &data);
    if (err != 0) {
      d.error = d.path + ": resampling failed (" + src_strerror(err) + ")";
      d.output_done = true;
      return 0;
    }
    d.mono_pos += std::size_t(data.input_frames_used);
    written = std::size_t(data.output_frames_gen);
    if (written == 0 && d.input_done && d.mono_pos >= d.mono.size()) {
      d.output_done = true;
      return 0;
    }
  }
  return written;
}

const std::string& AudioSource::error() const { return impl_->error; }
bool AudioSource::at_end() const { return impl_->output_done; }
const std::string& AudioSource::path() const { return impl_->path; }
double AudioSource::duration_s() const { return double(impl_->info.frames) / double(impl_->info.samplerate); }
std::int64_t AudioSource::input_frames() const { return impl_->info.frames; }
int AudioSource::input_rate_hz() const { return impl_->info.samplerate; }
int AudioSource::channels() const { return impl_->info.channels; }
int AudioSource::target_rate_hz() const { return impl_->target_rate_hz; }
std::int64_t AudioSource::expected_output_samples() const {
  return std::llround(double(impl_->info.frames) * impl_->target_rate_hz / impl_->info.samplerate);
}

std::string AudioSource::format_name() const {
  SF_FORMAT_INFO major{};
  major.format = impl_->info.format & SF_FORMAT_TYPEMASK;
  sf_command(nullptr, SFC_GET_FORMAT_INFO, &major, sizeof major);
  SF_FORMAT_INFO sub{};
  sub.format = impl_->info.format & SF_FORMAT_SUBMASK;
  sf_command(nullptr, SFC_GET_FORMAT_INFO, &sub, sizeof sub);
  return std::string(major.name ? major.name : "?") + " / " + (sub.name ? sub.name : "?");
}

}  // namespace ab
