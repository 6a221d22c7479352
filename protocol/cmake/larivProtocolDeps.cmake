# Dependencies of lariv::protocol, included by larivConfig.cmake when the protocol is installed.
include(CMakeFindDependencyMacro)
find_dependency(nlohmann_json 3)
