#include "monsoon/common/routing_id.hpp"

#include <random>

namespace monsoon {

std::string make_routing_id() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  std::uniform_int_distribution<int> byte(0, 255);
  std::string id(16, '\0');
  for (char& c : id) c = static_cast<char>(byte(generator));
  if (id[0] == '\0') id[0] = 'M';
  return id;
}

}  // namespace monsoon
