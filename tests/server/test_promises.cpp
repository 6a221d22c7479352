// Issue 10's promises, each at its boundary: a maximal SEND fits an empty queue with the
// defaults; every reply body fits the max_json announced in +HELLO; stale_session vs
// unknown_session; max_sessions_per_ip; tokened SENDs during a drain are answered; the exact
// +STATS body of PROTOCOL.md section 4.
#include <doctest/doctest.h>

#include <map>
#include <thread>
#include <set>
#include <string>
#include <vector>

#include "support.hpp"

using namespace lariv::test;
using kind = frame::kind;
using proto::error_code;

TEST_CASE("limits fit: a SEND of exactly max_payload bytes is delivered with the default configuration") {
    auto cfg = test_config();  // default limits and max_queue_bytes
    REQUIRE(cfg.limits.max_payload == 1U << 20);
    REQUIRE(cfg.max_queue_bytes >= cfg.limits.max_msg_frame());
    test_server s(cfg);
    client rx = s.connect_hello();
    client tx = s.connect_hello();
    std::string payload(cfg.limits.max_payload, '\0');
    for (std::size_t i = 0; i < payload.size(); ++i) {
        payload[i] = static_cast<char>(i * 131 + 7);
    }
    REQUIRE(tx.send_to(rx.id(), payload, "max"));
    auto ack = tx.next_skip_ping(scaled(5000ms));
    CHECK_MESSAGE(ack.is_ack_ok("max"), ack.describe());
    auto m = rx.next_skip_ping(scaled(5000ms));
    REQUIRE_MESSAGE(m.what == kind::msg, m.describe());
    CHECK(m.from == tx.id());
    CHECK(m.text == payload);
    // One byte more is refused on the line, before any body byte.
    REQUIRE(tx.send_raw("SEND " + rx.id().to_string() + " " + std::to_string(payload.size() + 1) + " t\r\n"));
    CHECK(tx.next_skip_ping(scaled(2000ms)).is_err(error_code::frame_too_large));

    // The boundary of the queue itself: a cap of exactly one maximal frame still takes one.
    auto tight = test_config();
    tight.limits.max_payload = 4096;
    tight.max_queue_bytes = tight.limits.max_msg_frame();
    test_server t(tight);
    client r2 = t.connect_hello();
    client t2 = t.connect_hello();
    // Empty: the +HELLO write's completion has run (the client can read the bytes a moment
    // before the server's write handler clears them from the queue's count).
    REQUIRE(eventually([&] { return t.reg().find(r2.id())->queued_bytes() == 0; }, scaled(2000ms)));
    REQUIRE(t2.send_to(r2.id(), std::string(4096, 'z'), "edge"));
    CHECK(t2.next_skip_ping(scaled(2000ms)).is_ack_ok("edge"));
    CHECK(r2.next_skip_ping(scaled(2000ms)).text == std::string(4096, 'z'));
}

TEST_CASE("limits fit: a maximal LIST page with long names never passes the announced max_json") {
    auto cfg = test_config();
    cfg.admin_token = "adm1n";
    cfg.limits.max_json = 4096;  // the smallest allowed: few entries fit a page
    test_server s(cfg);
    // Names of 128 bytes that JSON escapes six-fold (\u0001): ~900-byte entries.
    std::string name_json;
    for (int i = 0; i < 128; ++i) {
        name_json += "\\u0001";
    }
    std::vector<client> cs;
    for (int i = 0; i < 30; ++i) {
        cs.push_back(s.connect_hello(R"({"name":")" + name_json + R"("})"));
    }
    client admin = s.connect_hello(R"({"auth":"adm1n","name":"admin"})");
    auto hello = nlohmann::json::parse(admin.hello_json());
    const std::size_t announced = hello["limits"]["max_json"].get<std::size_t>();
    REQUIRE(announced == 4096);
    std::set<std::string> seen;
    std::string after;
    int pages = 0;
    for (;;) {
        admin.send_raw("LIST limit=1000" + (after.empty() ? "" : " after=" + after) + "\r\n");
        auto f = admin.next_skip_ping(scaled(2000ms));
        REQUIRE_MESSAGE(f.what == kind::body, f.describe());
        CHECK(f.body == proto::body_kind::list);
        CHECK_MESSAGE(f.text.size() <= announced, f.text.size());
        auto j = nlohmann::json::parse(f.text);
        CHECK(!j["sessions"].empty());
        for (const auto& e : j["sessions"]) {
            CHECK(seen.insert(e["id"].get<std::string>()).second);
        }
        ++pages;
        REQUIRE(pages < 100);
        if (j["next"].is_null()) {
            break;
        }
        after = j["next"].get<std::string>();
    }
    CHECK(seen.size() == 31);  // every session once, over several short pages
    CHECK(pages >= 8);
    // STATS and INFO fit too.
    admin.send_raw("STATS\r\n");
    auto st = admin.next_skip_ping(scaled(2000ms));
    REQUIRE(st.what == kind::body);
    CHECK(st.text.size() <= announced);
    admin.send_raw("INFO " + cs[0].id().to_string() + "\r\n");
    auto in = admin.next_skip_ping(scaled(2000ms));
    REQUIRE(in.what == kind::body);
    CHECK(in.text.size() <= announced);
}

TEST_CASE("stale_session means issued here and ended - unknown_session means not issued here") {
    auto cfg = test_config();
    cfg.registry_buffer = 4;  // few slots: the next session reuses a freed one
    test_server s(cfg);
    client asker = s.connect_hello();
    auto answer = [&](proto::session_id id) {
        asker.send_raw("INFO " + id.to_string() + "\r\n");
        auto f = asker.next_skip_ping(scaled(2000ms));
        REQUIRE_MESSAGE(f.what == kind::err, f.describe());
        return f.code;
    };
    auto send_answer = [&](proto::session_id id) {
        REQUIRE(asker.send_to(id, "x", "t"));
        auto f = asker.next_skip_ping(scaled(2000ms));
        REQUIRE_MESSAGE(f.what == kind::ack, f.describe());
        REQUIRE(f.ack_error);
        return *f.ack_error;
    };

    // Ended, slot free: stale.
    proto::session_id gone;
    {
        client c = s.connect_hello();
        gone = c.id();
        c.send_raw("QUIT\r\n");
        CHECK(c.wait_closed(scaled(2000ms)));
    }
    REQUIRE(eventually([&] { return s.reg().find(gone) == nullptr; }, scaled(2000ms)));
    CHECK(answer(gone) == error_code::stale_session);
    CHECK(send_answer(gone) == error_code::stale_session);

    // Ended, slot reused by a newer session: still stale, and the new one is not reached.
    std::vector<client> fill;
    std::uint32_t old_slot = *s.reg().slot_of(gone);
    bool reused = false;
    for (int i = 0; i < 8 && !reused; ++i) {
        fill.push_back(s.connect_hello());
        reused = s.reg().slot_of(fill.back().id()) == old_slot;
    }
    REQUIRE(reused);
    CHECK(answer(gone) == error_code::stale_session);
    CHECK(send_answer(gone) == error_code::stale_session);
    CHECK(fill.back().next(100ms).what == kind::timeout);  // nothing reached the new owner

    // Another node, another epoch of this node: unknown.
    const auto me = asker.id();
    CHECK(answer(proto::session_id{me.hi ^ (std::uint64_t{1} << 32), me.lo}) == error_code::unknown_session);
    CHECK(answer(proto::session_id{me.hi ^ 1, me.lo}) == error_code::unknown_session);
    // Forged low half (this node and epoch): the keyed scramble sends it to a slot and
    // generation never issued. 200 guesses, none may read as stale or reach anyone.
    std::uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 200; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const proto::session_id forged{me.hi, x};
        if (s.reg().find(forged)) {
            continue;  // 2^-64: it named a live session
        }
        CHECK(answer(forged) == error_code::unknown_session);
    }

    // Visible but before its HELLO: not given out yet, so unknown.
    client early(s.port());
    proto::session_id pending;
    REQUIRE(eventually([&] {
        s.reg().for_each([&](srv::session_base& b) {
            if (b.state() == srv::session_state::handshaking) {
                pending = b.id();
            }
            return true;
        });
        return pending != proto::session_id{};
    }, scaled(2000ms)));
    CHECK(answer(pending) == error_code::unknown_session);
    REQUIRE(early.hello());
    CHECK(early.id() == pending);
    REQUIRE(asker.send_to(pending, "now", "ok1"));
    CHECK(asker.next_skip_ping(scaled(2000ms)).is_ack_ok("ok1"));
}

TEST_CASE("max_sessions_per_ip: over the limit a peer address is refused like server_full - others are not") {
    auto cfg = test_config();
    cfg.max_sessions_per_ip = 2;
    test_server s(cfg);
    client a = s.connect_hello();
    client b = s.connect_hello();
    client c(s.port());
    frame last;
    CHECK(c.wait_closed(scaled(2000ms), &last));
    CHECK_MESSAGE(last.is_err(error_code::server_full), last.describe());
    CHECK(s.stats().refused_per_ip.load() == 1);
    CHECK(s.closed(srv::close_reason::server_full) == 1);
    // Another address is counted on its own (127.0.0.2 is loopback too).
    client other;
    REQUIRE(other.try_connect_from(s.port(), "127.0.0.2"));
    REQUIRE(other.hello());
    // A place freed is a place again.
    a.send_raw("QUIT\r\n");
    CHECK(a.wait_closed(scaled(2000ms)));
    CHECK(eventually([&] {
        client d(s.port());
        return d.hello().has_value();
    }, scaled(2000ms)));
    CHECK(b.ping());
    // Off (0, the default): no per-address limit.
    test_server u(test_config());
    std::vector<client> many;
    for (int i = 0; i < 10; ++i) {
        many.push_back(u.connect_hello());
    }
    CHECK(u.stats().refused_per_ip.load() == 0);
}

TEST_CASE("drain: tokened SENDs read after the drain began are answered with ACK draining") {
    // The session does not read while megabytes queue up for it, so its drain flush takes
    // long; meanwhile it writes tokened SENDs. The server keeps reading a draining session and
    // answers each (before, reads stopped at the drain and these SENDs were never answered).
    auto cfg = test_config();
    cfg.drain_timeout_ms = 5000;
    cfg.write_deadline_ms = 60000;
    cfg.heartbeat_ms = 0;
    cfg.max_queue_bytes = 16 << 20;
    test_server s(cfg);
    client rx(s.port(), 4096);
    REQUIRE(rx.hello());
    client tx = s.connect_hello();
    (void)queue_for(tx, rx.id(), 8);
    s.get().drain();
    REQUIRE(eventually([&] {
        auto p = s.reg().find(rx.id());
        return p && p->state() == srv::session_state::draining;
    }, scaled(2000ms)));
    std::string sends;
    for (int k = 0; k < 10; ++k) {
        client::append_send(sends, tx.id(), "late", "late" + std::to_string(k));
    }
    REQUIRE(rx.send_raw(sends));
    std::this_thread::sleep_for(100ms);  // let the server read them
    std::set<std::string> answered;
    bool draining_told = false;
    int msgs = 0;
    for (;;) {
        auto f = rx.next(scaled(3000ms));
        if (f.what == kind::msg) {
            ++msgs;
        } else if (f.is_err(error_code::draining)) {
            draining_told = true;
        } else if (f.what == kind::ack) {
            CHECK(f.ack_error == error_code::draining);
            answered.insert(f.token);
        } else if (f.what == kind::closed || f.what == kind::timeout) {
            break;
        }
    }
    CHECK(draining_told);
    CHECK(msgs == 128);
    CHECK(answered.size() == 10);
    CHECK(tx.next(200ms).what != kind::msg);  // none of them was routed
}

TEST_CASE("STATS: the +STATS body is exactly the fields of PROTOCOL.md section 4, with their types") {
    auto cfg = test_config();
    test_server s(cfg);
    client c = s.connect_hello();
    c.send_raw("STATS\r\n");
    auto f = c.next_skip_ping(scaled(2000ms));
    REQUIRE(f.what == kind::body);
    CHECK(f.body == proto::body_kind::stats);
    const auto j = nlohmann::json::parse(f.text);
    // The documented list (PROTOCOL.md section 4, "+STATS"): every counter an unsigned integer.
    const std::vector<std::string> counters = {
        "sessions",     "accepted",      "attached",        "refused_full",   "refused_per_ip",
        "handshakes",   "auth_failures", "msgs_in",         "msgs_out",       "bytes_routed",
        "send_errors",  "queue_drops",   "protocol_errors", "rate_limited",   "accept_errors",
        "host_errors",  "tls_handshakes", "tls_handshake_failures", "lariv_buffers", "lariv_capacity"};
    std::set<std::string> expected(counters.begin(), counters.end());
    expected.insert("draining");
    expected.insert("closed");
    std::set<std::string> got;
    for (auto it = j.begin(); it != j.end(); ++it) {
        got.insert(it.key());
    }
    CHECK(got == expected);
    for (const auto& k : counters) {
        CHECK_MESSAGE(j[k].is_number_unsigned(), k);
    }
    CHECK(j["draining"].is_boolean());
    REQUIRE(j["closed"].is_object());
    std::set<std::string> reasons;
    for (auto it = j["closed"].begin(); it != j["closed"].end(); ++it) {
        CHECK(it->is_number_unsigned());
        reasons.insert(it.key());
    }
    std::set<std::string> all_reasons;
    for (std::size_t r = 0; r < srv::close_reason_count; ++r) {
        all_reasons.insert(std::string(srv::to_string(static_cast<srv::close_reason>(r))));
    }
    CHECK(reasons == all_reasons);
    CHECK(j["sessions"] == 1);
    CHECK(j["handshakes"] == 1);
}

TEST_CASE("idle sessions cost no timer: a session wakes only for a deadline that is running") {
    auto cfg = test_config();
    cfg.heartbeat_ms = 0;
    cfg.idle_timeout_ms = 0;
    // The handshake deadline stops at HELLO: a session that ran it on (it was the old +HELLO
    // write deadline's job to wake each session once and re-arm) would wake in the window below.
    // A write the socket takes at once, as the +HELLO is here, runs no write deadline at all.
    cfg.handshake_timeout_ms = 100;
    test_server s(cfg);
    std::vector<client> idle;
    for (int i = 0; i < 50; ++i) {
        idle.push_back(s.connect_hello());
    }
    const auto wakes0 = s.stats().timer_wakes.load();
    CHECK(wakes0 <= 50);
    std::this_thread::sleep_for(scaled(600ms));
    // The old 250 ms tick woke each of the 50 sessions twice or more here; now none wakes.
    CHECK(s.stats().timer_wakes.load() == wakes0);

    // A new idle timeout on SIGHUP re-arms every session, though none had a deadline running.
    cfg.idle_timeout_ms = 200;
    s.get().reload(cfg);
    for (auto& c : idle) {
        frame last;
        CHECK(c.wait_closed(scaled(3000ms), &last));
    }
    CHECK(s.closed(srv::close_reason::idle_timeout) == 50);

    // With heartbeats on, an idle session wakes about once per heartbeat, not four times a second.
    auto hb = test_config();
    hb.heartbeat_ms = 300;
    test_server h(hb);
    client c = h.connect_hello();
    const auto w0 = h.stats().timer_wakes.load();
    for (int i = 0; i < 4; ++i) {
        auto f = c.next(scaled(2000ms));
        REQUIRE(f.what == kind::ping);  // answered: the session stays alive
        c.send_raw("PONG\r\n");
    }
    const auto w = h.stats().timer_wakes.load() - w0;
    CHECK(w >= 4);
    CHECK(w <= 12);  // a wake per heartbeat, a few more for the writes' deadlines
}

TEST_CASE("slow_consumer drop: replies to the session's own SENDs are never dropped - it is disconnected instead") {
    // Found by the client library's review: with `drop`, a session's own ACKs went through the
    // capped queue and were dropped silently at the cap, so tokened SENDs went unanswered while
    // the session carried on. Now the answers the client gets are a gap-free prefix, then a close.
    auto cfg = test_config();
    cfg.slow_consumer = srv::slow_consumer_policy::drop;
    cfg.limits.max_payload = 1024;
    cfg.max_queue_bytes = 8192;
    cfg.write_deadline_ms = 60000;
    cfg.heartbeat_ms = 0;
    test_server s(cfg);
    client c(s.port(), 4096);  // a small window: the server's writes back up quickly
    REQUIRE(c.hello());
    const proto::session_id nobody{c.id().hi, 0x1234};
    std::string batch;
    for (int i = 0; i < 2000; ++i) {
        client::append_send(batch, nobody, "x", "t" + std::to_string(i));
    }
    int sent_batches = 0;
    for (; sent_batches < 200; ++sent_batches) {  // up to 400,000 SENDs, never reading
        if (c.send_some(batch) <= 0 && s.closed(srv::close_reason::slow_consumer) > 0) {
            break;
        }
        if (s.closed(srv::close_reason::slow_consumer) > 0) {
            break;
        }
    }
    REQUIRE(eventually([&] { return s.closed(srv::close_reason::slow_consumer) == 1; }, scaled(5000ms)));
    int expect = 0;
    bool gap = false;
    for (;;) {
        auto f = c.next(scaled(2000ms));
        if (f.what == kind::ack) {
            gap = gap || f.token != "t" + std::to_string(expect % 2000);
            ++expect;
        } else if (f.what != kind::err) {
            break;  // closed (or a timeout)
        }
    }
    CHECK_FALSE(gap);
    CHECK(expect > 0);
}
