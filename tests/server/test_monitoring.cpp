// Monitoring as an operator reads it (issue 14): striped counters and histograms, /connz's
// transport fields and its ring of closed sessions, /varz, /metrics' histograms, process_* and
// build_info, promtool's verdict on the exposition, and the README's metric list.
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "lariv/server/detail/counters.hpp"
#include "lariv/server/monitor.hpp"
#include "support.hpp"

using namespace lariv::test;
using namespace std::chrono_literals;
using lariv::protocol::error_code;
using kind = lariv::test::frame::kind;

namespace {

nlohmann::json get_json(srv::registry& reg, const std::string& target) {
    const auto r = srv::monitor::handle(reg, target);
    REQUIRE_MESSAGE(r.status == 200, target << ": " << r.body);
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    return j;
}

/// The value of the sample line `name` (exact, labels included) in an exposition, or -1.
double sample(const std::string& text, const std::string& name) {
    const auto pos = text.find("\n" + name + " ");
    if (pos == std::string::npos) {
        return -1;
    }
    return std::stod(text.substr(pos + name.size() + 2));
}

/// Every metric family the exposition declares (# TYPE lines).
std::set<std::string> families(const std::string& text) {
    std::set<std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("# TYPE ", 0) == 0) {
            out.insert(line.substr(7, line.find(' ', 7) - 7));
        }
    }
    return out;
}

}  // namespace

TEST_CASE("counters: striped counters and histograms lose nothing across threads") {
    srv::detail::sharded_counter c;
    srv::detail::latency_histogram h;
    constexpr int threads = 8;
    constexpr int per = 100'000;
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
            for (int i = 0; i < per; ++i) {
                c.fetch_add(1);
                h.observe_ns(static_cast<std::uint64_t>(t) * 1000);  // 0, 1 us, 2 us, ... 7 us
            }
        });
    }
    for (auto& t : ts) {
        t.join();
    }
    CHECK(c.load() == std::uint64_t{threads} * per);
    const auto snap = h.snapshot();
    CHECK(snap.count == std::uint64_t{threads} * per);
    CHECK(snap.sum_ns == std::uint64_t{per} * 1000 * (0 + 1 + 2 + 3 + 4 + 5 + 6 + 7));
    CHECK(snap.buckets[0] == 2U * per);  // 0 and 1 us: <= 1 us
    CHECK(snap.buckets[1] == 1U * per);  // 2 us: <= 2.5 us
    CHECK(snap.buckets[2] == 3U * per);  // 3, 4, 5 us: <= 5 us (a bound is inclusive)
    CHECK(snap.buckets[3] == 2U * per);  // 6, 7 us: <= 10 us

    // Bucket edges: a bound is inclusive; past the last bound is +Inf.
    srv::detail::latency_histogram e;
    e.observe_ns(1000);
    e.observe_ns(1001);
    e.observe_ns(11'000'000'000);
    const auto s = e.snapshot();
    CHECK(s.buckets[0] == 1);
    CHECK(s.buckets[1] == 1);
    CHECK(s.buckets[srv::detail::latency_histogram::bounds] == 1);
}

TEST_CASE("/connz: remote, bytes in and out, idle time and the heartbeat round trip") {
    auto cfg = test_config();
    cfg.heartbeat_ms = 100 * time_scale;
    test_server s(cfg);
    client a = s.connect_hello(R"({"name":"conn-a"})");
    client b = s.connect_hello(R"({"name":"conn-b"})");
    REQUIRE(a.send_to(b.id(), "hello", "t1"));
    CHECK(a.next_skip_ping().is_ack_ok("t1"));
    CHECK(b.next_skip_ping().what == kind::msg);
    // b answers a heartbeat PING (next_skip_ping does), so its round trip gets measured.
    CHECK(eventually(
        [&] {
            (void)b.next_skip_ping(20ms);
            const auto j = get_json(s.reg(), "/connz?name=conn-b");
            return j["sessions"].size() == 1 && !j["sessions"][0]["rtt_us"].is_null();
        },
        scaled(3000ms)));
    const auto j = get_json(s.reg(), "/connz?sort=bytes_in");
    REQUIRE(j["sessions"].size() == 2);
    for (const auto& e : j["sessions"]) {
        CHECK(e["kind"] == "lariv");
        CHECK(e["remote"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
        CHECK(e["idle_ms"].get<std::int64_t>() >= 0);
        CHECK(e["bytes_out"].get<std::uint64_t>() > 0);  // +HELLO at least
    }
    // a sent HELLO + SEND: more bytes in than b, so it sorts first.
    CHECK(j["sessions"][0]["name"] == "conn-a");
    CHECK(j["sessions"][0]["bytes_in"].get<std::uint64_t>() >
          j["sessions"][1]["bytes_in"].get<std::uint64_t>());
    CHECK(j["sessions"][0]["msgs_in"] == 1);
    const auto jb = get_json(s.reg(), "/connz?name=conn-b");
    CHECK(jb["sessions"][0]["rtt_us"].get<std::int64_t>() >= 0);
    CHECK(jb["sessions"][0]["msgs_out"] == 1);
    // The slot-order form carries the same fields.
    const auto page = get_json(s.reg(), "/connz?limit=10");
    REQUIRE(page["sessions"].size() == 2);
    CHECK(page["sessions"][0].contains("bytes_in"));
    CHECK(page["sessions"][0].contains("remote"));
    // Bad parameters are 400s that say why.
    CHECK(srv::monitor::handle(s.reg(), "/connz?sort=nope").status == 400);
    CHECK(srv::monitor::handle(s.reg(), "/connz?state=gone").status == 400);
    CHECK(srv::monitor::handle(s.reg(), "/connz?state=closed&sort=age").status == 400);
    CHECK(srv::monitor::handle(s.reg(), "/connz?state=closed&after=00").status == 400);
}

TEST_CASE("/connz?state=closed: a bounded ring, newest first, with reason and duration") {
    auto cfg = test_config();
    cfg.max_closed_sessions = 3;
    cfg.admin_token = "adm";
    test_server s(cfg);
    for (int i = 0; i < 5; ++i) {
        client c = s.connect_hello(R"({"name":"gone-)" + std::to_string(i) + R"("})");
        REQUIRE(c.is_open());
        if (i == 4) {
            REQUIRE(s.reg().kick(c.id()));
            CHECK(c.wait_closed(scaled(2000ms)));
        } else {
            c.send_raw("QUIT\r\n");
            CHECK(c.wait_closed(scaled(2000ms)));
        }
        CHECK(eventually([&] { return s.reg().recently_closed().total() == std::uint64_t(i) + 1; },
                         scaled(2000ms)));
    }
    const auto j = get_json(s.reg(), "/connz?state=closed");
    CHECK(j["state"] == "closed");
    CHECK(j["kept"] == 3);
    CHECK(j["closed_total"] == 5);
    REQUIRE(j["sessions"].size() == 3);
    CHECK(j["sessions"][0]["name"] == "gone-4");
    CHECK(j["sessions"][0]["reason"] == "kicked");
    CHECK(j["sessions"][1]["name"] == "gone-3");
    CHECK(j["sessions"][1]["reason"] == "client_quit");
    CHECK(j["sessions"][2]["name"] == "gone-2");
    for (const auto& e : j["sessions"]) {
        CHECK(e["duration_ms"].get<std::uint64_t>() < 60'000);
        CHECK(e["closed_at"].get<std::string>().size() == 24);  // 2026-12-01T14:33:58.913Z
        CHECK(e["bytes_in"].get<std::uint64_t>() > 0);
        CHECK(e["remote"].get<std::string>().rfind("127.0.0.1:", 0) == 0);
    }
    const auto page = get_json(s.reg(), "/connz?state=closed&offset=1&limit=1");
    REQUIRE(page["sessions"].size() == 1);
    CHECK(page["sessions"][0]["name"] == "gone-3");
    CHECK(page["total"] == 3);
    const auto named = get_json(s.reg(), "/connz?state=closed&name=gone-2");
    REQUIRE(named["sessions"].size() == 1);
    CHECK(named["sessions"][0]["name"] == "gone-2");

    auto off = test_config();
    off.max_closed_sessions = 0;
    test_server none(off);
    {
        client c = none.connect_hello();
        c.send_raw("QUIT\r\n");
        CHECK(c.wait_closed(scaled(2000ms)));
    }
    CHECK(get_json(none.reg(), "/connz?state=closed")["sessions"].empty());
}

TEST_CASE("/varz: identity, uptime, process figures, limits, totals and a redacted config") {
    auto cfg = test_config();
    cfg.monitor_port = free_port();
    cfg.admin_token = "s3cret-admin";
    cfg.auth_token = "s3cret-client";
    cfg.max_sessions_per_ip = 9;
    test_server s(cfg);
    client a = s.connect_hello(R"({"auth":"s3cret-client"})");
    REQUIRE(a.is_open());
    const std::string http = http_get(s.get().monitor_port(), "/varz");
    REQUIRE(http.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(http.find("s3cret") == std::string::npos);
    const auto j = nlohmann::json::parse(http.substr(http.find("\r\n\r\n") + 4));
    CHECK(j["server"] == "larivd");
    CHECK(!j["version"].get<std::string>().empty());
    CHECK(!j["revision"].get<std::string>().empty());
    CHECK(j["node_id"] == 7);
    CHECK(j["boot_epoch"] == s.reg().boot_epoch());
    CHECK(j["uptime_s"].get<double>() >= 0);
    CHECK(j["start"].get<std::string>().size() == 24);
    CHECK(j["rss_bytes"].get<std::uint64_t>() > 1'000'000);
    CHECK(j["open_fds"].get<std::uint64_t>() > 3);
    CHECK(j["max_fds"].get<std::uint64_t>() >= j["open_fds"].get<std::uint64_t>());
    CHECK(j["cpu_seconds"].get<double>() > 0);
    CHECK(j["sessions"] == 1);
    CHECK(j["auth"]["client"] == true);
    CHECK(j["auth"]["admin"] == true);
    CHECK(j["limits"]["max_sessions_per_ip"] == 9);
    CHECK(j["limits"]["protocol"]["max_payload"] == cfg.limits.max_payload);
    CHECK(j["totals"]["handshakes"] == 1);
    CHECK(j["config"]["admin_token"] == "<redacted>");
    CHECK(j["config"]["auth_token"] == "<redacted>");
    CHECK(j["config"]["max_sessions_per_ip"] == 9);
    CHECK(srv::monitor::handle(s.reg(), "/varz?x=1").status == 400);
}

TEST_CASE("/metrics: latency histograms, process_* and build_info") {
    auto cfg = test_config();
    test_server s(cfg);
    constexpr int sends = 64;  // one in 16 is timed: 4 route samples
    {
        client a = s.connect_hello();
        client b = s.connect_hello();
        for (int i = 0; i < sends; ++i) {
            REQUIRE(a.send_to(b.id(), "x"));
        }
        for (int i = 0; i < sends; ++i) {
            REQUIRE(b.next_skip_ping().what == kind::msg);
        }
    }
    const std::string m = srv::monitor::handle(s.reg(), "/metrics").body;
    CHECK(sample(m, "lariv_handshake_duration_seconds_count") == sample(m, "lariv_handshakes_total"));
    CHECK(sample(m, "lariv_handshake_duration_seconds_count") == 2);
    CHECK(sample(m, "lariv_route_latency_seconds_count") == sends / 16);
    CHECK(sample(m, "lariv_write_duration_seconds_count") >= 1);
    // Buckets are cumulative and end at the count.
    for (const char* h : {"lariv_handshake_duration_seconds", "lariv_route_latency_seconds",
                          "lariv_write_duration_seconds"}) {
        const std::regex bucket(std::string("\n") + h + R"re(_bucket\{le="([^"]+)"\} (\d+))re");
        double prev = 0;
        int n = 0;
        for (auto it = std::sregex_iterator(m.begin(), m.end(), bucket); it != std::sregex_iterator(); ++it) {
            const double v = std::stod((*it)[2]);
            CHECK(v >= prev);
            prev = v;
            ++n;
        }
        CHECK(n == static_cast<int>(srv::detail::latency_histogram::bounds) + 1);
        CHECK(prev == sample(m, std::string(h) + "_count"));
        CHECK(sample(m, std::string(h) + "_sum") > 0);
    }
    CHECK(sample(m, "process_cpu_seconds_total") > 0);
    CHECK(sample(m, "process_resident_memory_bytes") > 1e6);
    CHECK(sample(m, "process_open_fds") > 3);
    const double start = sample(m, "process_start_time_seconds");
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    CHECK(start > now - 86400);
    CHECK(start <= now + 1);
    CHECK(m.find("\nlariv_build_info{version=\"") != std::string::npos);
}

TEST_CASE("/metrics: promtool check metrics accepts the exposition") {
    // promtool ships in Debian's prometheus package (scripts/deps.sh test installs it). Missing
    // promtool is a failure, not a skip.
    REQUIRE_MESSAGE(std::system("command -v promtool >/dev/null 2>&1") == 0,
                    "promtool not found: run scripts/deps.sh test (Debian package prometheus)");
    auto cfg = test_config();
    test_server s(cfg);
    {
        client a = s.connect_hello();
        client b = s.connect_hello();
        REQUIRE(a.send_to(b.id(), "x", "t"));
        CHECK(a.next_skip_ping().is_ack_ok("t"));
    }
    const std::string m = srv::monitor::handle(s.reg(), "/metrics").body;
    const std::string in = std::string(std::getenv("TMPDIR") != nullptr ? std::getenv("TMPDIR") : "/tmp") +
                           "/lariv-metrics-" + std::to_string(::getpid()) + ".txt";
    {
        std::ofstream f(in);
        f << m;
    }
    const std::string cmd = "promtool check metrics < " + in + " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[512];
    while (std::fgets(buf, sizeof buf, p) != nullptr) {
        out += buf;
    }
    const int rc = ::pclose(p);
    std::remove(in.c_str());
    CHECK_MESSAGE(WIFEXITED(rc), out);
    CHECK_MESSAGE(WEXITSTATUS(rc) == 0, out);
    CHECK_MESSAGE(out.empty(), out);  // no lint findings either
}

TEST_CASE("README: the metric list names every metric /metrics exports, and no other") {
    test_server s(test_config());
    const std::set<std::string> exported = families(srv::monitor::handle(s.reg(), "/metrics").body);
    std::ifstream in(std::string(LARIV_SOURCE_DIR) + "/README.md");
    REQUIRE(in);
    const std::string readme((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto begin = readme.find("<!-- metrics -->");
    const auto end = readme.find("<!-- /metrics -->");
    REQUIRE(begin != std::string::npos);
    REQUIRE(end != std::string::npos);
    const std::string list = readme.substr(begin, end - begin);
    std::set<std::string> documented;
    const std::regex name(R"(`((?:lariv|process)_[a-z_]+)(?:\{[^`]*\})?`)");
    for (auto it = std::sregex_iterator(list.begin(), list.end(), name); it != std::sregex_iterator(); ++it) {
        documented.insert((*it)[1]);
    }
    for (const auto& f : exported) {
        CHECK_MESSAGE(documented.contains(f), "README's metric list lacks " << f);
    }
    for (const auto& d : documented) {
        CHECK_MESSAGE(exported.contains(d), "README lists " << d << ", which /metrics does not export");
    }
}
