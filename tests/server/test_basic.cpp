// Handshake, routing between two and many sessions, INFO/LIST/STATS, QUIT.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <vector>

#include "support.hpp"

using namespace lariv::test;
using kind = frame::kind;
using proto::error_code;

TEST_CASE("handshake: +HELLO carries session id, node id, limits and heartbeat") {
    auto cfg = test_config();
    cfg.node_id = 42;
    cfg.boot_epoch = 1234;
    cfg.heartbeat_ms = 7000;
    cfg.limits.max_payload = 65536;
    cfg.max_queue_bytes = 1 << 20;
    test_server s(cfg);

    client c(s.port());
    auto h = c.hello(R"({"version":1,"name":"alice"})");
    REQUIRE_MESSAGE(h, c.last_failure());
    CHECK(h->version == 1);
    CHECK(h->node == 42);
    CHECK(h->session.node() == 42);
    CHECK(h->session.epoch() == 1234);
    CHECK(h->session.generation() != 0);
    CHECK(h->heartbeat_ms == 7000);
    CHECK(h->limits.max_payload == 65536);
    CHECK(h->limits.max_line == cfg.limits.max_line);
    CHECK(h->server.rfind("larivd/", 0) == 0);
    // The raw JSON has the documented field names.
    auto j = nlohmann::json::parse(c.hello_json());
    for (const char* k : {"session", "node", "limits", "heartbeat_ms", "version", "server"}) {
        CHECK_MESSAGE(j.contains(k), k);
    }
    // The server knows this session under its id and name.
    auto sess = s.reg().find_session(h->session);
    REQUIRE(sess);
    CHECK(sess->name() == "alice");
    CHECK(s.reg().size() == 1);
    CHECK(s.stats().handshakes.load() == 1);

    // A second HELLO on the same connection is refused, not a new session.
    auto f = c.hello_raw();
    CHECK(f.is_err(error_code::bad_syntax));

    // Two clients get distinct ids.
    client d(s.port());
    auto h2 = d.hello();
    REQUIRE(h2);
    CHECK(h2->session != h->session);
}

TEST_CASE("handshake: commands before HELLO, PING before HELLO, bad versions, QUIT") {
    test_server s(test_config());
    client c(s.port());
    c.send_raw("STATS\r\n");
    CHECK(c.next().is_err(error_code::handshake_required));
    c.send_raw("SEND 0000000700000001000000010000000a 3 t1\r\nabc\r\n");
    CHECK(c.next().is_err(error_code::handshake_required));
    c.send_raw("PING\r\n");
    CHECK(c.next().what == kind::pong);
    CHECK(c.hello_raw(R"({"version":2})").is_err(error_code::unsupported_version));
    CHECK(c.hello_raw(R"({"version":"one"})").is_err(error_code::bad_json));
    CHECK(c.hello_raw(R"({"name":)").is_err(error_code::bad_json));
    // Still usable after the refusals.
    REQUIRE(c.hello(R"({"name":"late"})"));
    c.send_raw("quit\r\n");  // verbs are case-insensitive
    auto f = c.next();
    CHECK(f.what == kind::ok);
    CHECK(f.text == "bye");
    CHECK(c.wait_closed(scaled(2000ms)));
    CHECK(eventually([&] { return s.reg().size() == 0; }, scaled(2000ms)));
    CHECK(s.closed(srv::close_reason::client_quit) == 1);
}

TEST_CASE("routing between two sessions: ACK, MSG with sender id, order, binary payloads") {
    test_server s(test_config());
    client a = s.connect_hello(R"({"name":"a"})");
    client b = s.connect_hello(R"({"name":"b"})");

    // Tokened SEND: ACK ok to the sender, MSG with the sender's id to the target.
    REQUIRE(a.send_to(b.id(), "hello, bob!", "m-1"));
    auto ack = a.next();
    CHECK_MESSAGE(ack.is_ack_ok("m-1"), ack.describe());
    auto m = b.next();
    REQUIRE_MESSAGE(m.what == kind::msg, m.describe());
    CHECK(m.from == a.id());
    CHECK(m.text == "hello, bob!");

    // Binary-safe: NUL, CR LF, high bytes; and the empty payload.
    std::string bin("\0\r\n\xff\x01 SEND x\r\n", 14);
    REQUIRE(b.send_to(a.id(), bin, "b1"));
    CHECK(b.next().is_ack_ok("b1"));
    m = a.next();
    REQUIRE(m.what == kind::msg);
    CHECK(m.text == bin);
    CHECK(m.from == b.id());
    REQUIRE(b.send_to(a.id(), "", "b2"));
    CHECK(b.next().is_ack_ok("b2"));
    m = a.next();
    REQUIRE(m.what == kind::msg);
    CHECK(m.text.empty());

    // Untokened SEND: silent on success; verbose clients get +OK.
    REQUIRE(a.send_to(b.id(), "quiet"));
    m = b.next();
    REQUIRE(m.what == kind::msg);
    CHECK(m.text == "quiet");
    CHECK(a.ping());  // nothing was queued for a before the PONG

    client v = s.connect_hello(R"({"verbose":true})");
    REQUIRE(v.send_to(b.id(), "v"));
    CHECK(v.next().what == kind::ok);
    CHECK(b.next().text == "v");

    // Order per sender and target: 500 pipelined messages in one write.
    std::string batch;
    for (int i = 0; i < 500; ++i) {
        client::append_send(batch, b.id(), numbered("a", i), "s" + std::to_string(i));
    }
    REQUIRE(a.send_raw(batch));
    for (int i = 0; i < 500; ++i) {
        auto f = a.next();
        REQUIRE_MESSAGE(f.is_ack_ok("s" + std::to_string(i)), f.describe());
    }
    for (int i = 0; i < 500; ++i) {
        auto f = b.next();
        REQUIRE(f.what == kind::msg);
        REQUIRE(f.text == numbered("a", i));
    }

    // Unknown target: ACK with an error for a tokened SEND, -ERR for an untokened one.
    const auto nobody = proto::session_id::make(99, 1, 1, 1);
    REQUIRE(a.send_to(nobody, "x", "u1"));
    auto f = a.next();
    REQUIRE(f.what == kind::ack);
    CHECK(f.token == "u1");
    CHECK(f.ack_error == error_code::unknown_session);
    REQUIRE(a.send_to(nobody, "x"));
    CHECK(a.next().is_err(error_code::unknown_session));

    // Sending to oneself works.
    REQUIRE(a.send_to(a.id(), "me", "self"));
    auto x = a.next();
    auto y = a.next();
    CHECK(((x.is_ack_ok("self") && y.what == kind::msg) || (y.is_ack_ok("self") && x.what == kind::msg)));

    auto st = a.stats();
    REQUIRE(st);
    CHECK((*st)["sessions"] == 3);
    CHECK((*st)["msgs_out"].get<std::uint64_t>() >= 504);
    CHECK((*st)["send_errors"].get<std::uint64_t>() >= 2);
}

namespace {
void all_to_all(const srv::config& cfg);
}

TEST_CASE("routing among many sessions: all-to-all, every message exactly once") {
    all_to_all(test_config());
}

// io_model = per_thread: the sessions are spread over 4 io_contexts, so most deliveries cross
// threads; the same exactly-once checks, then a stop with the sessions still open.
TEST_CASE("routing among many sessions with an io_context per thread: all-to-all, exactly once") {
    auto cfg = test_config();
    cfg.threads = 4;
    cfg.io_model = "per_thread";
    all_to_all(cfg);
}

TEST_CASE("an io_context per thread: the server stops cleanly with traffic in flight on every thread") {
    auto cfg = test_config();
    cfg.threads = 4;
    cfg.io_model = "per_thread";
    test_server s(cfg);
    CHECK(s.get().describe().at("io_model") == "per_thread");
    std::vector<client> cs;
    for (int i = 0; i < 16; ++i) {
        cs.push_back(s.connect_hello());
    }
    const std::string payload(1024, 'p');
    for (int round = 0; round < 20; ++round) {
        for (int i = 0; i < 16; ++i) {
            std::string out;
            client::append_send(out, cs[static_cast<std::size_t>((i + 1) % 16)].id(), payload);
            REQUIRE(cs[static_cast<std::size_t>(i)].send_raw(out));
        }
    }
    s.shutdown();  // sessions open, MSGs queued on every thread
    for (auto& c : cs) {
        // Each client sees its connection end (EOF or the close notice), never a hang.
        for (;;) {
            auto f = c.next(scaled(3000ms));
            if (f.what != kind::msg) {
                CHECK(f.what != kind::timeout);
                break;
            }
        }
    }
}

namespace {
void all_to_all(const srv::config& cfg) {
    test_server s(cfg);
    constexpr int n = 24;
    std::vector<client> cs;
    for (int i = 0; i < n; ++i) {
        cs.push_back(s.connect_hello(R"({"name":"n)" + std::to_string(i) + R"("})"));
    }
    // Every client sends one tokened message to every client (itself included).
    for (int i = 0; i < n; ++i) {
        std::string out;
        for (int j = 0; j < n; ++j) {
            client::append_send(out, cs[j].id(), numbered("from" + std::to_string(i), j),
                                "t" + std::to_string(j));
        }
        REQUIRE(cs[i].send_raw(out));
    }
    std::map<std::pair<int, int>, int> seen;  // (receiver, sender) -> count
    std::map<proto::session_id, int> index;
    for (int i = 0; i < n; ++i) {
        index[cs[i].id()] = i;
    }
    for (int i = 0; i < n; ++i) {
        int acks = 0;
        int msgs = 0;
        while (acks < n || msgs < n) {
            auto f = cs[i].next(scaled(3000ms));
            REQUIRE_MESSAGE((f.what == kind::ack || f.what == kind::msg), f.describe());
            if (f.what == kind::ack) {
                CHECK(!f.ack_error);
                ++acks;
            } else {
                ++msgs;
                REQUIRE(index.count(f.from) == 1);
                const int from = index[f.from];
                CHECK(f.text == numbered("from" + std::to_string(from), i));
                ++seen[{i, from}];
            }
        }
    }
    CHECK(seen.size() == static_cast<std::size_t>(n * n));
    for (auto& [k, v] : seen) {
        CHECK(v == 1);
    }
    CHECK(s.stats().msgs_out.load() == static_cast<std::uint64_t>(n * n));
}
}  // namespace

TEST_CASE("INFO, LIST paging and STATS") {
    auto cfg = test_config();
    cfg.admin_token = "adm1n";  // LIST is an admin command
    test_server s(cfg);
    std::vector<client> cs;
    for (int i = 0; i < 7; ++i) {
        cs.push_back(s.connect_hello(R"({"name":"c)" + std::to_string(i) + R"(")" +
                                     (i == 0 ? R"(,"auth":"adm1n"})" : "}")));
    }
    auto info = cs[0].info(cs[3].id());
    REQUIRE_MESSAGE(info, cs[0].last_failure());
    CHECK((*info)["name"] == "c3");
    CHECK((*info)["id"] == cs[3].id().to_string());
    CHECK(info->contains("age_ms"));
    CHECK(info->contains("queued_bytes"));

    // Page through with limit=3: every session exactly once, in id (slot) order.
    std::set<std::string> ids;
    std::string after;
    int pages = 0;
    for (;;) {
        auto page = cs[0].body_command("LIST limit=3" + (after.empty() ? "" : " after=" + after));
        REQUIRE_MESSAGE(page, cs[0].last_failure());
        ++pages;
        for (auto& e : (*page)["sessions"]) {
            CHECK(ids.insert(e["id"].get<std::string>()).second);
        }
        CHECK((*page)["sessions"].size() <= 3);
        if ((*page)["next"].is_null()) {
            break;
        }
        after = (*page)["next"].get<std::string>();
        REQUIRE(pages < 10);
    }
    CHECK(ids.size() == 7);
    CHECK(pages == 3);
    cs[0].send_raw("LIST limit=100000\r\n");
    CHECK(cs[0].next().is_err(error_code::bad_syntax));

    // INFO on a departed session: stale (same node and boot).
    const auto gone = cs[6].id();
    cs[6].close();
    REQUIRE(eventually([&] { return s.reg().find(gone) == nullptr; }, scaled(2000ms)));
    cs[0].send_raw("INFO " + gone.to_string() + "\r\n");
    auto f = cs[0].next();
    CHECK_MESSAGE(f.is_err(error_code::stale_session), f.describe());
}
