// S7 in-process: the accept loop survives EMFILE (backs off without spinning, recovers).
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/time.h>

#include <cstdio>
#include <vector>

#include <spdlog/spdlog.h>

#include "support.hpp"

using namespace lariv::test;
using kind = frame::kind;

namespace {
double cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}
int highest_fd() {
    int hi = -1;
    if (auto* d = ::opendir("/proc/self/fd")) {
        while (auto* e = ::readdir(d)) {
            if (e->d_name[0] != '.') {
                hi = std::max(hi, std::atoi(e->d_name));
            }
        }
        ::closedir(d);
    }
    return hi;
}
}  // namespace

TEST_CASE("S7: accept loop at EMFILE backs off without spinning and recovers") {
    auto cfg = test_config();
    cfg.accept_backoff_min_ms = 10;
    cfg.accept_backoff_max_ms = 1000;
    cfg.heartbeat_ms = 0;
    test_server s(cfg);
    client warm = s.connect_hello();

    constexpr int n = 20;
    std::vector<client> pending(n);
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    // Every client socket exists before the limit drops; connect() needs no new descriptor,
    // the server's accept() does.
    std::vector<int> fds;
    for (int i = 0; i < n; ++i) {
        fds.push_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(fds.back() >= 0);
    }
    // No log formatting while the process is out of descriptors: UBSan's vptr check probes
    // memory through a pipe(), which fails at EMFILE and reports a false "invalid vptr" in fmt.
    const auto level = spdlog::get_level();
    spdlog::set_level(spdlog::level::err);
    rlimit low = old;
    low.rlim_cur = static_cast<rlim_t>(highest_fd() + 1);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    // Fill the holes below the limit (descriptors the harness left gaps between).
    std::vector<int> fillers;
    for (int fd = ::dup(0); fd >= 0; fd = ::dup(0)) {
        fillers.push_back(fd);
    }

    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(s.port());
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int connected = 0;
    for (int fd : fds) {
        connected += ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 ? 1 : 0;
    }
    const double cpu0 = cpu_seconds();
    std::this_thread::sleep_for(1500ms);
    const double cpu = cpu_seconds() - cpu0;
    const auto errors = s.stats().accept_errors.load();
    const bool warm_ok = warm.ping();  // existing sessions keep working meanwhile
    const auto size_at_emfile = s.reg().size();

    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    for (int fd : fillers) {
        ::close(fd);
    }
    spdlog::set_level(level);
    const auto t0 = std::chrono::steady_clock::now();
    const bool recovered = eventually([&] { return s.reg().size() == 1 + n; }, scaled(2000ms) + 500ms);
    const auto took = std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0);
    std::printf("S7: at EMFILE for 1.5 s: %llu accept errors, %.3f s CPU; all %d pending accepted "
                "%lld ms after the fds freed up\n",
                static_cast<unsigned long long>(errors), cpu, n, static_cast<long long>(took.count()));
    CHECK(connected == n);
    CHECK(errors >= 1);
    CHECK(errors <= 30);  // back-off: 10 ms doubling to 1 s, not a spin
    CHECK(cpu <= 0.2 * time_scale);
    CHECK(warm_ok);
    CHECK(size_at_emfile == 1);
    CHECK(recovered);
    // The late ones are ordinary sessions.
    for (int fd : fds) {
        const std::string hello = "HELLO\r\n";
        CHECK(::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(hello.size()));
    }
    CHECK(eventually([&] { return s.stats().handshakes.load() == 1 + n; }, scaled(2000ms)));
    for (int fd : fds) {
        ::close(fd);
    }
}
