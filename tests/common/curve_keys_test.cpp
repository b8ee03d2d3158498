#include "monsoon/common/curve_keys.hpp"

#include <sys/stat.h>
#include <zmq.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "temp_dir.hpp"

using Catch::Matchers::Contains;
using monsoon::CurveKeyPair;
using monsoon::generate_curve_key_pair;
using monsoon::load_curve_public_key;
using monsoon::load_curve_secret_key;
using monsoon::write_curve_key_pair;
using monsoon::test::TempDir;

namespace {

// Whether `key` is 40 Z85 characters, which decode to 32 bytes.
bool decodes_to_32_bytes(const std::string& key) {
  std::array<std::uint8_t, 32> decoded{};
  return key.size() == 40 &&
         zmq_z85_decode(decoded.data(), key.c_str()) != nullptr;
}

mode_t file_mode(const std::string& path) {
  struct stat status {};
  REQUIRE(::stat(path.c_str(), &status) == 0);
  return status.st_mode & 07777;
}

// Writes `text` to the file `name` of `dir` with `mode`; returns its path.
std::string secret_file(const TempDir& dir, const std::string& name,
                        const std::string& text, mode_t mode = 0600) {
  const std::string path = dir.write(name, text);
  REQUIRE(::chmod(path.c_str(), mode) == 0);
  return path;
}

}  // namespace

TEST_CASE(
    "a generated key pair is two Z85 keys, the public one derived "
    "from the secret one") {
  REQUIRE(zmq_has("curve") != 0);
  const CurveKeyPair keys = generate_curve_key_pair();
  CHECK(decodes_to_32_bytes(keys.public_key));
  CHECK(decodes_to_32_bytes(keys.secret_key));
  std::array<char, 41> derived{};
  REQUIRE(zmq_curve_public(derived.data(), keys.secret_key.c_str()) == 0);
  CHECK(std::string(derived.data()) == keys.public_key);
  CHECK(generate_curve_key_pair().secret_key != keys.secret_key);
}

TEST_CASE(
    "a written key pair loads back, the secret key 0600 and the "
    "public key 0644, whatever the umask") {
  TempDir dir;
  const CurveKeyPair keys = generate_curve_key_pair();
  // Without an explicit chmod, this umask would leave both files 0400.
  const mode_t previous = ::umask(0277);
  write_curve_key_pair(dir.path(), "broker-1.a_b", keys);
  ::umask(previous);

  const std::string secret_path = dir.file("broker-1.a_b.key");
  const std::string public_path = dir.file("broker-1.a_b.pub");
  CHECK(file_mode(secret_path) == 0600);
  CHECK(file_mode(public_path) == 0644);
  const CurveKeyPair loaded = load_curve_secret_key(secret_path);
  CHECK(loaded.secret_key == keys.secret_key);
  CHECK(loaded.public_key == keys.public_key);
  CHECK(load_curve_public_key(public_path) == keys.public_key);
  // A public key file has no mode rule; the secret key file loads as a key.
  CHECK(load_curve_public_key(secret_path) == keys.secret_key);
}

TEST_CASE("writing a key pair never overwrites a file") {
  TempDir dir;
  const CurveKeyPair first = generate_curve_key_pair();
  write_curve_key_pair(dir.path(), "node", first);
  const CurveKeyPair second = generate_curve_key_pair();
  CHECK_THROWS_WITH(write_curve_key_pair(dir.path(), "node", second),
                    Contains("node.key") && Contains("already exists"));
  CHECK(load_curve_secret_key(dir.file("node.key")).secret_key ==
        first.secret_key);
  CHECK(load_curve_public_key(dir.file("node.pub")) == first.public_key);

  SECTION("an existing public key file alone: nothing is written") {
    dir.write("other.pub", "x\n");
    CHECK_THROWS_WITH(write_curve_key_pair(dir.path(), "other", second),
                      Contains("other.pub") && Contains("already exists"));
    CHECK_FALSE(std::filesystem::exists(dir.file("other.key")));
  }
  SECTION("a missing directory is an error naming the file") {
    CHECK_THROWS_WITH(
        write_curve_key_pair(dir.path() / "missing", "node", second),
        Contains("cannot create") && Contains("node.key"));
  }
}

TEST_CASE("a key pair's name is letters, digits, '.', '_' and '-'") {
  TempDir dir;
  const CurveKeyPair keys = generate_curve_key_pair();
  const std::vector<std::string> invalid = {
      "", "a/b", "../x", "a b", "k\xc3\xa9y", std::string(65, 'a')};
  for (const std::string& name : invalid) {
    CHECK_FALSE(monsoon::valid_curve_key_name(name));
    CHECK_THROWS_AS(write_curve_key_pair(dir.path(), name, keys),
                    std::invalid_argument);
  }
  CHECK(monsoon::valid_curve_key_name(std::string(64, 'a')));
  CHECK(std::filesystem::is_empty(dir.path()));
}

TEST_CASE(
    "a secret key file readable by group or others is refused, with "
    "the chmod that fixes it") {
  TempDir dir;
  const CurveKeyPair keys = generate_curve_key_pair();
  write_curve_key_pair(dir.path(), "worker", keys);
  const std::string path = dir.file("worker.key");
  for (const mode_t mode : {0640, 0604, 0610, 0601, 0620}) {
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    CHECK_THROWS_WITH(load_curve_secret_key(path),
                      Contains("chmod 600 " + path));
  }
  REQUIRE(::chmod(path.c_str(), 0400) == 0);
  CHECK(load_curve_secret_key(path).secret_key == keys.secret_key);
}

TEST_CASE("a key file that is not one Z85 key line is refused") {
  TempDir dir;
  const std::string key = generate_curve_key_pair().secret_key;
  CHECK(load_curve_secret_key(
            secret_file(dir, "ok", "# comment\n\n" + key + "\r\n"))
            .secret_key == key);
  CHECK(load_curve_secret_key(secret_file(dir, "no-newline", key)).secret_key ==
        key);

  const auto refused = [&](const std::string& text) {
    const std::string path = secret_file(dir, "bad", text);
    CHECK_THROWS_WITH(load_curve_secret_key(path), Contains("Z85"));
    CHECK_THROWS_WITH(load_curve_public_key(path), Contains("Z85"));
  };
  refused("");
  refused("# only a comment\n");
  refused(key + "\n" + key + "\n");      // two keys
  refused(key.substr(0, 39) + "\n");     // too short
  refused(key + "A\n");                  // too long
  refused(std::string(40, '"') + "\n");  // not Z85
  refused(" " + key + "\n");             // leading space
  CHECK_THROWS_WITH(
      load_curve_secret_key(secret_file(
          dir, "large", "#" + std::string(5000, 'x') + "\n" + key + "\n")),
      Contains("larger than 4096 bytes"));
  // The message never repeats the secret key.
  const std::string path = secret_file(dir, "bad", key + "\n" + key + "\n");
  try {
    load_curve_secret_key(path);
    FAIL("loaded");
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()).find(key) == std::string::npos);
  }
}

TEST_CASE("a key path that is not a regular file is refused") {
  TempDir dir;
  CHECK_THROWS_WITH(load_curve_secret_key(dir.path()),
                    Contains("not a regular file"));
  CHECK_THROWS_WITH(load_curve_public_key(dir.path()),
                    Contains("not a regular file"));
  const std::string fifo = dir.file("fifo.key");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(load_curve_secret_key(fifo),
                    Contains("not a regular file"));
  CHECK_THROWS_WITH(load_curve_secret_key(dir.file("missing.key")),
                    Contains("cannot open") && Contains("missing.key"));
}
