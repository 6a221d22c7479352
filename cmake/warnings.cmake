# Warnings for our own targets only; never put on an exported INTERFACE target.
function(lariv_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion
                                             -Wno-sign-conversion)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # Asio uses standalone fences; gcc's TSan build warns about them (see RELIABILITY.md 1.2).
    target_compile_options(${target} PRIVATE -Wno-tsan)
  endif()
endfunction()
