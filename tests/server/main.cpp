// Test runner for the server and client integration tests (tests/server, tests/client):
// doctest's main, with SIGPIPE ignored and spdlog quietened.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>

#include <csignal>

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    spdlog::set_level(spdlog::level::warn);
    doctest::Context ctx(argc, argv);
    return ctx.run();
}
