// Many clients: 1000 concurrent sessions route to each other, then half of them disconnect
// abruptly (RST); the registry must hold exactly the live ones afterwards.
#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <vector>

#include "support.hpp"

using namespace lariv::test;
using kind = frame::kind;
using proto::error_code;

namespace {

/// One round: every live client i sends `k` tokened messages to targets(i, j), then every client
/// reads its k ACKs and the MSGs addressed to it. Returns the number of messages routed, or -1
/// after a failed check.
long long route_round(std::vector<client>& cs, const std::vector<int>& live, int k, int round,
                      std::size_t payload_size) {
    const int m = static_cast<int>(live.size());
    std::vector<int> expect(cs.size(), 0);
    for (int li = 0; li < m; ++li) {
        const int i = live[static_cast<std::size_t>(li)];
        std::string out;
        for (int j = 0; j < k; ++j) {
            const int t = live[static_cast<std::size_t>((li + 1 + j * 7 + round * 13) % m)];
            client::append_send(out, cs[static_cast<std::size_t>(t)].id(),
                                numbered(std::to_string(i), static_cast<std::uint64_t>(j), payload_size),
                                "r" + std::to_string(j));
            ++expect[static_cast<std::size_t>(t)];
        }
        if (!cs[static_cast<std::size_t>(i)].send_raw(out)) {
            FAIL_CHECK("send failed for client " << i);
            return -1;
        }
    }
    long long routed = 0;
    for (int i : live) {
        auto& c = cs[static_cast<std::size_t>(i)];
        int acks = 0;
        int msgs = 0;
        while (acks < k || msgs < expect[static_cast<std::size_t>(i)]) {
            auto f = c.next(scaled(5000ms));
            if (f.what == kind::ack && !f.ack_error) {
                ++acks;
            } else if (f.what == kind::msg) {
                ++msgs;
                ++routed;
            } else {
                FAIL_CHECK("client " << i << " got " << f.describe());
                return -1;
            }
        }
    }
    return routed;
}

}  // namespace

TEST_CASE("1000 sessions route to each other then half reset abruptly: registry == live ones") {
    constexpr int n = 1000;
    auto cfg = test_config();
    cfg.max_sessions = 5000;
    cfg.heartbeat_ms = 0;
    cfg.registry_buffer = 256;
    test_server s(cfg);
    const int fds0 = fd_count();
    const long rss0 = rss_kib();

    std::vector<client> cs(n);
    for (auto& c : cs) {
        c.connect(s.port());
        c.send_raw("HELLO\r\n");  // pipelined: read the replies below
    }
    for (int i = 0; i < n; ++i) {
        REQUIRE_MESSAGE(cs[static_cast<std::size_t>(i)].finish_hello(scaled(5000ms)),
                        cs[static_cast<std::size_t>(i)].last_failure());
    }
    REQUIRE(eventually([&] { return s.reg().size() == static_cast<std::size_t>(n); }, scaled(2000ms)));
    const long rss1 = rss_kib();
    // Each session holds a client and a server socket. A few descriptors of the baseline can be
    // transient (a closing socket, a sanitizer's pipe), so allow a small slack below 2n.
    CHECK(fd_count() >= fds0 + 2 * n - 4);

    // Routing: everyone to everyone else, in rounds.
    std::vector<int> all(n);
    for (int i = 0; i < n; ++i) {
        all[static_cast<std::size_t>(i)] = i;
    }
    const int rounds = time_scale >= 5 ? 2 : 5;
    constexpr int k = 20;
    const auto t0 = std::chrono::steady_clock::now();
    long long routed = 0;
    for (int r = 0; r < rounds; ++r) {
        const long long got = route_round(cs, all, k, r, 64);
        REQUIRE(got >= 0);
        routed += got;
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(routed == static_cast<long long>(rounds) * n * k);
    CHECK(s.stats().msgs_out.load() == static_cast<std::uint64_t>(routed));

    // Half of them vanish abruptly: SO_LINGER 0, so the server sees RST.
    const auto closed_before = s.closed(srv::close_reason::client_closed) + s.closed(srv::close_reason::io_error);
    std::vector<proto::session_id> dead;
    std::vector<int> live;
    for (int i = 0; i < n; ++i) {
        if (i % 2 == 0) {
            dead.push_back(cs[static_cast<std::size_t>(i)].id());
            cs[static_cast<std::size_t>(i)].reset();
        } else {
            live.push_back(i);
        }
    }
    const bool settled = eventually([&] { return s.reg().size() == live.size(); }, scaled(5000ms));
    CHECK(settled);
    CHECK(s.reg().size() == live.size());
    const auto closed_after = s.closed(srv::close_reason::client_closed) + s.closed(srv::close_reason::io_error);
    CHECK(closed_after - closed_before == dead.size());
    for (const auto& id : dead) {
        CHECK_FALSE(s.reg().find(id));
    }
    // The registry's own iteration agrees with its size.
    std::size_t iterated = 0;
    s.reg().for_each([&](srv::session_base&) {
        ++iterated;
        return true;
    });
    CHECK(iterated == live.size());
    auto st = cs[1].stats();
    REQUIRE(st);
    CHECK((*st)["sessions"] == live.size());
    CHECK((*st)["handshakes"] == n);

    // The survivors still route to each other, and sends to the dead get stale_session.
    CHECK(route_round(cs, live, 5, 99, 64) == static_cast<long long>(live.size()) * 5);
    auto& probe = cs[1];
    for (std::size_t d = 0; d < dead.size(); d += 50) {
        REQUIRE(probe.send_to(dead[d], "x", "dead"));
        auto f = probe.next(scaled(2000ms));
        REQUIRE(f.what == kind::ack);
        CHECK(f.ack_error == error_code::stale_session);
    }

    // Everyone leaves: the registry empties and the fds come back.
    for (int i : live) {
        cs[static_cast<std::size_t>(i)].close();
    }
    CHECK(eventually([&] { return s.reg().size() == 0; }, scaled(5000ms)));
    CHECK(eventually([&] { return fd_count() <= fds0 + 2; }, scaled(3000ms)));
    const long rss2 = rss_kib();

    std::printf("many clients: %d sessions, %lld messages routed in %.2f s = %.0f msgs/s; RSS %ld KiB "
                "-> %ld KiB with %d idle sessions (%.1f KiB per session, client side included) "
                "-> %ld KiB after all left; lariv buffers %zu\n",
                n, routed, secs, static_cast<double>(routed) / secs, rss0, rss1, n,
                static_cast<double>(rss1 - rss0) / n, rss2, s.reg().lariv_buffers());
}
