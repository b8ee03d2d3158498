// A private directory for one test's files: made with mkdtemp(3) under the
// system's temporary directory, removed with everything in it when the
// object is destroyed. Not shared between threads.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace monsoon::test {

class TempDir {
 public:
  // Throws std::runtime_error when the directory cannot be made.
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "monsoon-test-XXXXXX")
            .string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The path of the entry `name` in the directory.
  std::string file(const std::string& name) const {
    return (path_ / name).string();
  }
  // Writes `text` to the file `name` in the directory; returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
    return file(name);
  }

 private:
  std::filesystem::path path_;
};

}  // namespace monsoon::test
