// monsoon: Monsoon's command-line tool (monsoon --help lists its commands).
#include <iostream>

#include "monsoon/cli/cli.hpp"

int main(int argc, char** argv) {
  return monsoon::cli::run(argc, argv, std::cout, std::cerr);
}
