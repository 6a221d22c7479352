// Hostile input: oversized frames (S4), a malformed-input table (S3), slow consumers (S9 light).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "support.hpp"

using namespace lariv::test;
using kind = frame::kind;
using proto::error_code;

namespace {
const std::string some_id = "0000000700000001000000010000000a";
}

TEST_CASE("S4: oversized SEND is refused on its line, before any body byte, then closed") {
    auto cfg = test_config();
    cfg.limits.max_payload = 4096;
    cfg.max_queue_bytes = 1 << 20;
    test_server s(cfg);
    for (const std::string count : {"4097", "4294967296", "18446744073709551615"}) {
        CAPTURE(count);
        client c = s.connect_hello();
        // Only the line is sent: the refusal must not wait for the body.
        REQUIRE(c.send_raw("SEND " + some_id + " " + count + " t\r\n"));
        frame last;
        const auto t0 = std::chrono::steady_clock::now();
        CHECK(c.wait_closed(scaled(1000ms), &last));
        CHECK(std::chrono::steady_clock::now() - t0 < scaled(1000ms));
        CHECK(last.is_err(error_code::frame_too_large));
    }
    // Exactly max_payload is fine.
    client a = s.connect_hello();
    REQUIRE(a.send_to(a.id(), std::string(4096, 'p'), "max"));
    int got = 0;
    for (int i = 0; i < 2; ++i) {
        auto f = a.next();
        got += (f.is_ack_ok("max") || (f.what == kind::msg && f.text.size() == 4096)) ? 1 : 0;
    }
    CHECK(got == 2);
    CHECK(s.closed(srv::close_reason::protocol_error) == 3);
    CHECK(s.reg().size() == 1);
}

TEST_CASE("the replies of one read are written even when the read ends in a close") {
    // The replies to one read's commands are written once, after the read. A close in the middle
    // of that read (a fatal frame, QUIT) must flush them, in order, with its own last frame.
    test_server s(test_config());
    {
        client c = s.connect_hello();
        REQUIRE(c.send_raw("PING\r\nPING\r\nSEND " + some_id + " -5\r\nPING\r\n"));
        CHECK(c.next().what == kind::pong);
        CHECK(c.next().what == kind::pong);
        CHECK(c.next().is_err(error_code::bad_syntax));
        CHECK(c.next().what == kind::closed);  // the PING after the fatal frame is not answered
    }
    {
        client c = s.connect_hello();
        REQUIRE(c.send_raw("PING\r\nQUIT\r\nPING\r\n"));
        CHECK(c.next().what == kind::pong);
        CHECK(c.next().what == kind::ok);
        CHECK(c.next().what == kind::closed);
    }
    {
        // Before HELLO: a PING, the HELLO reply and a PING of one read.
        client c(s.port());
        REQUIRE(c.send_raw("PING\r\nHELLO {\"name\":\"x\"}\r\nPING\r\n"));
        CHECK(c.next().what == kind::pong);  // PING is fine before HELLO
        CHECK(c.next().what == kind::body);  // +HELLO
        CHECK(c.next().what == kind::pong);
    }
    CHECK(s.closed(srv::close_reason::protocol_error) == 1);
    CHECK(s.closed(srv::close_reason::client_quit) == 1);
}

namespace {
struct hostile_case {
    const char* name;
    bool after_hello;                 // send HELLO first
    std::string bytes;                // what the client sends
    std::optional<error_code> want;   // expected first -ERR (nullopt: any -ERR or a close)
    bool must_close;                  // the server must close the connection
};

std::vector<hostile_case> hostile_cases() {
    std::string junk(1 << 20, '\0');
    std::mt19937 rng(12345);
    for (auto& ch : junk) {
        ch = static_cast<char>(rng() & 0xff);
    }
    std::string deep(40, '[');
    return {
        {"negative length", true, "SEND " + some_id + " -5\r\n", error_code::bad_syntax, true},
        {"count not a number", true, "SEND " + some_id + " 1x\r\nabc\r\n", error_code::bad_syntax, true},
        {"count over 20 digits", true, "SEND " + some_id + " 123456789012345678901234\r\n", std::nullopt, true},
        {"count over max_payload", true, "SEND " + some_id + " 5000\r\n", error_code::frame_too_large, true},
        {"missing count", true, "SEND " + some_id + "\r\n", error_code::bad_syntax, true},
        {"bad id with body", true, "SEND nothex 3 t\r\nabc\r\n", error_code::bad_syntax, false},
        {"body without terminator", true, "SEND " + some_id + " 3 t\r\nabcXYZ", error_code::bad_syntax, true},
        {"unknown verb", true, "FROB 1 2 3\r\n", error_code::unknown_command, false},
        {"server verb from client", true, "+OK hi\r\n", error_code::unknown_command, false},
        {"NUL in a line", true, std::string("PI\0NG\r\n", 7), error_code::bad_syntax, false},
        {"line too long", true, std::string(5000, 'A'), error_code::line_too_long, true},
        {"bad JSON in HELLO", false, "HELLO {\"name\":\r\n", error_code::bad_json, false},
        {"too deep JSON in HELLO", false, "HELLO " + deep + "\r\n", error_code::bad_json, false},
        {"bad token", true, "SEND " + some_id + " 1 bad/token\r\nx\r\n", error_code::bad_syntax, false},
        {"LIST over max_list", true, "LIST limit=999999\r\n", error_code::bad_syntax, false},
        {"valid frame then garbage", true, "PING\r\n\x01\x02\x03\xff\xfe\r\n", std::nullopt, false},
        {"1 MiB of random junk", false, junk, std::nullopt, false},
        {"truncated header, never finished", true, "SEND 00000007", error_code::timeout, true},
        {"truncated body, never finished", true, "SEND " + some_id + " 100 t\r\nabc", error_code::timeout, true},
    };
}
}  // namespace

TEST_CASE("S3: malformed input gets -ERR or a close within 1 s - the server stays up") {
    auto cfg = test_config();
    cfg.limits.max_payload = 4096;
    cfg.frame_timeout_ms = 300;  // the two truncated cases end by the frame deadline
    cfg.max_queue_bytes = 1 << 20;
    test_server s(cfg);

    // A healthy control pair exchanges acked messages the whole time.
    client ca = s.connect_hello(R"({"name":"control-a"})");
    client cb = s.connect_hello(R"({"name":"control-b"})");
    std::atomic<bool> stop{false};
    std::atomic<int> control_errors{0};
    std::atomic<int> control_msgs{0};
    std::thread control([&] {
        int seq = 0;
        while (!stop.load()) {
            const std::string tok = "c" + std::to_string(seq);
            if (!ca.send_to(cb.id(), numbered("ctl", seq), tok)) {
                ++control_errors;
                return;
            }
            auto ack = ca.next_skip_ping(scaled(2000ms));
            auto msg = cb.next_skip_ping(scaled(2000ms));
            if (!ack.is_ack_ok(tok) || msg.what != kind::msg || msg.text != numbered("ctl", seq)) {
                ++control_errors;
            } else {
                ++control_msgs;
            }
            ++seq;
            std::this_thread::sleep_for(2ms);
        }
    });

    for (const auto& hc : hostile_cases()) {
        const std::string case_name = hc.name;
        CAPTURE(case_name);
        client c(s.port());
        if (hc.after_hello) {
            REQUIRE(c.hello());
        }
        const auto t0 = std::chrono::steady_clock::now();
        // Big inputs go in 1 KiB chunks; the server may close midway (that is an answer too).
        std::string_view rest(hc.bytes);
        while (!rest.empty()) {
            const auto n = std::min<std::size_t>(rest.size(), 1024);
            if (!c.send_raw(rest.substr(0, n))) {
                break;
            }
            rest.remove_prefix(n);
        }
        const auto bound = scaled(1000ms) + (hc.want == error_code::timeout ? 300ms : 0ms);
        frame first;
        bool closed = false;
        bool answered = false;
        while (!answered && !closed) {
            const auto left = bound - std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0);
            if (left.count() <= 0) {
                break;
            }
            auto f = c.next(left);
            if (f.what == kind::err) {
                first = f;
                answered = true;
            } else if (f.what == kind::closed) {
                closed = true;
            } else if (f.what == kind::timeout) {
                break;
            }  // PONG from a valid leading frame: keep reading
        }
        CHECK_MESSAGE((answered || closed), "no -ERR and no close within the bound");
        if (hc.want) {
            CHECK_MESSAGE(first.is_err(*hc.want), "got " << first.describe());
        }
        if (hc.must_close) {
            CHECK(c.wait_closed(scaled(1500ms)));
        } else if (answered && !proto::is_fatal(first.code) && hc.after_hello) {
            // The connection goes on: a PING still gets its PONG (skipping other -ERRs).
            std::vector<frame> before;
            CHECK(c.ping(scaled(1000ms), &before));
        }
    }
    stop = true;
    control.join();
    CHECK(control_errors.load() == 0);
    CHECK(control_msgs.load() > 0);
    // The server is up: a new client handshakes and the control pair still routes.
    client late = s.connect_hello();
    CHECK(late.ping());
    REQUIRE(ca.send_to(cb.id(), "after", "z"));
    CHECK(ca.next_skip_ping().is_ack_ok("z"));
    CHECK(cb.next_skip_ping().text == "after");
    CHECK(s.stats().protocol_errors.load() >= 10);
    std::printf("S3: %zu hostile cases, control pair routed %d messages with 0 errors\n",
                hostile_cases().size(), control_msgs.load());
}

TEST_CASE("S9 light: a consumer that never reads is disconnected - producers keep working") {
    auto cfg = test_config();
    cfg.limits.max_payload = 16 * 1024;
    cfg.max_queue_bytes = 256 * 1024;
    cfg.write_deadline_ms = 1000;
    cfg.heartbeat_ms = 0;
    test_server s(cfg);
    const std::size_t cap = cfg.max_queue_bytes;
    const std::size_t max_frame = cfg.limits.max_payload + proto::max_header_size + 2;

    client slow(s.port(), 4096);  // small receive window, and it never reads
    REQUIRE(slow.hello());
    const auto slow_id = slow.id();
    auto slow_sess = s.reg().find(slow_id);
    REQUIRE(slow_sess);
    client fast = s.connect_hello();

    std::atomic<bool> stop{false};
    std::atomic<std::size_t> max_queued{0};
    std::thread sampler([&] {
        while (!stop.load()) {
            const std::size_t q = slow_sess->queued_bytes();
            std::size_t m = max_queued.load();
            while (q > m && !max_queued.compare_exchange_weak(m, q)) {
            }
            std::this_thread::sleep_for(1ms);
        }
    });

    const auto t0 = std::chrono::steady_clock::now();
    constexpr int producers = 2;
    std::atomic<int> producer_failures{0};
    std::atomic<std::uint64_t> acked_ok{0};
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::int64_t> gone_after_ms{-1};
    std::vector<std::thread> ps;
    for (int p = 0; p < producers; ++p) {
        ps.emplace_back([&, p] {
            client prod(s.port());
            if (!prod.hello()) {
                ++producer_failures;
                return;
            }
            const std::string payload(1024, static_cast<char>('a' + p));
            for (int round = 0; round < 10000 && !stop.load(); ++round) {
                std::string out;
                for (int k = 0; k < 16; ++k) {
                    client::append_send(out, slow_id, payload, "p" + std::to_string(k));
                }
                if (!prod.send_raw(out)) {
                    ++producer_failures;
                    return;
                }
                bool target_gone = false;
                for (int k = 0; k < 16; ++k) {
                    auto f = prod.next_skip_ping(scaled(3000ms));
                    if (f.what != kind::ack) {
                        ++producer_failures;
                        return;
                    }
                    if (!f.ack_error) {
                        ++acked_ok;
                    } else {
                        ++refused;
                        target_gone = target_gone || f.ack_error == error_code::stale_session ||
                                      f.ack_error == error_code::unknown_session;
                    }
                }
                if (target_gone) {
                    std::int64_t none = -1;
                    gone_after_ms.compare_exchange_strong(
                        none, std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0).count());
                    // The producer keeps working: messages to a live peer still go through.
                    const std::string tok = "fast" + std::to_string(p);
                    if (!prod.send_to(fast.id(), "still here", tok) ||
                        !prod.next_skip_ping(scaled(2000ms)).is_ack_ok(tok)) {
                        ++producer_failures;
                    }
                    return;
                }
            }
        });
    }
    for (auto& t : ps) {
        t.join();
    }
    const bool disconnected = eventually([&] { return s.reg().find(slow_id) == nullptr; },
                                         scaled(ms(cfg.write_deadline_ms) + 1000ms));
    const auto elapsed = std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0);
    stop = true;
    sampler.join();

    std::printf("S9: slow consumer cut after %lld ms (acks ok %llu, refused %llu), max queued %zu "
                "bytes (cap %zu + frame %zu)\n",
                static_cast<long long>(gone_after_ms.load()), static_cast<unsigned long long>(acked_ok.load()),
                static_cast<unsigned long long>(refused.load()), max_queued.load(), cap, max_frame);
    CHECK(disconnected);
    CHECK(producer_failures.load() == 0);
    CHECK(gone_after_ms.load() >= 0);
    CHECK(elapsed <= scaled(ms(cfg.write_deadline_ms) + 1000ms) + 500ms);
    CHECK(max_queued.load() <= cap + max_frame);
    CHECK(s.closed(srv::close_reason::slow_consumer) == 1);
    // The fast client got both "still here" messages and nothing else went wrong for it.
    int still = 0;
    for (int i = 0; i < producers; ++i) {
        auto f = fast.next_skip_ping(scaled(2000ms));
        still += (f.what == kind::msg && f.text == "still here") ? 1 : 0;
    }
    CHECK(still == producers);
    CHECK(fast.ping());
    // The slow client's connection is closed (its -ERR slow_consumer sits behind a write that
    // cannot finish, so it may or may not get it).
    frame last;
    CHECK(slow.wait_closed(scaled(3000ms), &last));
    std::printf("S9: the slow client %s -ERR slow_consumer\n",
                last.is_err(error_code::slow_consumer) ? "got" : "did not get");
}

TEST_CASE("slow consumer policy drop: the queue stays bounded and senders hear queue_full") {
    auto cfg = test_config();
    cfg.limits.max_payload = 16 * 1024;
    cfg.max_queue_bytes = 64 * 1024;
    cfg.slow_consumer = srv::slow_consumer_policy::drop;
    cfg.write_deadline_ms = 60000;  // only the queue cap applies here
    test_server s(cfg);
    client slow(s.port(), 4096);
    REQUIRE(slow.hello());
    client prod = s.connect_hello();
    // The kernel's socket buffers absorb megabytes on loopback before the queue fills.
    const std::string payload(16 * 1024, 'd');
    int ok = 0;
    int full = 0;
    for (int round = 0; round < 400 && full == 0; ++round) {
        std::string out;
        for (int k = 0; k < 32; ++k) {
            client::append_send(out, slow.id(), payload, "d" + std::to_string(k));
        }
        REQUIRE(prod.send_raw(out));
        for (int k = 0; k < 32; ++k) {
            auto f = prod.next_skip_ping(scaled(2000ms));
            REQUIRE_MESSAGE(f.what == kind::ack, f.describe());
            if (!f.ack_error) {
                ++ok;
            } else {
                CHECK(f.ack_error == error_code::queue_full);
                ++full;
            }
        }
    }
    CHECK(full > 0);
    CHECK(s.stats().queue_drops.load() == static_cast<std::uint64_t>(full));
    auto sess = s.reg().find(slow.id());
    REQUIRE(sess);  // not disconnected under "drop"
    CHECK(sess->queued_bytes() <= cfg.max_queue_bytes);
    // It reads now: it gets exactly the accepted messages, in order, and stays connected.
    int got = 0;
    for (;;) {
        auto f = slow.next_skip_ping(scaled(1000ms));
        if (f.what != kind::msg) {
            break;
        }
        CHECK(f.text == payload);
        ++got;
    }
    CHECK(got == ok);
    CHECK(slow.ping());
}

TEST_CASE("S9 write deadline: a stuck write past write_deadline_ms disconnects the reader") {
    // The queue cap is far away: only the write deadline can catch this consumer.
    auto cfg = test_config();
    cfg.max_queue_bytes = 64 << 20;
    cfg.write_deadline_ms = 500;
    cfg.heartbeat_ms = 0;
    test_server s(cfg);
    client slow(s.port(), 4096);
    REQUIRE(slow.hello());
    auto sess = s.reg().find(slow.id());
    REQUIRE(sess);
    client prod = s.connect_hello();
    const std::string payload(64 * 1024, 'w');
    // Fill the kernel's buffers (they autotune up to megabytes on loopback) until the session's
    // own queue holds 2 MiB: its write is stuck.
    int sent = 0;
    while (sess->queued_bytes() < (2U << 20) && sent < 1000) {
        std::string out;
        for (int k = 0; k < 8; ++k) {
            client::append_send(out, slow.id(), payload, "w");
        }
        REQUIRE(prod.send_raw(out));
        for (int k = 0; k < 8; ++k) {
            auto f = prod.next_skip_ping(scaled(2000ms));
            REQUIRE_MESSAGE(f.is_ack_ok("w"), f.describe());
        }
        sent += 8;
    }
    REQUIRE(sess->queued_bytes() >= (2U << 20));
    const auto t0 = std::chrono::steady_clock::now();
    const bool cut = eventually([&] { return s.reg().find(slow.id()) == nullptr; },
                                scaled(ms(cfg.write_deadline_ms) + 1000ms));
    const auto took = std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0);
    std::printf("S9 write deadline: %d x 64 KiB sent, %zu bytes queued, cut after %lld ms\n", sent,
                sess->queued_bytes(), static_cast<long long>(took.count()));
    CHECK(cut);
    CHECK(s.closed(srv::close_reason::slow_consumer) == 1);
    CHECK(sess->queued_bytes() <= cfg.max_queue_bytes);
    // The producer is unaffected.
    REQUIRE(prod.send_to(prod.id(), "ok", "self"));
    int good = 0;
    for (int i = 0; i < 2; ++i) {
        auto f = prod.next_skip_ping(scaled(1000ms));
        good += (f.is_ack_ok("self") || (f.what == kind::msg && f.text == "ok")) ? 1 : 0;
    }
    CHECK(good == 2);
    CHECK(slow.wait_closed(scaled(3000ms)));
}

namespace {
/// Sends `n` tokened SENDs from `a` to itself in one write and counts the ACKs: {ok, rate_limited}.
/// Any ACK error other than rate_limited fails the test.
std::pair<int, int> send_burst_to_self(client& a, int n) {
    std::string out;
    for (int i = 0; i < n; ++i) {
        client::append_send(out, a.id(), "r", "r" + std::to_string(i));
    }
    REQUIRE(a.send_raw(out));
    int ok = 0;
    int limited = 0;
    for (int i = 0; i < n;) {
        auto f = a.next(scaled(2000ms));
        if (f.what == kind::msg) {
            continue;
        }
        REQUIRE_MESSAGE(f.what == kind::ack, f.describe());
        ++i;
        if (!f.ack_error) {
            ++ok;
        } else {
            CHECK(f.ack_error == error_code::rate_limited);
            ++limited;
        }
    }
    return {ok, limited};
}

}  // namespace

TEST_CASE("rate limit: SENDs over the per-session rate get rate_limited") {
    auto cfg = test_config();
    cfg.rate_limit = 20;
    cfg.rate_burst = 5;
    test_server s(cfg);
    client a = s.connect_hello();
    const auto [ok, limited] = send_burst_to_self(a, 30);
    CHECK(ok >= 5);
    CHECK(ok <= 8);  // the burst, plus what refilled meanwhile
    CHECK(limited == 30 - ok);
    CHECK(s.stats().rate_limited.load() == static_cast<std::uint64_t>(limited));
    std::this_thread::sleep_for(300ms);  // 20/s refills ~6 tokens
    REQUIRE(a.send_to(a.id(), "again", "again"));
    auto f = a.next(scaled(1000ms));
    if (f.what == kind::msg) {
        f = a.next(scaled(1000ms));
    }
    CHECK(f.is_ack_ok("again"));
}

TEST_CASE("rate limit: a new session starts with a full bucket (regression)") {
    // Regression: session.hpp initialised tokens_ = 0 and tokens_at_ = created_, so a client that
    // sent right after HELLO was refused although it had sent nothing yet. With rate_limit 20/s and rate_burst 5, the first 5 SENDs must pass.
    auto cfg = test_config();
    cfg.rate_limit = 20;
    cfg.rate_burst = 5;
    test_server s(cfg);
    client a = s.connect_hello();
    const auto [ok, limited] = send_burst_to_self(a, 5);
    CHECK(ok == 5);
    CHECK(limited == 0);
}
