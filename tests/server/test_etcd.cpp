// The etcd v3 JSON-gateway client (lariv/server/detail/etcd.hpp) against a real etcd 3.4 started by
// the test (etcd_fixture.hpp: never skipped, a missing etcd fails loudly), plus scripted HTTP
// servers for the framing, limit and failure paths etcd does not show on demand.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>

#include "etcd_fixture.hpp"
#include "lariv/server/detail/etcd.hpp"

#ifndef LARIV_TIME_SCALE
#define LARIV_TIME_SCALE 1
#endif

namespace {

using namespace std::chrono_literals;
namespace d = lariv::server::detail;
using lariv::test::etcd_process;
using ms = std::chrono::milliseconds;

ms scaled(ms t) { return t * LARIV_TIME_SCALE; }

/// An io_context run by two threads; each client gets a strand of it (as the registry does).
struct io_runner {
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
    std::vector<std::thread> threads;
    io_runner() {
        for (int i = 0; i < 2; ++i) {
            threads.emplace_back([this] { io.run(); });
        }
    }
    ~io_runner() {
        work.reset();
        io.stop();
        for (auto& t : threads) {
            t.join();
        }
    }
    io_runner(const io_runner&) = delete;
    io_runner& operator=(const io_runner&) = delete;
    asio::any_io_executor strand() { return asio::make_strand(io); }
};

/// One completion: handler() for the call, get() waits for it. Counts calls (must be exactly 1).
template <class... T>
struct waiter {
    struct state {
        std::promise<std::tuple<T...>> p;
        std::atomic<int> calls{0};
    };
    std::shared_ptr<state> s = std::make_shared<state>();
    std::future<std::tuple<T...>> f = s->p.get_future();

    auto handler() {
        return [st = s](T... a) {
            if (st->calls.fetch_add(1) == 0) {
                st->p.set_value(std::tuple<T...>(std::move(a)...));
            }
        };
    }
    std::tuple<T...> get(ms t = 10s) {
        REQUIRE_MESSAGE(f.wait_for(scaled(t)) == std::future_status::ready, "no completion in time");
        auto v = f.get();
        CHECK(s->calls.load() == 1);
        return v;
    }
    [[nodiscard]] int calls() const { return s->calls.load(); }
};

/// A watch's deliveries, for the test thread to wait on.
struct watch_log {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<d::etcd_event> events;
    std::vector<std::int64_t> revisions;
    int ends = 0;
    std::error_code end_ec;

    auto on_events() {
        return [this](const std::vector<d::etcd_event>& ev, std::int64_t rev) {
            const std::lock_guard lk(mu);
            CHECK(ends == 0);  // never after on_end
            events.insert(events.end(), ev.begin(), ev.end());
            revisions.push_back(rev);
            cv.notify_all();
        };
    }
    auto on_end() {
        return [this](std::error_code ec) {
            const std::lock_guard lk(mu);
            ++ends;
            end_ec = ec;
            cv.notify_all();
        };
    }
    bool wait_events(std::size_t n, ms t) {
        std::unique_lock lk(mu);
        return cv.wait_for(lk, scaled(t), [&] { return events.size() >= n; });
    }
    bool wait_end(ms t) {
        std::unique_lock lk(mu);
        return cv.wait_for(lk, scaled(t), [&] { return ends > 0; });
    }
};

int listen_loopback(std::uint16_t& port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    return fd;
}

/// A one-connection HTTP server that reads the request, then writes `pieces` one by one (each a
/// separate send, `gap` apart) and closes.
class scripted_http {
public:
    explicit scripted_http(std::vector<std::string> pieces, ms gap = 1ms)
        : fd_(listen_loopback(port_)), pieces_(std::move(pieces)), gap_(gap), t_([this] { serve(); }) {}
    ~scripted_http() {
        t_.join();
        ::close(fd_);
    }
    scripted_http(const scripted_http&) = delete;
    scripted_http& operator=(const scripted_http&) = delete;
    [[nodiscard]] std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
    [[nodiscard]] std::string request() {
        t_done_.wait();
        return request_;
    }

private:
    void serve() {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, 10000) <= 0) {
            done_.set_value();
            return;
        }
        const int c = ::accept(fd_, nullptr, nullptr);
        // The request: headers, then Content-Length bytes.
        char buf[4096];
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (std::chrono::steady_clock::now() < deadline) {
            const auto he = request_.find("\r\n\r\n");
            if (he != std::string::npos) {
                const auto cl = request_.find("Content-Length: ");
                const std::size_t n = cl == std::string::npos ? 0 : std::stoul(request_.substr(cl + 16));
                if (request_.size() >= he + 4 + n) {
                    break;
                }
            }
            pollfd q{c, POLLIN, 0};
            if (::poll(&q, 1, 50) <= 0) {
                continue;
            }
            const ssize_t n = ::recv(c, buf, sizeof buf, 0);
            if (n <= 0) {
                break;
            }
            request_.append(buf, static_cast<std::size_t>(n));
        }
        for (const auto& piece : pieces_) {
            std::size_t off = 0;
            while (off < piece.size()) {
                const ssize_t n = ::send(c, piece.data() + off, piece.size() - off, MSG_NOSIGNAL);
                if (n <= 0) {
                    break;  // the client gave up (a limit): fine
                }
                off += static_cast<std::size_t>(n);
            }
            if (off < piece.size()) {
                break;
            }
            std::this_thread::sleep_for(gap_);
        }
        ::shutdown(c, SHUT_WR);
        std::this_thread::sleep_for(20ms);
        ::close(c);
        done_.set_value();
    }

    std::uint16_t port_ = 0;
    int fd_;
    std::vector<std::string> pieces_;
    ms gap_;
    std::string request_;
    std::promise<void> done_;
    std::shared_future<void> t_done_ = done_.get_future().share();
    std::thread t_;
};

/// Splits `s` into pieces of `n` bytes.
std::vector<std::string> split_every(const std::string& s, std::size_t n) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < s.size(); i += n) {
        out.push_back(s.substr(i, n));
    }
    return out;
}

std::string chunk(const std::string& data) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "%zx", data.size());
    return std::string(hex) + "\r\n" + data + "\r\n";
}

}  // namespace

TEST_CASE("etcd: base64 round trips, prefix_range_end and endpoint parsing") {
    CHECK(d::base64_encode("") == "");
    CHECK(d::base64_encode("f") == "Zg==");
    CHECK(d::base64_encode("fo") == "Zm8=");
    CHECK(d::base64_encode("foo") == "Zm9v");
    CHECK(d::base64_encode("a/x") == "YS94");
    std::string all;
    for (int i = 0; i < 256; ++i) {
        all += static_cast<char>(i);
    }
    for (std::size_t n = 0; n <= all.size(); n += 17) {
        const std::string s = all.substr(0, n) + all.substr(0, n % 3);
        const auto back = d::base64_decode(d::base64_encode(s));
        REQUIRE(back.has_value());
        CHECK(*back == s);
    }
    CHECK(d::base64_decode("") == std::string());
    CHECK(d::base64_decode("MQ==") == std::string("1"));
    CHECK_FALSE(d::base64_decode("MQ=").has_value());    // length
    CHECK_FALSE(d::base64_decode("M===").has_value());   // padding too early
    CHECK_FALSE(d::base64_decode("MQ==MQ==").has_value());
    CHECK_FALSE(d::base64_decode("M=Q=").has_value());
    CHECK_FALSE(d::base64_decode("ab!d").has_value());
    CHECK_FALSE(d::base64_decode("abc\n").has_value());

    CHECK(d::prefix_range_end("a/") == "a0");
    CHECK(d::prefix_range_end("a") == "b");
    CHECK(d::prefix_range_end(std::string("a\xff", 2)) == "b");
    CHECK(d::prefix_range_end(std::string("\xff\xff", 2)) == std::string(1, '\0'));
    CHECK(d::prefix_range_end("") == std::string(1, '\0'));

    io_runner r;
    for (const char* bad : {"", "127.0.0.1:2379", "https://127.0.0.1:2379", "http://127.0.0.1", "http://127.0.0.1:",
                            "http://127.0.0.1:0", "http://127.0.0.1:65536", "http://127.0.0.1:12x", "http://[::1:2379",
                            "http://[nope]:2379", "http://::1:2379", "http://a b:2379", "http://:2379",
                            "http://h:1/v3"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS((void)d::etcd_client::create(r.strand(), bad), std::invalid_argument);
    }
    for (const char* good : {"http://127.0.0.1:2379", "http://[::1]:2379", "http://localhost:2379/", "HTTP://etcd-0.x:1"}) {
        CAPTURE(good);
        CHECK(d::etcd_client::create(r.strand(), good)->endpoint() == good);
    }
    CHECK(d::make_error_code(d::etcd_errc::bad_response).category() == d::etcd_category());
    const std::error_code ec = d::etcd_errc::http_status;
    CHECK(ec == d::etcd_errc::http_status);
}

TEST_CASE("etcd: lease, put_if_absent, keepalive, revoke and range against a real etcd") {
    etcd_process etcd;
    io_runner r;
    auto c = d::etcd_client::create(r.strand(), etcd.endpoint());

    waiter<std::error_code, std::int64_t> g;
    c->grant(10s, g.handler());
    const auto [gec, lease] = g.get();
    REQUIRE_MESSAGE(!gec, c->last_error());
    CHECK(lease != 0);

    waiter<std::error_code, bool, std::optional<d::etcd_kv>> p1;
    c->put_if_absent("svc/a", "first", lease, p1.handler());
    const auto [p1ec, created1, holder1] = p1.get();
    REQUIRE_MESSAGE(!p1ec, c->last_error());
    CHECK(created1);
    CHECK_FALSE(holder1.has_value());

    waiter<std::error_code, bool, std::optional<d::etcd_kv>> p2;
    c->put_if_absent("svc/a", "second", 0, p2.handler());
    const auto [p2ec, created2, holder2] = p2.get();
    REQUIRE_MESSAGE(!p2ec, c->last_error());
    CHECK_FALSE(created2);
    REQUIRE(holder2.has_value());
    CHECK(holder2->key == "svc/a");
    CHECK(holder2->value == "first");
    CHECK(holder2->lease == lease);
    CHECK(holder2->create_revision > 0);
    CHECK(holder2->mod_revision == holder2->create_revision);

    // A key outside the prefix and a second key inside, by a client that resolves a name.
    auto byname = d::etcd_client::create(r.strand(), "http://localhost:" + std::to_string(etcd.client_port()));
    waiter<std::error_code, bool, std::optional<d::etcd_kv>> p3;
    byname->put_if_absent("svc0", "outside", 0, p3.handler());
    REQUIRE_MESSAGE(!std::get<0>(p3.get()), byname->last_error());
    waiter<std::error_code, bool, std::optional<d::etcd_kv>> p4;
    byname->put_if_absent("svc/b", std::string("bin\0\xff", 5), 0, p4.handler());
    REQUIRE_MESSAGE(!std::get<0>(p4.get()), byname->last_error());

    waiter<std::error_code, std::vector<d::etcd_kv>, std::int64_t> rg;
    c->range_prefix("svc/", rg.handler());
    const auto [rec, kvs, rev] = rg.get();
    REQUIRE_MESSAGE(!rec, c->last_error());
    REQUIRE(kvs.size() == 2);
    CHECK(kvs[0].key == "svc/a");
    CHECK(kvs[0].value == "first");
    CHECK(kvs[1].key == "svc/b");
    CHECK(kvs[1].value == std::string("bin\0\xff", 5));
    CHECK(kvs[1].lease == 0);
    CHECK(rev >= kvs[1].mod_revision);

    waiter<std::error_code, std::int64_t> k1;
    c->keepalive(lease, k1.handler());
    const auto [k1ec, ttl1] = k1.get();
    REQUIRE_MESSAGE(!k1ec, c->last_error());
    CHECK(ttl1 > 0);
    CHECK(ttl1 <= 10);

    waiter<std::error_code> rv;
    c->revoke(lease, rv.handler());
    REQUIRE_MESSAGE(!std::get<0>(rv.get()), c->last_error());

    waiter<std::error_code, std::int64_t> k2;
    c->keepalive(lease, k2.handler());
    const auto [k2ec, ttl2] = k2.get();
    REQUIRE_MESSAGE(!k2ec, c->last_error());
    CHECK(ttl2 == 0);

    // The lease's key went with it; the other stayed.
    waiter<std::error_code, std::vector<d::etcd_kv>, std::int64_t> rg2;
    c->range_prefix("svc/", rg2.handler());
    const auto [rec2, kvs2, rev2] = rg2.get();
    REQUIRE(!rec2);
    REQUIRE(kvs2.size() == 1);
    CHECK(kvs2[0].key == "svc/b");
    CHECK(rev2 > rev);

    // Revoking an unknown lease: etcd's 404 with its text.
    waiter<std::error_code> rv2;
    c->revoke(lease, rv2.handler());
    const auto [rv2ec] = rv2.get();
    CHECK(rv2ec == d::etcd_errc::http_status);
    CHECK(c->last_error().find("lease not found") != std::string::npos);

    // A raw call, and a path the gateway does not know.
    waiter<std::error_code, nlohmann::json> raw;
    c->call("/v3/kv/range", {{"key", d::base64_encode("svc/b")}}, 2s, raw.handler());
    const auto [rawec, rawj] = raw.get();
    REQUIRE(!rawec);
    CHECK(rawj["count"] == "1");
    waiter<std::error_code, nlohmann::json> nf;
    c->call("/v3/nope", nlohmann::json::object(), 2s, nf.handler());
    CHECK(std::get<0>(nf.get()) == d::etcd_errc::http_status);
    CHECK(c->last_error().find("404") != std::string::npos);
}

TEST_CASE("etcd: a watch sees puts and deletes, ends on cancel and when etcd stops") {
    etcd_process etcd;
    io_runner r;
    auto c = d::etcd_client::create(r.strand(), etcd.endpoint());

    waiter<std::error_code, std::vector<d::etcd_kv>, std::int64_t> rg;
    c->range_prefix("w/", rg.handler());
    const auto [rec, kvs, rev] = rg.get();
    REQUIRE(!rec);
    CHECK(kvs.empty());
    CHECK(rev > 0);

    watch_log log;
    auto w = c->watch_prefix("w/", rev + 1, log.on_events(), log.on_end());

    waiter<std::error_code, bool, std::optional<d::etcd_kv>> p;
    c->put_if_absent("w/a", "hello", 0, p.handler());
    REQUIRE(std::get<1>(p.get()));
    waiter<std::error_code, bool, std::optional<d::etcd_kv>> outside;
    c->put_if_absent("w0", "not watched", 0, outside.handler());
    REQUIRE(std::get<1>(outside.get()));
    waiter<std::error_code> del;
    c->delete_key("w/a", del.handler());
    REQUIRE(!std::get<0>(del.get()));

    REQUIRE_MESSAGE(log.wait_events(2, 5s), "the watch saw no put and delete within 5 s: " << c->last_error());
    {
        const std::lock_guard lk(log.mu);
        REQUIRE(log.events.size() == 2);
        CHECK(log.events[0].type == d::etcd_event::kind::put);
        CHECK(log.events[0].kv.key == "w/a");
        CHECK(log.events[0].kv.value == "hello");
        CHECK(log.events[0].kv.create_revision == rev + 1);
        CHECK(log.events[1].type == d::etcd_event::kind::del);
        CHECK(log.events[1].kv.key == "w/a");
        CHECK(log.events[1].kv.mod_revision > log.events[0].kv.mod_revision);
        CHECK(log.revisions.front() > rev);
        CHECK(log.ends == 0);
    }

    w->cancel();
    REQUIRE(log.wait_end(5s));
    {
        const std::lock_guard lk(log.mu);
        CHECK(log.end_ec == asio::error::operation_aborted);
    }
    w->cancel();  // again: nothing more happens

    // client->cancel() ends every watch and call of the client.
    watch_log log2;
    auto w2 = c->watch_prefix("", 0, log2.on_events(), log2.on_end());
    std::this_thread::sleep_for(100ms);
    c->cancel();
    REQUIRE(log2.wait_end(5s));
    CHECK(log2.end_ec == asio::error::operation_aborted);

    // etcd going away ends a watch with an error (not operation_aborted); after a restart on the
    // same ports and data dir, calls work again and the data is still there.
    watch_log log3;
    auto w3 = c->watch_prefix("w", 0, log3.on_events(), log3.on_end());
    std::this_thread::sleep_for(200ms);
    etcd.stop();
    REQUIRE(log3.wait_end(10s));
    CHECK(log3.end_ec);
    CHECK(log3.end_ec != asio::error::operation_aborted);
    MESSAGE("a watch ended by etcd's SIGTERM: " << log3.end_ec.message() << " / " << c->last_error());

    etcd.restart();
    waiter<std::error_code, std::vector<d::etcd_kv>, std::int64_t> rg2;
    c->range_prefix("w0", rg2.handler());
    const auto [rec2, kvs2, rev2] = rg2.get();
    REQUIRE_MESSAGE(!rec2, c->last_error());
    REQUIRE(kvs2.size() == 1);
    CHECK(kvs2[0].value == "not watched");
    CHECK(log.ends == 1);
    CHECK(log2.ends == 1);
    CHECK(log3.ends == 1);
}

TEST_CASE("etcd: failures are bounded: refused, silent server, timeout, cancel, client dropped") {
    io_runner r;
    // Nothing listens: a port bound a moment ago, then closed.
    std::uint16_t dead_port = 0;
    ::close(listen_loopback(dead_port));
    auto refused = d::etcd_client::create(r.strand(), "http://127.0.0.1:" + std::to_string(dead_port));
    waiter<std::error_code, std::int64_t> g;
    const auto t0 = std::chrono::steady_clock::now();
    refused->grant(5s, g.handler());
    const auto [gec, id] = g.get(5s);
    CHECK(gec == asio::error::connection_refused);
    CHECK(id == 0);
    CHECK(std::chrono::steady_clock::now() - t0 < scaled(2s));
    CHECK_FALSE(refused->last_error().empty());

    // A server that accepts (the kernel completes the handshake: listen() with no accept) and
    // never answers: the call's 200 ms bound.
    std::uint16_t silent_port = 0;
    const int silent = listen_loopback(silent_port);
    auto c = d::etcd_client::create(r.strand(), "http://127.0.0.1:" + std::to_string(silent_port));
    waiter<std::error_code, nlohmann::json> t;
    const auto t1 = std::chrono::steady_clock::now();
    c->call("/v3/kv/range", {{"key", "YQ=="}}, 200ms, t.handler());
    const auto [tec, tj] = t.get(5s);
    const auto took = std::chrono::steady_clock::now() - t1;
    CHECK(tec == asio::error::timed_out);
    CHECK(took >= 190ms);
    CHECK(took < scaled(2s));

    // cancel() aborts a pending call and a watch that is still connecting.
    waiter<std::error_code, nlohmann::json> pending;
    c->call("/v3/kv/range", {{"key", "YQ=="}}, 30s, pending.handler());
    watch_log log;
    auto w = c->watch_prefix("a/", 0, log.on_events(), log.on_end());
    std::this_thread::sleep_for(50ms);
    c->cancel();
    CHECK(std::get<0>(pending.get(5s)) == asio::error::operation_aborted);
    REQUIRE(log.wait_end(5s));
    CHECK(log.end_ec == asio::error::operation_aborted);

    // Dropping the client's last shared_ptr while a call is pending: the call still completes.
    waiter<std::error_code, nlohmann::json> orphan;
    {
        auto tmp = d::etcd_client::create(r.strand(), "http://127.0.0.1:" + std::to_string(silent_port));
        tmp->call("/v3/kv/range", {{"key", "YQ=="}}, 200ms, orphan.handler());
    }
    CHECK(std::get<0>(orphan.get(5s)) == asio::error::timed_out);
    ::close(silent);
}

TEST_CASE("etcd: HTTP framing: chunked in 1-byte pieces, read-until-EOF, errors and the 4 MiB limit") {
    io_runner r;
    const std::string chunked_head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    {
        scripted_http s(split_every("HTTP/1.1 100 Continue\r\n\r\n" + chunked_head + chunk("{\"a\":") +
                                        "3;ext=1\r\n\"x\"\r\n" + chunk("}\n") + "0\r\nTrailer-X: v\r\n\r\n",
                                    1),
                        0ms);
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        waiter<std::error_code, nlohmann::json> w;
        c->call("/v3/x", {{"ID", "7"}}, 5s, w.handler());
        const auto [ec, j] = w.get();
        REQUIRE_MESSAGE(!ec, c->last_error());
        CHECK(j == nlohmann::json{{"a", "x"}});
        const std::string req = s.request();
        CHECK(req.rfind("POST /v3/x HTTP/1.1\r\n", 0) == 0);
        CHECK(req.find("\r\nConnection: close\r\n") != std::string::npos);
        CHECK(req.find("\r\n\r\n{\"ID\":\"7\"}") != std::string::npos);
    }
    {
        scripted_http s({"HTTP/1.0 200 OK\r\n\r\n{\"b\":", "1}"});
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        waiter<std::error_code, nlohmann::json> w;
        c->call("/v3/x", {}, 5s, w.handler());
        const auto [ec, j] = w.get();
        REQUIRE_MESSAGE(!ec, c->last_error());
        CHECK(j == nlohmann::json{{"b", 1}});
    }
    {
        scripted_http s({"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\nno leader.\r\n"});
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        waiter<std::error_code, nlohmann::json> w;
        c->call("/v3/x", {}, 5s, w.handler());
        CHECK(std::get<0>(w.get()) == d::etcd_errc::http_status);
        CHECK(c->last_error().find("503") != std::string::npos);
        CHECK(c->last_error().find("no leader.") != std::string::npos);
    }
    for (const std::string& bad : {std::string("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{nope"),
                                   std::string("HELLO\r\n\r\n"),
                                   std::string("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}"),  // truncated
                                   chunked_head + "zz\r\n{}\r\n0\r\n\r\n",
                                   std::string("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n[1]")}) {
        CAPTURE(bad);
        scripted_http s({bad});
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        waiter<std::error_code, std::vector<d::etcd_kv>, std::int64_t> w;  // [1] is JSON, not a range answer
        c->range_prefix("a", w.handler());
        CHECK(std::get<0>(w.get()) == d::etcd_errc::bad_response);
        CHECK_FALSE(c->last_error().empty());
    }
    {
        // A field of the wrong type, and bad base64: bad_response, not a crash or a default.
        const std::string body = R"({"kvs":[{"key":"!!"}],"x":1})";
        scripted_http s({"HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body});
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        waiter<std::error_code, std::vector<d::etcd_kv>, std::int64_t> w;
        c->range_prefix("a", w.handler());
        CHECK(std::get<0>(w.get()) == d::etcd_errc::bad_response);
        CHECK(c->last_error().find("base64") != std::string::npos);
    }
    {
        const std::string big(5u << 20, ' ');
        scripted_http s({"HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(big.size() + 2) + "\r\n\r\n{" + big + "}"});
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        waiter<std::error_code, nlohmann::json> w;
        c->call("/v3/x", {}, 10s, w.handler());
        CHECK(std::get<0>(w.get()) == d::etcd_errc::bad_response);
        CHECK(c->last_error().find("4 MiB") != std::string::npos);
    }
}

TEST_CASE("etcd: watch stream framing: lines across chunks, several per chunk, compaction, cancel, limits") {
    io_runner r;
    const std::string head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string created = R"({"result":{"header":{"revision":"3"},"created":true}})";
    const std::string put = R"({"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"YS94","create_revision":"4","mod_revision":"4","version":"1","value":"MQ=="}}]}})";
    const std::string del = R"({"result":{"header":{"revision":"5"},"events":[{"type":"DELETE","kv":{"key":"YS94","mod_revision":"5"}}]}})";
    const std::string compacted = R"({"result":{"header":{},"canceled":true,"compact_revision":"5"}})";
    {
        const std::string lines = created + "\n" + put + "\n" + del + "\n";
        const std::size_t cut = created.size() + 10;  // a chunk ends inside the put line
        scripted_http s({head + chunk(lines.substr(0, cut)), chunk(lines.substr(cut)), chunk(compacted + "\n")}, 20ms);
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        watch_log log;
        auto w = c->watch_prefix("a/", 4, log.on_events(), log.on_end());
        REQUIRE(log.wait_end(5s));
        const std::lock_guard lk(log.mu);
        CHECK(log.end_ec == d::etcd_errc::compacted);
        REQUIRE(log.events.size() == 2);
        CHECK(log.events[0].type == d::etcd_event::kind::put);
        CHECK(log.events[0].kv.value == "1");
        CHECK(log.events[1].type == d::etcd_event::kind::del);
        CHECK(log.events[1].kv.key == "a/x");
        CHECK(log.events[1].kv.value.empty());
        CHECK(log.revisions == std::vector<std::int64_t>{4, 5});
        CHECK(s.request().find(R"({"create_request":{"key":"YS8=","range_end":"YTA=","start_revision":"4"}})") !=
              std::string::npos);
    }
    {
        scripted_http s({head + chunk(created + "\n" + R"({"result":{"canceled":true,"cancel_reason":"no"}})" + "\n")});
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        watch_log log;
        auto w = c->watch_prefix("a/", 0, log.on_events(), log.on_end());
        REQUIRE(log.wait_end(5s));
        CHECK(log.end_ec == d::etcd_errc::watch_canceled);
        CHECK(c->last_error().find("no") != std::string::npos);
    }
    {
        // The stream ends cleanly (the last chunk): eof, after the events.
        scripted_http s({head + chunk(created + "\n" + put), chunk("\n") + "0\r\n\r\n"});
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        watch_log log;
        auto w = c->watch_prefix("a/", 0, log.on_events(), log.on_end());
        REQUIRE(log.wait_end(5s));
        CHECK(log.end_ec == asio::error::eof);
        CHECK(log.events.size() == 1);
    }
    {
        // One line over 4 MiB: bad_response, memory bounded.
        std::vector<std::string> pieces{head};
        for (int i = 0; i < 5; ++i) {
            pieces.push_back(chunk(std::string(1u << 20, 'x')));
        }
        scripted_http s(pieces);
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        watch_log log;
        auto w = c->watch_prefix("a/", 0, log.on_events(), log.on_end());
        REQUIRE(log.wait_end(10s));
        CHECK(log.end_ec == d::etcd_errc::bad_response);
    }
    {
        // A non-200 answer to a watch.
        const std::string body = R"({"error":"bad key","message":"bad key","code":3})";
        scripted_http s({"HTTP/1.1 400 Bad Request\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body});
        auto c = d::etcd_client::create(r.strand(), s.endpoint());
        watch_log log;
        auto w = c->watch_prefix("a/", 0, log.on_events(), log.on_end());
        REQUIRE(log.wait_end(5s));
        CHECK(log.end_ec == d::etcd_errc::http_status);
        CHECK(c->last_error().find("bad key") != std::string::npos);
    }
}
