# Dependencies of lariv::client for find_package(lariv): included by larivConfig.cmake.
find_dependency(nlohmann_json 3)
find_dependency(OpenSSL 3)
include("${CMAKE_CURRENT_LIST_DIR}/asio.cmake")
