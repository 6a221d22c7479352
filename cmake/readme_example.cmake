# lariv_readme_example(TARGET MARKER LIBRARY): the README's ```cpp block between
# <!-- MARKER --> and <!-- /MARKER --> becomes the executable TARGET, linked with LIBRARY and built
# with the project's warnings, so an example a user copies from the README always compiles.
# Re-extracted whenever README.md changes.
function(lariv_readme_example target marker library)
  file(READ ${PROJECT_SOURCE_DIR}/README.md _readme)
  string(REGEX MATCH "<!-- ${marker} -->\n```cpp\n(.*)\n```\n<!-- /${marker} -->" _match "${_readme}")
  if(NOT _match)
    message(FATAL_ERROR "README.md: no ```cpp block between <!-- ${marker} --> markers")
  endif()
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/${target}.cpp "${CMAKE_MATCH_1}\n")
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/README.md)
  add_executable(${target} ${CMAKE_CURRENT_BINARY_DIR}/${target}.cpp)
  target_link_libraries(${target} PRIVATE ${library})
  if(COMMAND lariv_warnings)
    lariv_warnings(${target})
  endif()
endfunction()
