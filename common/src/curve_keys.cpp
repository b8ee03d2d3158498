#include "monsoon/common/curve_keys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace monsoon {
namespace {

constexpr std::size_t kZ85KeyLength = 40;
constexpr std::size_t kMaxNameLength = 64;
// A key file is a few comment lines and one key: anything larger is not one.
constexpr std::size_t kMaxKeyFileBytes = 4096;
constexpr mode_t kSecretKeyMode = 0600;
constexpr mode_t kPublicKeyMode = 0644;

std::string quoted(const std::filesystem::path& path) {
  return "'" + path.string() + "'";
}

std::string errno_text(int error) { return std::strerror(error); }

bool valid_z85_key(std::string_view text) {
  if (text.size() != kZ85KeyLength) return false;
  const std::string terminated(text);
  std::array<std::uint8_t, 32> decoded{};
  return zmq_z85_decode(decoded.data(), terminated.c_str()) != nullptr;
}

std::string octal_mode(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
  return text;
}

// A file descriptor closed when it goes out of scope.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;

  int get() const { return fd_; }
  // Closes it; returns 0, or the errno of a failed close.
  int close() {
    const int result = ::close(fd_);
    fd_ = -1;
    return result == 0 ? 0 : errno;
  }

 private:
  int fd_;
};

// Creates `path` with exactly `mode` (whatever the umask); the file must not
// exist. O_EXCL also refuses a symbolic link at `path`.
int create_exclusive(const std::filesystem::path& path, mode_t mode) {
  const int fd =
      ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode);
  if (fd < 0) {
    const int error = errno;
    if (error == EEXIST) {
      throw std::runtime_error(quoted(path) +
                               " already exists: refusing to overwrite it "
                               "(remove it, or choose another name)");
    }
    throw std::runtime_error("cannot create " + quoted(path) + ": " +
                             errno_text(error));
  }
  // The umask may only have removed bits; set exactly `mode`.
  if (::fchmod(fd, mode) != 0) {
    const int error = errno;
    ::close(fd);
    ::unlink(path.c_str());
    throw std::runtime_error("cannot set the mode of " + quoted(path) + ": " +
                             errno_text(error));
  }
  return fd;
}

// Writes all of `text` to `fd`, syncs and closes it; returns 0 or an errno.
int write_and_close(FileDescriptor& fd, const std::string& text) {
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n =
        ::write(fd.get(), text.data() + written, text.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return errno;
  return fd.close();
}

// The one key line of the key file `path`, checked as described in the
// header. With `secret`, the file must give no permission to group or
// others.
std::string read_key_line(const std::filesystem::path& path, bool secret) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) {
    throw std::runtime_error("cannot open key file " + quoted(path) + ": " +
                             errno_text(errno));
  }
  struct stat status {};
  if (::fstat(fd.get(), &status) != 0) {
    throw std::runtime_error("cannot stat key file " + quoted(path) + ": " +
                             errno_text(errno));
  }
  if (!S_ISREG(status.st_mode)) {
    throw std::runtime_error("key file " + quoted(path) +
                             " is not a regular file");
  }
  if (secret && (status.st_mode & 077) != 0) {
    throw std::runtime_error(
        "secret key file " + quoted(path) + " has mode " +
        octal_mode(status.st_mode) +
        ", which lets group or others access it: run chmod 600 " +
        path.string() +
        " (and consider the key exposed if others could "
        "read it)");
  }

  std::string text;
  std::vector<char> buffer(kMaxKeyFileBytes + 1);
  while (text.size() <= kMaxKeyFileBytes) {
    const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("cannot read key file " + quoted(path) + ": " +
                               errno_text(errno));
    }
    if (n == 0) break;
    text.append(buffer.data(), static_cast<std::size_t>(n));
  }
  if (text.size() > kMaxKeyFileBytes) {
    throw std::runtime_error("key file " + quoted(path) + " is larger than " +
                             std::to_string(kMaxKeyFileBytes) +
                             " bytes: it is not a key file");
  }

  const std::string expected =
      ": expected comment lines ('#') and exactly one line holding a "
      "40-character Z85 key (as written by monsoon keygen)";
  std::string key;
  std::size_t key_lines = 0;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    start = end + 1;
    while (!line.empty() &&
           (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    if (line.empty() || line.front() == '#') continue;
    ++key_lines;
    key = line;
  }
  if (key_lines != 1) {
    throw std::runtime_error("key file " + quoted(path) + " has " +
                             std::to_string(key_lines) + " key lines" +
                             expected);
  }
  if (!valid_z85_key(key)) {
    throw std::runtime_error("key file " + quoted(path) +
                             " holds no valid key" + expected);
  }
  return key;
}

std::string key_file_text(std::string_view description,
                          const std::string& key) {
  std::string text = "# ";
  text += description;
  text += "\n";
  text += key;
  text += "\n";
  return text;
}

void require_curve() {
  if (zmq_has("curve") == 0) {
    throw std::runtime_error(
        "this libzmq was built without CURVE security (zmq_has(\"curve\") is "
        "false): install a libzmq built with libsodium");
  }
}

}  // namespace

CurveKeyPair generate_curve_key_pair() {
  require_curve();
  std::array<char, kZ85KeyLength + 1> public_key{};
  std::array<char, kZ85KeyLength + 1> secret_key{};
  if (zmq_curve_keypair(public_key.data(), secret_key.data()) != 0) {
    throw std::runtime_error(std::string("zmq_curve_keypair failed: ") +
                             zmq_strerror(zmq_errno()));
  }
  return CurveKeyPair{public_key.data(), secret_key.data()};
}

bool valid_curve_key_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  for (const char c : name) {
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                         c == '-';
    if (!allowed) return false;
  }
  return true;
}

void write_curve_key_pair(const std::filesystem::path& directory,
                          std::string_view name, const CurveKeyPair& keys) {
  if (!valid_curve_key_name(name)) {
    throw std::invalid_argument(
        "invalid key name '" + std::string(name) +
        "': use 1 to 64 letters, digits, '.', '_' or '-'");
  }
  if (!valid_z85_key(keys.public_key) || !valid_z85_key(keys.secret_key)) {
    throw std::invalid_argument("a CURVE key must be 40 valid Z85 characters");
  }
  const std::filesystem::path secret_path =
      directory / (std::string(name) + ".key");
  const std::filesystem::path public_path =
      directory / (std::string(name) + ".pub");

  FileDescriptor secret_fd(create_exclusive(secret_path, kSecretKeyMode));
  std::optional<FileDescriptor> public_fd;
  try {
    public_fd.emplace(create_exclusive(public_path, kPublicKeyMode));
  } catch (...) {
    secret_fd.close();
    ::unlink(secret_path.c_str());
    throw;
  }

  const auto fail = [&](const std::filesystem::path& path, int error) {
    ::unlink(secret_path.c_str());
    ::unlink(public_path.c_str());
    throw std::runtime_error("cannot write " + quoted(path) + ": " +
                             errno_text(error));
  };
  const std::string name_text(name);
  if (const int error = write_and_close(
          secret_fd,
          key_file_text("Monsoon CurveZMQ secret key '" + name_text +
                            "'. SECRET: keep it private (mode 0600), never "
                            "share or copy it; give out " +
                            name_text + ".pub instead.",
                        keys.secret_key))) {
    fail(secret_path, error);
  }
  if (const int error = write_and_close(
          *public_fd,
          key_file_text("Monsoon CurveZMQ public key '" + name_text +
                            "'. Public: give it to the peers that must "
                            "know this key.",
                        keys.public_key))) {
    fail(public_path, error);
  }
}

CurveKeyPair load_curve_secret_key(const std::filesystem::path& path) {
  require_curve();
  CurveKeyPair keys;
  keys.secret_key = read_key_line(path, /*secret=*/true);
  std::array<char, kZ85KeyLength + 1> public_key{};
  if (zmq_curve_public(public_key.data(), keys.secret_key.c_str()) != 0) {
    throw std::runtime_error("cannot derive the public key of " + quoted(path) +
                             ": " + zmq_strerror(zmq_errno()));
  }
  keys.public_key = public_key.data();
  return keys;
}

std::string load_curve_public_key(const std::filesystem::path& path) {
  return read_key_line(path, /*secret=*/false);
}

}  // namespace monsoon
