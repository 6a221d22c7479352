// Session life: stale ids after eviction with slot reuse (S6), handshake, heartbeat and idle
// deadlines, max sessions (S8).
#include <doctest/doctest.h>

#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "support.hpp"

using namespace lariv::test;
using kind = frame::kind;
using proto::error_code;

TEST_CASE("S6: a stale session id never reaches the session that reused its slot") {
    auto cfg = test_config();
    cfg.registry_buffer = 8;  // tiny Lariv buffers: slots are reused constantly
    test_server s(cfg);
    client c = s.connect_hello(R"({"name":"C"})");

    const int cycles = time_scale >= 5 ? 600 : 2000;
    int same_slot = 0;      // B took exactly A's slot (newer generation)
    int reused_slot = 0;    // B's slot had held an earlier, now dead, session
    int misdeliveries = 0;
    int wrong_answers = 0;
    int stale = 0;
    int unknown = 0;
    std::map<std::uint32_t, proto::session_id> dead_by_slot;  // slot -> latest dead id in it
    std::vector<std::size_t> buffers_at;
    auto probe = [&](proto::session_id dead, const char* tok) {
        std::string out;
        client::append_send(out, dead, "for the dead only", tok);
        REQUIRE(c.send_raw(out));
        auto f = c.next(scaled(2000ms));
        while (f.what == kind::msg) {
            ++misdeliveries;  // to C itself, which may also sit in a reused slot
            f = c.next(scaled(2000ms));
        }
        REQUIRE_MESSAGE(f.what == kind::ack, f.describe());
        CHECK(f.token == tok);
        if (f.ack_error == error_code::stale_session) {
            ++stale;
        } else if (f.ack_error == error_code::unknown_session) {
            ++unknown;
        } else {
            ++wrong_answers;
        }
    };
    // Ids are scrambled: the registry decodes them to their Lariv slot and generation.
    auto slot = [&](const proto::session_id& id) { return s.reg().index_of(id).value().slot(); };
    auto gen = [&](const proto::session_id& id) { return s.reg().index_of(id).value().generation(); };
    for (int i = 0; i < cycles; ++i) {
        client a = s.connect_hello();
        const auto old_id = a.id();
        // A leaves; once the server has closed its connection, its slot is free.
        a.send_raw("QUIT\r\n");
        REQUIRE(a.wait_closed(scaled(2000ms)));
        REQUIRE(eventually([&] { return s.reg().find(old_id) == nullptr; }, scaled(2000ms)));
        dead_by_slot[slot(old_id)] = old_id;

        client b = s.connect_hello();
        CHECK(b.id() != old_id);
        if (slot(b.id()) == slot(old_id)) {
            ++same_slot;
        }
        // C sends to A's old id, and to the last dead id of B's slot: the id B's slot reuse
        // made stale (the exact S6 case, whichever slot Lariv handed to B).
        probe(old_id, "a");
        if (auto it = dead_by_slot.find(slot(b.id())); it != dead_by_slot.end()) {
            ++reused_slot;
            CHECK(gen(b.id()) > gen(it->second));
            probe(it->second, "b");
        }
        // B must not have received anything: a PING round trip flushes its queue.
        std::vector<frame> before;
        REQUIRE(b.ping(scaled(2000ms), &before));
        for (auto& f : before) {
            if (f.what == kind::msg) {
                ++misdeliveries;
            }
        }
        b.send_raw("QUIT\r\n");
        REQUIRE(b.wait_closed(scaled(2000ms)));
        REQUIRE(eventually([&] { return s.reg().find(b.id()) == nullptr; }, scaled(2000ms)));
        dead_by_slot[slot(b.id())] = b.id();
        if ((i + 1) % (cycles / 4) == 0) {
            buffers_at.push_back(s.reg().lariv_buffers());
        }
    }
    const double reuse = static_cast<double>(reused_slot) / cycles;
    const double same = static_cast<double>(same_slot) / cycles;
    std::printf("S6: %d cycles; B in a reused slot %.1f%% (in A's own slot %.1f%%); stale %d, "
                "unknown %d, misdeliveries %d; lariv buffers (cap 8) at each quarter:",
                cycles, 100 * reuse, 100 * same, stale, unknown, misdeliveries);
    for (auto b : buffers_at) {
        std::printf(" %zu", b);
    }
    std::printf("\n");
    CHECK(misdeliveries == 0);
    CHECK(wrong_answers == 0);
    CHECK(stale + unknown == cycles + reused_slot);
    CHECK(reuse >= 0.9);
    // Lariv's buffer count settles (it does not grow with the number of cycles).
    REQUIRE(buffers_at.size() == 4);
    CHECK(buffers_at[3] <= 16);
}

TEST_CASE("handshake deadline: no HELLO in time -> -ERR timeout, close, slot freed") {
    auto cfg = test_config();
    cfg.handshake_timeout_ms = 300;
    test_server s(cfg);
    client quiet(s.port());
    client pinger(s.port());  // PINGs keep input flowing but are not a handshake
    const auto t0 = std::chrono::steady_clock::now();
    frame last;
    pinger.send_raw("PING\r\n");
    CHECK(pinger.next().what == kind::pong);
    CHECK(quiet.wait_closed(scaled(300ms + 1000ms), &last));
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    CHECK(last.is_err(error_code::timeout));
    CHECK(elapsed >= 250ms);
    frame plast;
    CHECK(pinger.wait_closed(scaled(1000ms), &plast));
    CHECK(plast.is_err(error_code::timeout));
    CHECK(eventually([&] { return s.reg().size() == 0; }, scaled(1000ms)));
    CHECK(s.closed(srv::close_reason::handshake_timeout) == 2);

    // A client that says HELLO in time is unaffected.
    client ok = s.connect_hello();
    std::this_thread::sleep_for(600ms);
    CHECK(ok.ping());
}

TEST_CASE("heartbeat: a client that never answers PING is closed with -ERR timeout") {
    auto cfg = test_config();
    cfg.heartbeat_ms = 200;
    cfg.max_outstanding_pings = 2;
    test_server s(cfg);
    client mute = s.connect_hello();
    client alive = s.connect_hello();
    const auto t0 = std::chrono::steady_clock::now();

    // `alive` answers every PING through next_skip_ping; `mute` reads but never answers.
    int pings = 0;
    frame last;
    bool closed = false;
    const auto deadline = t0 + scaled(200ms * 4 + 1500ms);
    while (std::chrono::steady_clock::now() < deadline && !closed) {
        auto f = mute.next(50ms);
        if (f.what == kind::ping) {
            ++pings;
        } else if (f.what == kind::err) {
            last = f;
        } else if (f.what == kind::closed) {
            closed = true;
        }
        (void)alive.next_skip_ping(1ms);
    }
    const auto elapsed = std::chrono::steady_clock::now() - t0;
    CHECK(closed);
    CHECK(pings >= 1);
    CHECK(pings <= 2);
    CHECK(last.is_err(error_code::timeout));
    CHECK(elapsed >= 400ms);
    CHECK(s.closed(srv::close_reason::heartbeat_timeout) == 1);
    // The answering client survived and still works.
    for (int i = 0; i < 10; ++i) {
        (void)alive.next_skip_ping(30ms);
    }
    CHECK(alive.ping());
    CHECK(s.reg().size() == 1);
}

TEST_CASE("idle timeout: no input for idle_timeout_ms -> -ERR timeout and close") {
    auto cfg = test_config();
    cfg.heartbeat_ms = 0;
    cfg.idle_timeout_ms = 400;
    test_server s(cfg);
    client idle = s.connect_hello();
    client busy = s.connect_hello();
    const auto t0 = std::chrono::steady_clock::now();
    frame last;
    bool closed = false;
    while (!closed && std::chrono::steady_clock::now() - t0 < scaled(400ms + 1500ms)) {
        REQUIRE(busy.ping());
        auto f = idle.next(100ms);
        if (f.what == kind::err) {
            last = f;
        }
        closed = f.what == kind::closed;
    }
    CHECK(closed);
    CHECK(last.is_err(error_code::timeout));
    CHECK(std::chrono::steady_clock::now() - t0 >= 350ms);
    CHECK(s.closed(srv::close_reason::idle_timeout) == 1);
    CHECK(busy.ping());
}

TEST_CASE("S8: max_sessions=10: 40 of 50 refused with -ERR server_full, then re-admitted") {
    auto cfg = test_config();
    cfg.max_sessions = 10;
    test_server s(cfg);
    CHECK(s.get().max_sessions() == 10);
    std::vector<client> all(50);
    for (auto& c : all) {
        c.connect(s.port());
    }
    int live = 0;
    int refused = 0;
    std::vector<client*> admitted;
    for (auto& c : all) {
        auto f = c.hello_raw({}, scaled(2000ms));
        if (f.what == kind::body && f.body == proto::body_kind::hello) {
            ++live;
            admitted.push_back(&c);
        } else if (f.is_err(error_code::server_full)) {
            ++refused;
            CHECK(c.wait_closed(scaled(2000ms)));
        } else {
            FAIL_CHECK("unexpected reply " << f.describe());
        }
    }
    CHECK(live == 10);
    CHECK(refused == 40);
    CHECK(s.reg().size() == 10);
    CHECK(s.stats().refused_full.load() == 40);
    // The admitted ones work.
    for (auto* c : admitted) {
        CHECK(c->ping());
    }
    // Close 5; 5 new clients get in, the 6th does not.
    for (int i = 0; i < 5; ++i) {
        admitted[static_cast<std::size_t>(i)]->close();
    }
    REQUIRE(eventually([&] { return s.reg().size() == 5; }, scaled(2000ms)));
    std::vector<client> again;
    for (int i = 0; i < 5; ++i) {
        again.push_back(s.connect_hello());
    }
    client extra(s.port());
    CHECK(extra.next(scaled(2000ms)).is_err(error_code::server_full));
    CHECK(extra.wait_closed(scaled(2000ms)));
    CHECK(s.reg().size() == 10);
}

TEST_CASE("max_sessions is clamped to the fd limit minus a reserve") {
    const std::size_t want = 100000000;
    const std::size_t got = srv::clamp_to_fd_limit(want);
    CHECK(got < want);
    CHECK(got >= 1);
    rlimit rl{};
    REQUIRE(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur != RLIM_INFINITY) {
        CHECK(got + srv::reserved_fds <= rl.rlim_cur);
    }
    CHECK(srv::clamp_to_fd_limit(10) == 10);
}
