// Admin and operations: KICK with and without an admin token, client auth, graceful drain with
// messages in flight (S12 in-process), /healthz, /metrics and /connz.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "lariv/server/monitor.hpp"
#include "support.hpp"

using namespace lariv::test;
using kind = frame::kind;
using proto::error_code;

TEST_CASE("KICK with an admin token: only admins kick - the kicked session is told and closed") {
    auto cfg = test_config();
    cfg.admin_token = "adm1n";
    test_server s(cfg);
    client admin = s.connect_hello(R"({"auth":"adm1n","name":"admin"})");
    client user = s.connect_hello(R"({"name":"user"})");
    client victim = s.connect_hello(R"({"name":"victim"})");

    user.send_raw("KICK " + victim.id().to_string() + "\r\n");
    CHECK(user.next().is_err(error_code::not_authorized));
    user.send_raw("LIST\r\n");
    CHECK(user.next().is_err(error_code::not_authorized));
    CHECK(victim.ping());

    admin.send_raw("KICK " + victim.id().to_string() + "\r\n");
    auto f = admin.next();
    CHECK_MESSAGE(f.what == kind::ok, f.describe());
    frame last;
    CHECK(victim.wait_closed(scaled(2000ms), &last));
    CHECK(last.is_err(error_code::not_authorized));
    CHECK(last.text.find("kicked") != std::string::npos);
    CHECK(eventually([&] { return s.reg().find(victim.id()) == nullptr; }, scaled(1000ms)));
    CHECK(s.closed(srv::close_reason::kicked) == 1);

    // Kicking it again: it is gone, and this node and boot issued it: stale.
    admin.send_raw("KICK " + victim.id().to_string() + "\r\n");
    f = admin.next();
    CHECK_MESSAGE(f.is_err(error_code::stale_session), f.describe());
    // A wrong admin token is refused at HELLO, counted, even though no auth_token is required
    // (a mistyped admin token must not connect silently without rights).
    const auto failures = s.reg().stats().auth_failures.load();
    client pretender(s.port());
    CHECK(pretender.hello_raw(R"({"auth":"guess"})").is_err(error_code::not_authorized));
    CHECK(s.reg().stats().auth_failures.load() == failures + 1);
    CHECK(user.ping());
    // The host can kick through the C++ API too.
    CHECK(s.reg().kick(user.id()));
    CHECK(user.wait_closed(scaled(2000ms)));
    CHECK_FALSE(s.reg().kick(user.id()));
}

TEST_CASE("admin commands are disabled without an admin token: KICK and LIST refused for everyone") {
    test_server s(test_config());  // admin_token "" (the default)
    client a = s.connect_hello();
    client b = s.connect_hello();
    a.send_raw("KICK " + b.id().to_string() + "\r\n");
    auto f = a.next();
    CHECK_MESSAGE(f.is_err(error_code::not_authorized), f.describe());
    CHECK(f.text.find("admin commands are disabled: set admin_token") != std::string::npos);
    a.send_raw("LIST\r\n");
    f = a.next();
    CHECK(f.is_err(error_code::not_authorized));
    CHECK(f.text.find("admin commands are disabled") != std::string::npos);
    // No token opens them: not an empty one, not any other.
    client c(s.port());
    CHECK(c.hello_raw(R"({"auth":""})").what == kind::body);
    c.send_raw("LIST\r\n");
    CHECK(c.next().is_err(error_code::not_authorized));
    client d(s.port());
    CHECK(d.hello_raw(R"({"auth":"anything"})").is_err(error_code::not_authorized));
    CHECK(b.ping());  // nobody was kicked
    CHECK(a.ping());
    // The operator still sees sessions through the monitoring side (the library call here).
    CHECK(s.reg().list(std::nullopt, 10).sessions.size() >= 2);
}

TEST_CASE("auth token: HELLO without or with a wrong token is refused - the right one works") {
    auto cfg = test_config();
    cfg.auth_token = "s3cret";
    cfg.admin_token = "adm1n";
    test_server s(cfg);
    client c(s.port());
    CHECK(c.hello_raw().is_err(error_code::not_authorized));
    CHECK(c.hello_raw(R"({"auth":"wrong"})").is_err(error_code::not_authorized));
    // Prefixes, extensions and case variants of either token are wrong too.
    for (const char* guess : {"s3cre", "s3cret!", "S3CRET", "s3cret ", "adm1", "adm1nn", ""}) {
        CAPTURE(guess);
        CHECK(c.hello_raw(std::string(R"({"auth":")") + guess + R"("})").is_err(error_code::not_authorized));
    }
    c.send_raw("STATS\r\n");
    CHECK(c.next().is_err(error_code::handshake_required));
    CHECK(s.stats().handshakes.load() == 0);
    CHECK(s.stats().auth_failures.load() == 9);
    CHECK(srv::monitor::handle(s.reg(), "/metrics").body.find("lariv_auth_failures_total 9") !=
          std::string::npos);
    REQUIRE(c.hello(R"({"auth":"s3cret"})"));
    // Not an admin with the client token.
    c.send_raw("LIST\r\n");
    CHECK(c.next().is_err(error_code::not_authorized));
    // The admin token also authenticates, with admin rights.
    client adm = s.connect_hello(R"({"auth":"adm1n"})");
    auto page = adm.body_command("LIST");
    REQUIRE_MESSAGE(page, adm.last_failure());
    CHECK((*page)["sessions"].size() == 2);
}

TEST_CASE("auth: a refused HELLO is logged with the peer's address") {
    auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(32);
    spdlog::default_logger()->sinks().push_back(sink);  // before any server thread logs
    {
        auto cfg = test_config();
        cfg.auth_token = "s3cret";
        test_server s(cfg);
        client c(s.port());
        CHECK(c.hello_raw(R"({"auth":"nope"})").is_err(error_code::not_authorized));
        s.shutdown();
    }
    spdlog::default_logger()->sinks().pop_back();
    bool found = false;
    for (const auto& line : sink->last_formatted()) {
        // A structured event: its text payload is "HELLO auth failed remote=127.0.0.1:<port> ...".
        found = found || (line.find("HELLO auth failed remote=127.0.0.1:") != std::string::npos);
    }
    CHECK(found);
}

TEST_CASE("S12 in-process: drain with messages in flight loses no acknowledged message") {
    auto cfg = test_config();
    cfg.drain_timeout_ms = 3000;
    cfg.heartbeat_ms = 0;
    test_server s(cfg);
    constexpr int pairs = 4;
    std::vector<client> senders;
    std::vector<client> receivers;
    for (int i = 0; i < pairs; ++i) {
        senders.push_back(s.connect_hello());
        receivers.push_back(s.connect_hello());
    }
    // Receivers read in their own threads until the server closes them.
    std::vector<std::vector<std::string>> got(pairs);
    std::vector<int> told_draining(pairs, 0);  // not vector<bool>: threads write neighbours
    std::vector<std::thread> rt;
    for (int i = 0; i < pairs; ++i) {
        rt.emplace_back([&, i] {
            for (;;) {
                auto f = receivers[i].next_skip_ping(scaled(5000ms));
                if (f.what == kind::msg) {
                    got[i].push_back(f.text);
                } else if (f.is_err(error_code::draining)) {
                    told_draining[i] = 1;
                } else if (f.what == kind::closed || f.what == kind::timeout) {
                    return;
                }
            }
        });
    }
    // Senders pipeline sequence-numbered, tokened SENDs until the server stops them.
    std::vector<std::vector<int>> acked(pairs);
    std::vector<int> refused(pairs, 0);
    std::vector<std::thread> st;
    std::atomic<int> started{0};
    for (int i = 0; i < pairs; ++i) {
        st.emplace_back([&, i] {
            int seq = 0;
            ++started;
            for (;;) {
                std::string out;
                for (int k = 0; k < 8; ++k, ++seq) {
                    client::append_send(out, receivers[i].id(), numbered("s" + std::to_string(i), seq, 64),
                                        std::to_string(seq));
                }
                if (!senders[i].send_raw(out)) {
                    return;
                }
                for (int k = 0; k < 8; ++k) {
                    auto f = senders[i].next_skip_ping(scaled(5000ms));
                    if (f.what == kind::ack) {
                        if (!f.ack_error) {
                            acked[i].push_back(std::stoi(f.token));
                        } else {
                            ++refused[i];
                        }
                    } else if (f.what == kind::closed || f.what == kind::timeout) {
                        return;
                    }  // -ERR draining notice: keep reading ACKs
                }
            }
        });
    }
    while (started.load() < pairs) {
        std::this_thread::yield();
    }
    std::this_thread::sleep_for(200ms);
    const auto t0 = std::chrono::steady_clock::now();
    s.get().drain();
    // /healthz answers 503 from the moment draining starts.
    auto h = srv::monitor::handle(s.reg(), "/healthz");
    CHECK(h.status == 503);
    // New connections are refused (listener closed) or told "draining".
    {
        client late;
        if (late.try_connect(s.port())) {
            auto f = late.next(scaled(2000ms));
            CHECK((f.what == kind::closed || f.is_err(error_code::draining)));
        }
    }
    s.get().wait();
    const auto drain_time = std::chrono::steady_clock::now() - t0;
    for (auto& t : st) {
        t.join();
    }
    for (auto& t : rt) {
        t.join();
    }
    CHECK(drain_time <= scaled(ms(cfg.drain_timeout_ms) + 1000ms));

    std::size_t total_acked = 0;
    int lost = 0;
    int dup = 0;
    for (int i = 0; i < pairs; ++i) {
        std::map<int, int> delivered;
        int last_seq = -1;
        for (auto& p : got[i]) {
            const int seq = std::stoi(p.substr(p.find(':') + 1));
            CHECK(seq > last_seq);  // in order
            last_seq = seq;
            ++delivered[seq];
        }
        for (int seq : acked[i]) {
            auto it = delivered.find(seq);
            if (it == delivered.end()) {
                ++lost;
            } else if (it->second != 1) {
                ++dup;
            }
        }
        total_acked += acked[i].size();
        CHECK(told_draining[i] == 1);
    }
    std::printf("S12: drain took %lld ms, %zu acked messages, lost %d, duplicated %d\n",
                static_cast<long long>(std::chrono::duration_cast<ms>(drain_time).count()), total_acked,
                lost, dup);
    CHECK(total_acked > 0);
    CHECK(lost == 0);
    CHECK(dup == 0);
}

TEST_CASE("metrics: names present and counters move - /healthz and /connz") {
    auto cfg = test_config();
    cfg.monitor_port = free_port();
    test_server s(cfg);
    REQUIRE(s.get().monitor_port() != 0);

    auto value = [&](const std::string& text, const std::string& name) -> long long {
        const auto pos = text.find("\n" + name + " ");
        if (pos == std::string::npos) {
            return -1;
        }
        return std::stoll(text.substr(pos + name.size() + 2));
    };
    const std::string before = srv::monitor::handle(s.reg(), "/metrics").body;
    for (const char* n :
         {"lariv_sessions_open", "lariv_sessions_accepted_total", "lariv_sessions_refused_total",
          "lariv_handshakes_total", "lariv_messages_in_total", "lariv_messages_routed_total",
          "lariv_bytes_routed_total", "lariv_send_errors_total", "lariv_queue_drops_total",
          "lariv_protocol_errors_total", "lariv_rate_limited_total", "lariv_accept_errors_total",
          "lariv_queued_bytes", "lariv_registry_buffers", "lariv_registry_capacity", "lariv_draining"}) {
        CHECK_MESSAGE(before.find(std::string("# TYPE ") + n + " ") != std::string::npos, n);
    }
    CHECK(before.find("lariv_sessions_closed_total{reason=\"slow_consumer\"}") != std::string::npos);

    {
        client a = s.connect_hello();
        client b = s.connect_hello();
        REQUIRE(a.send_to(b.id(), "12345", "m"));
        CHECK(a.next().is_ack_ok("m"));
        CHECK(b.next().what == kind::msg);
        a.send_raw("BOGUS\r\n");
        CHECK(a.next().is_err(error_code::unknown_command));
        const std::string mid = srv::monitor::handle(s.reg(), "/metrics").body;
        CHECK(value(mid, "lariv_sessions_open") == 2);
        CHECK(value(mid, "lariv_handshakes_total") == value(before, "lariv_handshakes_total") + 2);
        CHECK(value(mid, "lariv_messages_routed_total") == value(before, "lariv_messages_routed_total") + 1);
        CHECK(value(mid, "lariv_bytes_routed_total") == value(before, "lariv_bytes_routed_total") + 5);
        CHECK(value(mid, "lariv_protocol_errors_total") > value(before, "lariv_protocol_errors_total"));

        // Over real HTTP on the monitor port.
        const std::string health = http_get(s.get().monitor_port(), "/healthz");
        CHECK(health.rfind("HTTP/1.1 200", 0) == 0);
        const std::string metrics = http_get(s.get().monitor_port(), "/metrics");
        CHECK(metrics.find("lariv_sessions_open 2") != std::string::npos);
        const std::string connz = http_get(s.get().monitor_port(), "/connz?limit=10");
        const auto body = connz.find("\r\n\r\n");
        REQUIRE(body != std::string::npos);
        auto j = nlohmann::json::parse(connz.substr(body + 4), nullptr, false);
        REQUIRE_FALSE(j.is_discarded());
        CHECK(j.dump().find(a.id().to_string()) != std::string::npos);
        CHECK(http_get(s.get().monitor_port(), "/nope").find(" 404 ") != std::string::npos);
    }
    CHECK(eventually([&] { return s.reg().size() == 0; }, scaled(2000ms)));
    const std::string after = srv::monitor::handle(s.reg(), "/metrics").body;
    CHECK(value(after, "lariv_sessions_open") == 0);
    CHECK(after.find("lariv_sessions_closed_total{reason=\"client_closed\"} 2") != std::string::npos);
}

TEST_CASE("drain: acked messages queued for a late reader are delivered (regression)") {
    // The receiver does not read while 8 MiB of acked messages queue up for it: more than the
    // kernel's loopback socket buffers take (tcp_wmem max 4 MiB here), so megabytes stay in the
    // session's own queue. Then the server drains and the receiver starts reading 300 ms later.
    // Every ACKed message must arrive before the draining close, within drain_timeout_ms.
    auto cfg = test_config();
    cfg.drain_timeout_ms = 5000;
    cfg.write_deadline_ms = 60000;
    cfg.heartbeat_ms = 0;
    cfg.max_queue_bytes = 16 << 20;
    test_server s(cfg);
    client rx(s.port(), 4096);
    REQUIRE(rx.hello());
    client tx = s.connect_hello();
    const int acked = queue_for(tx, rx.id(), 16);
    REQUIRE(acked == 256);
    auto sess = s.reg().find(rx.id());
    REQUIRE(sess);
    const std::size_t queued = sess->queued_bytes();
    sess.reset();
    const auto t0 = std::chrono::steady_clock::now();
    s.get().drain();
    std::this_thread::sleep_for(300ms);
    int got = 0;
    bool draining_told = false;
    for (;;) {
        auto f = rx.next(scaled(3000ms));
        if (f.what == kind::msg) {
            ++got;
        } else if (f.is_err(error_code::draining)) {
            draining_told = true;
        } else if (f.what == kind::closed || f.what == kind::timeout) {
            break;
        }
    }
    s.get().wait();
    const auto took = std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0);
    std::printf("drain with a late reader: %zu bytes in the session queue at drain; %d of %d acked "
                "messages delivered; %lld ms\n",
                queued, got, acked, static_cast<long long>(took.count()));
    CHECK(queued > 0);
    CHECK(got == acked);
    CHECK(draining_told);
    CHECK(took <= scaled(ms(cfg.drain_timeout_ms) + 1000ms));
}

TEST_CASE("/connz: name filter, sorting, and slot-order paging that shows each session once") {
    auto cfg = test_config();
    test_server s(cfg);
    std::vector<client> alphas;
    for (int i = 0; i < 5; ++i) {
        alphas.push_back(s.connect_hello(R"({"name":"alpha-)" + std::to_string(i) + R"("})"));
    }
    client beta = s.connect_hello(R"({"name":"beta"})");
    REQUIRE(alphas[0].send_to(beta.id(), "x", "t"));
    CHECK(alphas[0].next().is_ack_ok("t"));

    auto get = [&](const std::string& target) {
        auto r = srv::monitor::handle(s.reg(), target);
        REQUIRE(r.status == 200);
        return nlohmann::json::parse(r.body);
    };
    // Filter by name.
    auto j = get("/connz?name=beta");
    REQUIRE(j["sessions"].size() == 1);
    CHECK(j["sessions"][0]["name"] == "beta");
    CHECK(get("/connz?name=alpha")["sessions"].size() == 5);
    CHECK(get("/connz?name=gamma")["sessions"].empty());
    // Sorted by msgs_in: the sender first.
    j = get("/connz?sort=msgs_in&limit=1");
    REQUIRE(j["sessions"].size() == 1);
    CHECK(j["sessions"][0]["id"] == alphas[0].id().to_string());
    CHECK(j["total"] == 6);
    // Paging in slot order while sessions come and go: each alpha shows at most once.
    std::set<std::string> seen;
    std::optional<std::string> after;
    int pages = 0;
    for (;;) {
        j = get("/connz?name=alpha&limit=2" + (after ? "&after=" + *after : std::string()));
        for (const auto& e : j["sessions"]) {
            CHECK(seen.insert(e["id"].get<std::string>()).second);
        }
        ++pages;
        if (pages == 1) {
            alphas.back().send_raw("QUIT\r\n");  // one leaves mid-walk
            (void)s.connect_hello(R"({"name":"alpha-new"})");
        }
        if (j["next"].is_null()) {
            break;
        }
        after = j["next"].get<std::string>();
    }
    CHECK(pages >= 2);
    CHECK(seen.size() >= 4);
    // Bad parameters are 400s, not guesses.
    CHECK(srv::monitor::handle(s.reg(), "/connz?limit=0").status == 400);
    CHECK(srv::monitor::handle(s.reg(), "/connz?sort=bogus").status == 400);
    CHECK(srv::monitor::handle(s.reg(), "/connz?after=xyz").status == 400);
}

// ------------------------------------------------ the monitor's query parsing and HEAD (issue)

namespace {

/// An HTTP response split at the blank line after its head.
struct http_parts {
    int status = 0;
    std::string head;  ///< the status line and the headers
    std::string body;
    bool complete = false;  ///< a blank line ended the head
    /// The value of header `name` ("" if absent).
    [[nodiscard]] std::string header(const std::string& name) const {
        const auto p = head.find("\r\n" + name + ": ");
        if (p == std::string::npos) {
            return {};
        }
        const auto v = p + name.size() + 4;
        return head.substr(v, head.find("\r\n", v) - v);
    }
};

http_parts split_http(const std::string& raw) {
    http_parts r;
    const auto end = raw.find("\r\n\r\n");
    r.complete = end != std::string::npos;
    r.head = raw.substr(0, end);
    r.body = r.complete ? raw.substr(end + 4) : std::string();
    if (raw.rfind("HTTP/1.1 ", 0) == 0) {
        r.status = std::atoi(raw.c_str() + 9);
    }
    return r;
}

}  // namespace

TEST_CASE(
    "monitor: every numeric parameter is strict - bad values are 400 naming it and its range") {
    test_server s(test_config());
    struct numeric {
        std::string prefix;  ///< the target up to the value
        std::string name;
        std::string range;
        std::vector<std::string> good;
        std::vector<std::string> out_of_range;
    };
    const std::vector<numeric> params = {
        {"/connz?limit=", "limit", "1..10000", {"1", "100", "10000", "007"}, {"0", "10001"}},
        {"/connz?sort=age&limit=", "limit", "1..10000", {"1", "10000"}, {"0", "10001"}},
        {"/connz?sort=age&offset=",
         "offset",
         "0..4294967295",
         {"0", "5", "4294967295"},
         {"4294967296"}},
        {"/connz?offset=", "offset", "0..4294967295", {}, {}},  // the issue's form, without sort
    };
    // "+5" decodes to " 5", "%2B5" to "+5", "%205" to " 5".
    const std::vector<std::string> malformed = {
        "abc",  "-5",   "1x",  "",   "99999999999999999999999", "+5", "%2B5", "%205",
        "5%20", "0x10", "1.5", "1e3"};
    for (const auto& p : params) {
        std::vector<std::string> bad = malformed;
        bad.insert(bad.end(), p.out_of_range.begin(), p.out_of_range.end());
        for (const auto& v : bad) {
            const std::string target = p.prefix + v;
            const auto r = srv::monitor::handle(s.reg(), target);
            CHECK_MESSAGE(r.status == 400, target);
            CHECK_MESSAGE(r.content_type == "text/plain", target);
            CHECK_MESSAGE(r.body == p.name + " must be an integer in " + p.range + "\n", target,
                          " -> ", r.body);
        }
        for (const auto& v : p.good) {
            const std::string target = p.prefix + v;
            const auto r = srv::monitor::handle(s.reg(), target);
            CHECK_MESSAGE(r.status == 200, target, " -> ", r.body);
        }
    }
    CHECK(srv::monitor::handle(s.reg(), "/connz?limit").status == 400);  // no '=': empty
    CHECK(nlohmann::json::parse(srv::monitor::handle(s.reg(), "/connz?limit=007").body)["limit"] ==
          7);
    // offset pages a sorted list and after the slot order: a mix-up is an error, not ignored.
    auto r = srv::monitor::handle(s.reg(), "/connz?offset=5");
    CHECK(r.status == 400);
    CHECK(r.body.find("offset applies only with sort=") != std::string::npos);
    r = srv::monitor::handle(s.reg(), "/connz?sort=age&after=" + std::string(32, '0'));
    CHECK(r.status == 400);
    CHECK(r.body.find("after applies only to open sessions without sort=") != std::string::npos);
}

TEST_CASE("monitor: unknown and repeated query parameters are 400 naming them") {
    test_server s(test_config());
    const std::vector<std::pair<std::string, std::vector<std::string>>> bad = {
        {"/connz?limt=5", {"'limt'", "/connz takes limit, after, sort, offset, name"}},
        {"/healthz?verbose=1", {"'verbose'", "/healthz takes format"}},
        {"/routez?x=1", {"'x'", "/routez takes no parameters"}},
        {"/metrics?x", {"'x'", "/metrics takes no parameters"}},
        {"/healthz?limit=5", {"'limit'"}},
        {"/connz?limit=1&limit=2", {"'limit' given twice"}},
        {"/connz?name=a&name=b", {"'name' given twice"}},
        {"/connz?limit=1&%6Cimit=2", {"'limit' given twice"}},  // the same key, once encoded
    };
    for (const auto& entry : bad) {
        const std::string& target = entry.first;
        const auto& words = entry.second;
        const auto r = srv::monitor::handle(s.reg(), target);
        CHECK_MESSAGE(r.status == 400, target);
        for (const auto& w : words) {
            CHECK_MESSAGE(r.body.find(w) != std::string::npos, target, " -> ", r.body);
        }
    }
    for (const char* target :
         {"/healthz", "/healthz?", "/metrics", "/connz?", "/connz?limit=5&&name=x&"}) {
        CHECK_MESSAGE(srv::monitor::handle(s.reg(), target).status == 200, target);
    }
}

TEST_CASE(
    "monitor: query keys and values are percent-decoded - name=edge%20x finds the session edge x") {
    auto cfg = test_config();
    cfg.monitor_port = free_port();
    test_server s(cfg);
    client edge_x = s.connect_hello(R"({"name":"edge x"})");
    client edge_plus = s.connect_hello(R"({"name":"edge+x"})");
    client edgex = s.connect_hello(R"({"name":"edgex"})");
    // The names of the sessions in a /connz body, sorted and joined with '|'.
    auto names = [](const std::string& body) {
        std::set<std::string> found;
        const auto j = nlohmann::json::parse(body);
        for (const auto& e : j["sessions"]) {
            found.insert(e["name"].get<std::string>());
        }
        std::string out;
        for (const auto& n : found) {
            out += (out.empty() ? "" : "|") + n;
        }
        return out;
    };
    const std::vector<std::pair<std::string, std::string>> found = {
        {"/connz?name=edge%20x", "edge x"},
        {"/connz?name=edge+x", "edge x"},  // '+' is a space in a query
        {"/connz?name=edge%2Bx", "edge+x"},
        {"/connz?name=edge%2bx", "edge+x"},
        {"/connz?name=edgex", "edgex"},
        {"/connz?%6Eame=edge%20x&%6C%69mit=5", "edge x"},  // keys decoded too
        {"/connz?name=edge%20x&sort=msgs_in", "edge x"},
        {"/connz?name=a%26limit%3D0", ""},     // an encoded '&' and '=' are part of the value
        {"/conn%7A?name=edge%20x", "edge x"},  // the path is decoded ('+' stays '+' there)
    };
    for (const auto& entry : found) {
        const std::string& target = entry.first;
        const auto& want = entry.second;
        const auto r = srv::monitor::handle(s.reg(), target);
        REQUIRE_MESSAGE(r.status == 200, target, " -> ", r.body);
        CHECK_MESSAGE(names(r.body) == want, target, " -> ", r.body);
    }
    for (const char* target : {"/connz?name=%zz", "/connz?name=%4", "/connz?name=edge%",
                               "/connz?name=%g0", "/connz?%zz=1", "/conn%7?name=x"}) {
        const auto r = srv::monitor::handle(s.reg(), target);
        CHECK_MESSAGE(r.status == 400, target);
        CHECK_MESSAGE(r.body.find("malformed percent-escape") != std::string::npos, target, " -> ",
                      r.body);
    }
    CHECK(srv::monitor::handle(s.reg(), "/conn+z").status == 404);
    // Over real HTTP on the monitor port.
    const auto r = split_http(http_get(s.get().monitor_port(), "/connz?name=edge%20x"));
    REQUIRE(r.status == 200);
    CHECK(names(r.body) == "edge x");
    CHECK(split_http(http_get(s.get().monitor_port(), "/connz?name=%zz")).status == 400);
}

TEST_CASE("monitor: HEAD answers the GET's status and headers with no body - over real HTTP") {
    auto cfg = test_config();
    cfg.monitor_port = free_port();
    test_server s(cfg);
    const std::uint16_t port = s.get().monitor_port();
    REQUIRE(port != 0);
    const std::vector<std::pair<std::string, int>> targets = {
        {"/healthz", 200}, {"/varz", 200},          {"/nope", 404},   {"/connz", 200},
        {"/metrics", 200}, {"/connz?limit=5", 200}, {"/connz?limit=abc", 400}};
    for (const auto& entry : targets) {
        const std::string& target = entry.first;
        const auto& status = entry.second;
        const auto get = split_http(http_get(port, target));
        REQUIRE_MESSAGE(get.complete, target);
        CHECK_MESSAGE(get.status == status, target);
        CHECK_MESSAGE(get.header("Content-Length") == std::to_string(get.body.size()), target);
        bool closed = false;
        const auto head = split_http(http_request(port, "HEAD", target, scaled(2000ms), &closed));
        // The server ended the answer: the client did not wait for a body until the timeout.
        CHECK_MESSAGE(closed, target);
        REQUIRE_MESSAGE(head.complete, target);
        CHECK_MESSAGE(head.status == get.status, target);
        CHECK_MESSAGE(head.header("Content-Type") == get.header("Content-Type"), target);
        // /varz and /metrics carry live figures (uptime, CPU seconds): their length may change
        // between two requests by a digit.
        const bool live = target == "/varz" || target == "/metrics";
        if (live) {
            CHECK_MESSAGE(std::stoul(head.header("Content-Length")) > 0, target);
        } else {
            CHECK_MESSAGE(head.header("Content-Length") == get.header("Content-Length"), target);
        }
        CHECK_MESSAGE(head.header("Connection") == "close", target);
        CHECK_MESSAGE(head.body.empty(), target, " -> ", head.body);
        // The monitor answers one request per connection; the next one, on a new connection, works.
        const auto again = split_http(http_get(port, target));
        CHECK_MESSAGE(again.status == status, target);
        if (!live) {
            CHECK_MESSAGE(again.body.size() == get.body.size(), target);
        }
    }
    // A body is still sent for GET, and other methods are refused.
    CHECK(split_http(http_get(port, "/healthz")).body == "ok\n");
    CHECK(split_http(http_request(port, "POST", "/healthz")).status == 405);
}
