// TLS on the client listener (tls_cert, tls_key, tls_ca, tls_listen_address, tls_port): the
// handshake and HELLO over TLS, routing between TLS and plaintext clients, mTLS refusals (no
// certificate, another CA, an expired certificate), certificate reload, the TLS 1.2 minimum, the
// handshake deadline, garbage on the TLS port, and the configuration errors (exit 78).
//
// Every certificate is made at test time with the openssl CLI (no key is committed). Without the
// CLI these tests fail; they never skip.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "lariv/server/monitor.hpp"
#include "lariv/server/tls.hpp"
#include "pki.hpp"
#include "support.hpp"

using namespace lariv::test;
using kind = frame::kind;

#ifndef LARIV_LARIVD_PATH
#error "LARIV_LARIVD_PATH must name the larivd binary"
#endif

namespace {

using lariv::test::pki;
using lariv::test::test_pki;

/// A server config with TLS on an ephemeral port, certificate larivd-A; `mtls`: client
/// certificates from the test CA required.
srv::config tls_config(bool mtls = false) {
    const pki& p = test_pki();
    auto c = test_config();
    c.tls_cert = p.path("server-a.pem");
    c.tls_key = p.path("server-a.key");
    c.tls_port = 0;
    if (mtls) {
        c.tls_ca = p.path("ca.pem");
    }
    return c;
}

/// A client context that verifies the server with the test CA and presents `cert` (a PKI name,
/// "" for none).
std::shared_ptr<SSL_CTX> client_ctx(const std::string& cert = {}) {
    const pki& p = test_pki();
    tls_options o;
    o.ca = p.path("ca.pem");
    if (!cert.empty()) {
        o.cert = p.path(cert + ".pem");
        o.key = p.path(cert + ".key");
    }
    return tls_client_context(o);
}

/// A TLS client that completed the handshake and HELLO.
client tls_hello(std::uint16_t port, const std::shared_ptr<SSL_CTX>& ctx, const std::string& json = {}) {
    client c;
    REQUIRE(c.try_connect(port));
    REQUIRE_MESSAGE(c.start_tls(ctx, "localhost"), c.tls_error());
    REQUIRE_MESSAGE(c.hello(json), c.last_failure() << " / " << c.tls_error());
    return c;
}

/// True when the server refuses the client: the handshake fails, or (TLS 1.3, where the server
/// checks a client certificate after the client has finished) the connection is closed before
/// any +HELLO. `why` gets OpenSSL's reason as the client saw it.
bool refused(std::uint16_t port, const std::shared_ptr<SSL_CTX>& ctx, std::string& why) {
    client c;
    REQUIRE(c.try_connect(port));
    if (!c.start_tls(ctx, "localhost")) {
        why = c.tls_error();
        return true;
    }
    const frame f = c.hello_raw({}, scaled(3000ms));
    why = c.tls_error();
    return f.what == kind::closed;
}

std::uint64_t failures(test_server& s) { return s.stats().tls_handshake_failures.load(); }

/// SEND from `a` to `b` with an ACK; `b` must get exactly `payload` from `a`.
void route(client& a, client& b, const std::string& payload, const std::string& token) {
    REQUIRE(a.send_to(b.id(), payload, token));
    const frame ack = a.next(scaled(3000ms));
    CHECK_MESSAGE(ack.is_ack_ok(token), ack.describe());
    const frame m = b.next_skip_ping(scaled(3000ms));
    REQUIRE_MESSAGE(m.what == kind::msg, m.describe());
    CHECK(m.from == a.id());
    CHECK(m.text.size() == payload.size());
    CHECK(m.text == payload);
}

/// Runs a shell command line (stdout captured, stderr appended to `err` if given); its exit code.
int run(const std::string& cmdline, std::string* out = nullptr) {
    FILE* p = ::popen((cmdline + " 2>&1").c_str(), "r");
    REQUIRE(p != nullptr);
    std::string text;
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        text.append(buf, n);
    }
    const int st = ::pclose(p);
    if (out != nullptr) {
        *out = text;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const std::string larivd = LARIV_LARIVD_PATH;

}  // namespace

TEST_CASE("tls: handshake, HELLO and +HELLO over TLS, and the server context's settings") {
    test_server s(tls_config());
    REQUIRE(s.get().tls_port() != 0);
    REQUIRE(s.port() != 0);  // the plaintext listener runs beside it

    client c = tls_hello(s.get().tls_port(), client_ctx(), R"({"name":"over-tls"})");
    CHECK(c.tls());
    CHECK((c.tls_version() == "TLSv1.3" || c.tls_version() == "TLSv1.2"));
    CHECK(c.peer_subject() == "/CN=larivd-A");  // verified against the test CA, for "localhost"
    CHECK(c.peer_serial() == "A1");
    auto sess = s.reg().find_session(c.id());
    REQUIRE(sess);
    CHECK(sess->name() == "over-tls");
    CHECK(s.stats().tls_handshakes.load() == 1);
    CHECK(failures(s) == 0);
    // Commands work over TLS, and STATS counts the TLS handshakes.
    CHECK(c.ping());
    auto st = c.stats();
    REQUIRE_MESSAGE(st, c.last_failure());
    CHECK((*st)["tls_handshakes"] == 1);
    CHECK((*st)["tls_handshake_failures"] == 0);
    const std::string metrics = srv::monitor::handle(s.reg(), "/metrics").body;
    CHECK(metrics.find("\nlariv_tls_handshakes_total 1\n") != std::string::npos);
    CHECK(metrics.find("\nlariv_tls_handshake_failures_total 0\n") != std::string::npos);

    // The context: TLS 1.2 minimum, no compression, no renegotiation, a fresh key per handshake.
    auto ctx = s.get().tls_context();
    REQUIRE(ctx);
    SSL_CTX* h = ctx->native_handle();
    CHECK(SSL_CTX_get_min_proto_version(h) == TLS1_2_VERSION);
    const auto opts = SSL_CTX_get_options(h);
    CHECK((opts & SSL_OP_NO_COMPRESSION) != 0);
    CHECK((opts & SSL_OP_NO_RENEGOTIATION) != 0);
    CHECK((opts & SSL_OP_NO_TLSv1_1) != 0);
    // (A fresh (EC)DHE key per handshake is what OpenSSL 3 always does: SSL_OP_SINGLE_ECDH_USE
    // is 0 there.)
    CHECK(SSL_CTX_get_verify_mode(h) == SSL_VERIFY_NONE);  // no tls_ca: no client certificates

    // A clean close (close_notify) and a close without one both count as the client closing.
    const auto closed_before = s.closed(srv::close_reason::client_closed);
    c.close();
    client d = tls_hello(s.get().tls_port(), client_ctx());
    d.reset();
    CHECK(eventually([&] { return s.closed(srv::close_reason::client_closed) == closed_before + 2; },
                     scaled(2000ms)));
    CHECK(s.closed(srv::close_reason::io_error) == 0);
}

TEST_CASE("tls: TLS only: an empty listen_address turns the plaintext listener off") {
    auto cfg = tls_config();
    cfg.listen_address = "";
    test_server s(cfg);
    CHECK(s.port() == 0);
    client c = tls_hello(s.get().tls_port(), client_ctx());
    CHECK(c.ping());
    // Without TLS an empty listen_address leaves nothing to listen on.
    auto bad = test_config();
    bad.listen_address = "";
    CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("listen_address"), srv::config_error);
}

TEST_CASE("tls: routing between a TLS client and a plaintext client, both ways, content exact") {
    test_server s(tls_config());
    client t = tls_hello(s.get().tls_port(), client_ctx(), R"({"name":"tls"})");
    client p(s.port());
    REQUIRE(p.hello(R"({"name":"plain"})"));

    route(t, p, "from TLS to plaintext", "t1");
    route(p, t, "from plaintext to TLS", "p1");
    std::string binary("\0\r\nMSG x 3\r\n\xff\x01", 14);
    route(t, p, binary, "t2");
    route(p, t, binary, "p2");
    // Larger than one TLS record (16 KiB) in both directions, and many in a row.
    std::string big;
    for (int i = 0; big.size() < 200000; ++i) {
        big += numbered("big", static_cast<std::uint64_t>(i), 0);
    }
    route(t, p, big, "t3");
    route(p, t, big, "p3");
    for (int i = 0; i < 200; ++i) {
        route(i % 2 == 0 ? t : p, i % 2 == 0 ? p : t, numbered("n", static_cast<std::uint64_t>(i), 100),
              "k" + std::to_string(i));
    }
    CHECK(s.stats().msgs_out.load() == 206);
}

TEST_CASE("tls: mTLS refuses a client without a certificate and one from another CA") {
    test_server s(tls_config(true));
    const auto port = s.get().tls_port();
    SSL_CTX* h = s.get().tls_context()->native_handle();
    CHECK(SSL_CTX_get_verify_mode(h) == (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT));

    // A certificate from the test CA is accepted.
    client good = tls_hello(port, client_ctx("client"));
    CHECK(good.ping());
    CHECK(failures(s) == 0);

    std::string why;
    CHECK(refused(port, client_ctx(), why));
    MESSAGE("no certificate: " << why);
    CHECK(why.find("alert certificate required") != std::string::npos);  // the server's alert
    CHECK(eventually([&] { return failures(s) == 1; }, scaled(2000ms)));

    CHECK(refused(port, client_ctx("stranger"), why));
    MESSAGE("another CA: " << why);
    CHECK(why.find("unknown ca") != std::string::npos);
    CHECK(eventually([&] { return failures(s) == 2; }, scaled(2000ms)));

    // Neither became a session; the good client still works.
    CHECK(s.stats().tls_handshakes.load() == 1);
    CHECK(s.reg().size() == 1);
    CHECK(good.ping());
}

TEST_CASE("tls: an expired certificate is refused (mTLS client certificate, and server certificate)") {
    {
        test_server s(tls_config(true));
        std::string why;
        CHECK(refused(s.get().tls_port(), client_ctx("expired"), why));
        MESSAGE("expired client certificate: " << why);
        CHECK(why.find("certificate expired") != std::string::npos);
        CHECK(eventually([&] { return failures(s) == 1; }, scaled(2000ms)));
        CHECK(s.stats().tls_handshakes.load() == 0);
        CHECK(s.reg().size() == 0);
    }
    {
        // A client that verifies the server refuses an expired server certificate.
        auto cfg = tls_config();
        cfg.tls_cert = test_pki().path("expired-srv.pem");
        cfg.tls_key = test_pki().path("expired-srv.key");
        test_server s(cfg);
        client c;
        REQUIRE(c.try_connect(s.get().tls_port()));
        CHECK_FALSE(c.start_tls(client_ctx(), "localhost"));
        MESSAGE("expired server certificate: " << c.tls_error());
        CHECK(c.tls_error().find("certificate has expired") != std::string::npos);
        CHECK(eventually([&] { return failures(s) == 1; }, scaled(2000ms)));  // the client's alert
    }
}

TEST_CASE("tls: reload loads the new certificate for new connections, old ones keep theirs") {
    const pki& p = test_pki();
    p.copy("server-a.pem", "live.pem");
    p.copy("server-a.key", "live.key");
    auto cfg = tls_config();
    cfg.tls_cert = p.path("live.pem");
    cfg.tls_key = p.path("live.key");
    test_server s(cfg);
    const auto port = s.get().tls_port();

    client old = tls_hello(port, client_ctx(), R"({"name":"old"})");
    CHECK(old.peer_serial() == "A1");
    auto ctx_a = s.get().tls_context();

    p.copy("server-b.pem", "live.pem");
    p.copy("server-b.key", "live.key");
    s.get().reload(cfg);
    auto ctx_b = s.get().tls_context();
    CHECK(ctx_b != ctx_a);

    client fresh = tls_hello(port, client_ctx(), R"({"name":"new"})");
    CHECK(fresh.peer_serial() == "B2");
    CHECK(fresh.peer_subject() == "/CN=larivd-B");
    // The old connection goes on with its context, and the two route to each other.
    CHECK(old.ping());
    route(old, fresh, "old to new", "o");
    route(fresh, old, "new to old", "n");
    // The old context lives while a stream made from it does (ours + the old session's share),
    // and only as long.
    CHECK(ctx_a.use_count() >= 2);
    old.close();
    CHECK(eventually([&] { return ctx_a.use_count() == 1; }, scaled(2000ms)));

    // A bad reload changes nothing: the error names the key, new connections still get B.
    std::ofstream(p.path("live.pem"), std::ios::trunc) << "not a certificate\n";
    CHECK_THROWS_WITH_AS(s.get().reload(cfg), doctest::Contains("tls_cert"), srv::config_error);
    p.copy("server-a.pem", "live.pem");  // A's certificate with B's key
    CHECK_THROWS_WITH_AS(s.get().reload(cfg), doctest::Contains("tls_key"), srv::config_error);
    auto next = cfg;
    next.tls_cert = p.path("missing.pem");
    CHECK_THROWS_WITH_AS(s.get().reload(next), doctest::Contains("tls_cert"), srv::config_error);
    CHECK(s.get().tls_context() == ctx_b);
    client third = tls_hello(port, client_ctx());
    CHECK(third.peer_serial() == "B2");
    CHECK(fresh.ping());
}

TEST_CASE("tls: a client offering at most TLS 1.1 is refused (TLS 1.2 minimum)") {
    test_server s(tls_config());
    // A client context that could speak TLS 1.0 to 1.3 (security level 0 allows the old ones).
    tls_options legacy;
    legacy.ca = test_pki().path("ca.pem");
    legacy.min_version = TLS1_VERSION;
    legacy.security_level = 0;
    legacy.max_version = TLS1_2_VERSION;
    {
        client c;  // control: the same client with TLS 1.2 allowed gets through
        REQUIRE(c.try_connect(s.get().tls_port()));
        REQUIRE_MESSAGE(c.start_tls(tls_client_context(legacy), "localhost"), c.tls_error());
        CHECK(c.tls_version() == "TLSv1.2");
        CHECK(c.hello());
    }
    legacy.max_version = TLS1_1_VERSION;
    client c;
    REQUIRE(c.try_connect(s.get().tls_port()));
    CHECK_FALSE(c.start_tls(tls_client_context(legacy), "localhost"));
    MESSAGE("TLS 1.1 client: " << c.tls_error());
    CHECK(c.tls_error().find("protocol version") != std::string::npos);  // the server's alert
    CHECK(eventually([&] { return failures(s) == 1; }, scaled(2000ms)));
    CHECK(s.stats().tls_handshakes.load() == 1);
}

TEST_CASE("tls: a TCP client that never handshakes is closed at handshake_timeout_ms, "
          "and handshakes count against max_sessions") {
    auto cfg = tls_config();
    cfg.handshake_timeout_ms = static_cast<std::uint32_t>(scaled(400ms).count());
    cfg.max_sessions = 3;
    test_server s(cfg);
    const auto port = s.get().tls_port();
    {
        client silent(port);
        const auto t0 = std::chrono::steady_clock::now();
        CHECK(silent.wait_closed(scaled(400ms) + scaled(2000ms)));
        const auto took = std::chrono::steady_clock::now() - t0;
        CHECK(took >= scaled(400ms) - 50ms);  // not before the deadline
        CHECK(eventually([&] { return failures(s) == 1; }, scaled(1000ms)));
    }
    // Three silent connections fill max_sessions: a fourth is closed at once, long before the
    // deadline, and counted as refused; once the three are gone, TLS works again.
    auto slow = tls_config();
    slow.handshake_timeout_ms = static_cast<std::uint32_t>(scaled(3000ms).count());
    slow.max_sessions = 3;
    test_server s2(slow);
    const auto p2 = s2.get().tls_port();
    client a(p2), b(p2), c(p2);
    client fourth(p2);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(fourth.wait_closed(scaled(1000ms)));
    CHECK(std::chrono::steady_clock::now() - t0 < scaled(3000ms));
    CHECK(s2.stats().refused_full.load() == 1);
    CHECK(s2.closed(srv::close_reason::server_full) == 1);
    CHECK(s2.stats().tls_handshake_failures.load() == 0);  // refused, not a failed handshake
    a.close();
    b.close();
    c.close();
    CHECK(eventually([&] { return s2.stats().tls_handshake_failures.load() == 3; }, scaled(2000ms)));
    client ok = tls_hello(p2, client_ctx());
    CHECK(ok.ping());
}

TEST_CASE("tls: garbage and plaintext on the TLS port are refused at once, the server goes on") {
    auto cfg = tls_config();
    cfg.handshake_timeout_ms = static_cast<std::uint32_t>(scaled(10000ms).count());
    test_server s(cfg);
    const auto port = s.get().tls_port();
    const std::string inputs[] = {"HELLO\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                  std::string(4096, '\xff'), std::string(70000, '\0')};
    std::uint64_t n = 0;
    for (const auto& in : inputs) {
        client c(port);
        c.send_raw(in);
        const auto t0 = std::chrono::steady_clock::now();
        CHECK(c.wait_closed(scaled(2000ms)));
        CHECK(std::chrono::steady_clock::now() - t0 < scaled(5000ms));  // not the deadline
        ++n;
        CHECK(eventually([&] { return failures(s) == n; }, scaled(2000ms)));
    }
    // A TLS client and a plaintext client still work, and route to each other.
    client t = tls_hello(port, client_ctx());
    client p(s.port());
    REQUIRE(p.hello());
    route(t, p, "still fine", "x");
    CHECK(s.reg().size() == 2);
}

TEST_CASE("tls: config errors name the key, and the server refuses bad files with config_error") {
    const pki& p = test_pki();
    auto c = test_config();
    c.tls_cert = p.path("server-a.pem");
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("tls_key"), srv::config_error);
    c = test_config();
    c.tls_key = p.path("server-a.key");
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("tls_cert"), srv::config_error);
    c = test_config();
    c.tls_ca = p.path("ca.pem");
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("tls_ca"), srv::config_error);
    c = tls_config();
    c.port = 7500;
    c.tls_port = 7500;
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains("tls_port"), srv::config_error);
    CHECK_NOTHROW(tls_config(true).validate());

    // The files are read when the server is built.
    auto with = [&](const std::string& cert, const std::string& key, const std::string& ca) {
        auto t = tls_config();
        t.tls_cert = p.path(cert);
        t.tls_key = p.path(key);
        t.tls_ca = ca.empty() ? "" : p.path(ca);
        return t;
    };
    CHECK_THROWS_WITH_AS(srv::server{with("missing.pem", "server-a.key", "")},
                         doctest::Contains("tls_cert"), srv::config_error);
    CHECK_THROWS_WITH_AS(srv::server{with("garbage.pem", "server-a.key", "")},
                         doctest::Contains("tls_cert"), srv::config_error);
    CHECK_THROWS_WITH_AS(srv::server{with("server-a.pem", "garbage.pem", "")},
                         doctest::Contains("tls_key"), srv::config_error);
    CHECK_THROWS_WITH_AS(srv::server{with("server-a.pem", "server-b.key", "")},
                         doctest::Contains("tls_key"), srv::config_error);
    CHECK_THROWS_WITH_AS(srv::server{with("server-a.pem", "server-a.key", "garbage.pem")},
                         doctest::Contains("tls_ca"), srv::config_error);
    CHECK_THROWS_WITH_AS(srv::server{with("server-a.pem", "server-a.key", "missing.pem")},
                         doctest::Contains("tls_ca"), srv::config_error);

    // JSON, environment and the env-name list know the keys.
    srv::config j;
    srv::merge(j, nlohmann::json{{"tls_cert", "a.pem"}, {"tls_key", "a.key"}, {"tls_port", 9443}});
    CHECK(j.tls_cert == "a.pem");
    CHECK(j.tls_port == 9443);
    CHECK(srv::config_env_names().at("tls_ca") == "LARIV_TLS_CA");
    ::setenv("LARIV_TLS_LISTEN_ADDRESS", "::1", 1);
    srv::apply_environment(j);
    ::unsetenv("LARIV_TLS_LISTEN_ADDRESS");
    CHECK(j.tls_listen_address == "::1");
    CHECK(j.effective_tls_address() == "::1");
    CHECK(srv::config{}.effective_tls_address() == "127.0.0.1");
}

TEST_CASE("tls: larivd exits 78 on TLS configuration errors, naming the key") {
    const pki& p = test_pki();
    const std::string ports = " --port 0 --tls-port 0 --monitor-port 0 --log-level warn";
    std::string out;
    CHECK(run(larivd + " --tls-cert " + p.path("server-a.pem") + " --check-config", &out) == 78);
    CHECK(out.find("tls_key") != std::string::npos);
    CHECK(run(larivd + " --tls-key " + p.path("server-a.key") + " --check-config", &out) == 78);
    CHECK(out.find("tls_cert") != std::string::npos);
    // Unreadable or unparseable files: at --check-config and at start (timeout: a larivd that
    // wrongly started would otherwise run on).
    CHECK(run(larivd + " --tls-cert /nonexistent/cert.pem --tls-key " + p.path("server-a.key") +
                  " --check-config", &out) == 78);
    CHECK(out.find("tls_cert") != std::string::npos);
    CHECK(run("timeout 20 " + larivd + ports + " --tls-cert /nonexistent/cert.pem --tls-key " +
                  p.path("server-a.key"), &out) == 78);
    CHECK(out.find("tls_cert") != std::string::npos);
    CHECK(run("timeout 20 " + larivd + ports + " --tls-cert " + p.path("garbage.pem") + " --tls-key " +
                  p.path("server-a.key"), &out) == 78);
    CHECK(out.find("tls_cert") != std::string::npos);
    CHECK(run("env LARIV_TLS_CERT=" + p.path("server-a.pem") + " LARIV_TLS_KEY=" + p.path("server-a.key") +
                  " LARIV_TLS_CA=" + p.path("garbage.pem") + " " + larivd + " --check-config", &out) == 78);
    CHECK(out.find("tls_ca") != std::string::npos);
    CHECK(run("env LARIV_TLS_CERT=" + p.path("server-a.pem") + " LARIV_TLS_KEY=" + p.path("server-a.key") +
                  " " + larivd + " --check-config", &out) == 0);
}

TEST_CASE("tls: the larivd binary serves TLS beside plaintext and loads a new certificate on SIGHUP") {
    const pki& p = test_pki();
    p.copy("server-a.pem", "bin.pem");
    p.copy("server-a.key", "bin.key");
    const std::uint16_t port = free_port();
    std::uint16_t tport = free_port();
    while (tport == port) {
        tport = free_port();
    }
    const std::string log = p.path("larivd.log");
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        std::freopen(log.c_str(), "w", stderr);
        const std::string ps = std::to_string(port);
        const std::string ts = std::to_string(tport);
        const std::string cert = p.path("bin.pem");
        const std::string key = p.path("bin.key");
        ::execl(larivd.c_str(), larivd.c_str(), "--port", ps.c_str(), "--tls-port", ts.c_str(),
                "--monitor-port", "0", "--threads", "2", "--tls-cert", cert.c_str(), "--tls-key",
                key.c_str(), "--log-level", "info", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    struct reaper {
        pid_t pid;
        ~reaper() {
            if (pid > 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, nullptr, 0);
            }
        }
    } guard{pid};
    REQUIRE(eventually([&] { return client().try_connect(tport) && client().try_connect(port); },
                       scaled(10000ms)));

    client t = tls_hello(tport, client_ctx(), R"({"name":"tls"})");
    CHECK(t.peer_serial() == "A1");
    client plain(port);
    REQUIRE(plain.hello(R"({"name":"plain"})"));
    route(t, plain, "binary: TLS to plaintext", "a");
    route(plain, t, "binary: plaintext to TLS", "b");

    p.copy("server-b.pem", "bin.pem");
    p.copy("server-b.key", "bin.key");
    REQUIRE(::kill(pid, SIGHUP) == 0);
    std::string serial;
    CHECK(eventually(
        [&] {
            client c;
            if (!c.try_connect(tport) || !c.start_tls(client_ctx(), "localhost")) {
                return false;
            }
            serial = c.peer_serial();
            return serial == "B2";
        },
        scaled(5000ms)));
    CHECK(serial == "B2");
    CHECK(t.ping());  // the old connection keeps its certificate and works
    route(t, plain, "after reload", "c");

    REQUIRE(::kill(pid, SIGTERM) == 0);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    guard.pid = -1;
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    std::ifstream in(log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK_MESSAGE(text.find("larivd started") != std::string::npos, text);
    CHECK_MESSAGE(text.find(" tls=127.0.0.1:" + std::to_string(tport) + " ") != std::string::npos, text);
    CHECK_MESSAGE(text.find("TLS certificate") != std::string::npos, text);
}
