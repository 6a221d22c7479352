# Dependencies of lariv::registry for find_package(lariv): included by larivConfig.cmake.
find_dependency(nlohmann_json 3)
find_dependency(spdlog 1.10)
# lariv::registry links OpenSSL::SSL and OpenSSL::Crypto (lariv/server/tls.hpp, asio::ssl).
find_dependency(OpenSSL 3)
include("${CMAKE_CURRENT_LIST_DIR}/asio.cmake")
