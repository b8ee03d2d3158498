// CurveZMQ key pairs (RFC 26) as files: ZeroMQ's Z85 text, 40 characters per
// 32-byte key. A key file is text: lines starting with '#' are comments,
// blank lines are ignored, and exactly one line holds the key. `<name>.key`
// holds the secret key and must give no permission to group or others
// (mode 0600); `<name>.pub` holds the public key (mode 0644).
//
// Free functions, callable from any thread; they keep no state. Errors are
// std::runtime_error with a message that names the file and says how to fix
// it; a message never contains a secret key. Uses libzmq's C API (in the
// .cpp only).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace monsoon {

struct CurveKeyPair {
  std::string public_key;  // 40 Z85 characters
  std::string secret_key;  // 40 Z85 characters
};

// A fresh key pair from libzmq (zmq_curve_keypair). Throws
// std::runtime_error when libzmq was built without CURVE.
CurveKeyPair generate_curve_key_pair();

// Whether `name` may name a key pair's files: 1 to 64 letters, digits, '.',
// '_' or '-'.
bool valid_curve_key_name(std::string_view name);

// Writes `<directory>/<name>.key` (the secret key, created with mode 0600,
// never readable by group or others even briefly) and `<directory>/<name>.pub`
// (the public key, mode 0644). Neither file may exist already: throws
// std::runtime_error naming the existing file, and writes nothing. Throws
// std::runtime_error when a file cannot be created or written (then neither
// is left behind), and std::invalid_argument when `name` is not
// valid_curve_key_name or a key of `keys` is not 40 valid Z85 characters.
void write_curve_key_pair(const std::filesystem::path& directory,
                          std::string_view name, const CurveKeyPair& keys);

// The key pair of the secret key file `path`, the public key derived from the
// secret one (zmq_curve_public). Throws std::runtime_error when the file
// cannot be read, is not a regular file, gives any permission to group or
// others (the message says to run chmod 600), or is not in the format above
// with a valid Z85 key.
CurveKeyPair load_curve_secret_key(const std::filesystem::path& path);

// The public key of the key file `path` (same format; its mode is not
// checked). Throws std::runtime_error as load_curve_secret_key does.
std::string load_curve_public_key(const std::filesystem::path& path);

}  // namespace monsoon
