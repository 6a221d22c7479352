// The registry as an embedded Asio library (issue 9): lifetime, admission order, routing rules,
// throwing hooks, async_shutdown with each completion token, any stream, host sessions, the
// SIGHUP fd clamp and the monitor's limits. Each case reproduces a defect of the old main; they
// run under ASan+UBSan and TSan in CI like every other case.
#include <doctest/doctest.h>

#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include "support.hpp"
#include "lariv/server/monitor.hpp"

namespace lariv::test {
namespace {

using proto::error_code;
using kind = frame::kind;

srv::registry_options lib_options() {
    srv::registry_options o;
    o.node_id = 9;
    o.heartbeat_ms = 0;
    o.handshake_timeout_ms = 3000;
    o.max_queue_bytes = 16 << 20;  // room for stuck_client's backlog
    o.write_deadline_ms = 60000;   // a stuck write stays stuck for the whole test
    return o;
}

/// A host as an embedder writes one: its own io_context and threads, its own acceptor handing
/// sockets to registry::adopt, the registry held where the host can destroy it at any moment.
class embed_host {
public:
    explicit embed_host(srv::registry_options o = lib_options(), srv::hooks h = {}, unsigned threads = 2)
        : work_(asio::make_work_guard(io_))
        , reg_(std::make_unique<srv::registry>(io_.get_executor(), o, std::move(h)))
        , acceptor_(strand_, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {
        port_ = acceptor_.local_endpoint().port();
        accept();
        for (unsigned i = 0; i < threads; ++i) {
            threads_.emplace_back([this] { io_.run(); });
        }
    }
    ~embed_host() {
        stop_accepting();
        stop_io();
        reg_.reset();
    }
    embed_host(const embed_host&) = delete;
    embed_host& operator=(const embed_host&) = delete;

    srv::registry& reg() { return *reg_; }
    std::uint16_t port() const { return port_; }
    asio::io_context& io() { return io_; }
    /// Closes the acceptor on its own thread and waits, so nothing adopts any more.
    void stop_accepting() {
        if (!accepting_.exchange(false)) {
            return;
        }
        std::promise<void> done;
        asio::post(strand_, [&] {  // the acceptor's strand: never at once with accept()'s handler
            std::error_code ec;
            acceptor_.close(ec);
            done.set_value();
        });
        if (threads_.empty()) {
            io_.restart();
            io_.poll();
        }
        done.get_future().wait();
    }
    void destroy_registry() { reg_.reset(); }
    void stop_io() {
        work_.reset();
        io_.stop();
        for (auto& t : threads_) {
            t.join();
        }
        threads_.clear();
    }
    client connect_hello(const std::string& json = {}) {
        client c(port_);
        if (!c.hello(json)) {
            throw std::runtime_error("HELLO failed: " + c.last_failure());
        }
        return c;
    }

private:
    void accept() {
        // The socket goes onto the io_context's executor (registry::adopt wraps it in a strand of
        // its own); the handler runs on the acceptor's strand.
        acceptor_.async_accept(io_, [this](std::error_code ec, asio::ip::tcp::socket s) {
            if (ec) {
                return;
            }
            reg_->adopt(std::move(s));
            accept();
        });
    }

    asio::io_context io_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::unique_ptr<srv::registry> reg_;
    asio::strand<asio::io_context::executor_type> strand_{asio::make_strand(io_)};
    asio::ip::tcp::acceptor acceptor_;
    std::atomic<bool> accepting_{true};
    std::uint16_t port_ = 0;
    std::vector<std::thread> threads_;
};

/// A session that never HELLOs is visible (handshaking) but not routable: its id, from for_each.
std::optional<proto::session_id> first_unhandshaken(srv::registry& reg) {
    std::optional<proto::session_id> id;
    reg.for_each([&](srv::session_base& s) {
        if (s.state() == srv::session_state::handshaking) {
            id = s.id();
            return false;
        }
        return true;
    });
    return id;
}

/// A client that never reads, with a small window, and 6 MiB routed to it: more than the kernel
/// buffers hold, so the server's write to it stalls and its session lingers when closed.
client stuck_client(embed_host& h, client& feeder) {
    client slow(h.port(), 4096);
    REQUIRE(slow.hello());
    const std::string payload(64 << 10, 'x');
    for (int round = 0; round < 4; ++round) {
        std::string batch;
        for (int i = 0; i < 24; ++i) {
            client::append_send(batch, slow.id(), payload);
        }
        feeder.send_raw(batch);
    }
    REQUIRE(feeder.ping(scaled(5000ms)));
    REQUIRE(eventually(
        [&] {
            auto s = h.reg().find(slow.id());
            return s && s->queued_bytes() > (1U << 20);
        },
        scaled(2000ms)));
    return slow;
}

/// async_shutdown's result through a plain callback. (use_future reports errors as exceptions,
/// and TSan cannot see the exception refcount inside the uninstrumented libstdc++, so the error
/// cases use this; use_future itself is exercised on the success path.)
std::future<std::error_code> shutdown_result(srv::registry& reg, std::chrono::milliseconds grace) {
    auto p = std::make_shared<std::promise<std::error_code>>();
    auto f = p->get_future();
    reg.async_shutdown(grace, [p](std::error_code ec) { p->set_value(ec); });
    return f;
}

}  // namespace

TEST_SUITE("library") {

// ---------------------------------------------------------------------- 1. lifetime by design

TEST_CASE("destroying the registry while its io_context runs: sessions linger, timers fire later, no use after free") {
    auto o = lib_options();
    // Timers that fire after the registry is gone. Deadlines are exact now (no 250 ms tick), so
    // the silent clients must outlive the set-up below even under the sanitizers.
    o.handshake_timeout_ms = 300 * time_scale;
    embed_host h(o);
    std::vector<client> live;
    for (int i = 0; i < 8; ++i) {
        live.push_back(h.connect_hello());
    }
    std::vector<client> silent;  // never HELLO: their handshake deadline fires later
    for (int i = 0; i < 4; ++i) {
        silent.emplace_back(h.port());
    }
    client slow = stuck_client(h, live[0]);
    REQUIRE(h.reg().kick(slow.id()));  // lingers: its final -ERR cannot be written
    REQUIRE(eventually([&] { return h.reg().size() == 12; }, scaled(2000ms)));  // 8 live + 4 handshaking
    h.stop_accepting();
    h.destroy_registry();  // the io_context goes on running the sessions' handlers
    std::this_thread::sleep_for(scaled(300ms));
    // Every connection is closed by the server, promptly.
    for (auto& c : live) {
        CHECK(c.wait_closed(scaled(2000ms)));
    }
    for (auto& c : silent) {
        CHECK(c.wait_closed(scaled(2000ms)));
    }
    slow.close();
    h.stop_io();
}

TEST_CASE("destroying the registry after its io_context stopped, then running the context again") {
    embed_host h;
    std::vector<client> live;
    for (int i = 0; i < 6; ++i) {
        live.push_back(h.connect_hello());
    }
    client slow = stuck_client(h, live[0]);
    REQUIRE(h.reg().kick(live[1].id()));
    h.stop_accepting();
    h.stop_io();
    h.destroy_registry();
    // The handlers that were queued, and those the closes post now, run with the core alive.
    h.io().restart();
    h.io().run_for(scaled(500ms));
    for (std::size_t i = 2; i < live.size(); ++i) {
        CHECK(live[i].wait_closed(scaled(2000ms)));
    }
}

TEST_CASE("destroying the registry and then the io_context without running it again leaks nothing") {
    // LeakSanitizer (ASan build) checks the core -> session -> core cycle is broken.
    std::vector<client> live;
    {
        embed_host h;
        for (int i = 0; i < 5; ++i) {
            live.push_back(h.connect_hello());
        }
        h.stop_accepting();
        h.stop_io();
        h.destroy_registry();
    }  // ~io_context destroys the queued handlers and, with them, the last sessions
    for (auto& c : live) {
        CHECK(c.wait_closed(scaled(2000ms)));
    }
}

// ------------------------------------------------------------ 2. visible only when complete

#ifdef LARIV_TEST_SEAMS
TEST_CASE("a session adopted while drain() walks the registry is drained, not left waiting") {
    embed_host h;
    std::atomic<bool> once{false};
    srv::testing::set_after_publish([&] {
        if (!once.exchange(true)) {
            h.reg().drain();  // in the window between publish and visibility
        }
    });
    client c(h.port());
    const auto t0 = std::chrono::steady_clock::now();
    frame last;
    CHECK(c.wait_closed(scaled(2000ms), &last));  // told at once, not after drain_timeout_ms (8 s)
    srv::testing::set_after_publish(nullptr);
    CHECK(last.is_err(error_code::draining));
    CHECK(std::chrono::steady_clock::now() - t0 < scaled(2000ms));
    CHECK(eventually([&] { return h.reg().size() == 0 && h.reg().open_connections() == 0; }, scaled(2000ms)));
}

TEST_CASE("close_all and for_each racing an adopt never see a half-built session, none stays registered") {
    embed_host h;
    std::atomic<int> visited_in_window{0};
    std::atomic<bool> armed{true};
    srv::testing::set_after_publish([&] {
        if (!armed.load()) {
            return;
        }
        h.reg().for_each([&](srv::session_base&) {
            visited_in_window.fetch_add(1);
            return true;
        });
        h.reg().close_all(srv::close_reason::kicked);
    });
    std::vector<client> cs;
    for (int i = 0; i < 20; ++i) {
        cs.emplace_back(h.port());
        REQUIRE(cs.back().hello());  // close_all ran for the *earlier* sessions only
        armed.store(i % 2 == 0);
    }
    armed.store(false);
    srv::testing::set_after_publish(nullptr);
    for (auto& c : cs) {
        c.send_raw("QUIT\r\n");
        c.close();
    }
    // The old main left closed sessions registered forever here (size, for_each and
    // max_sessions counted them).
    CHECK(eventually([&] { return h.reg().size() == 0 && h.reg().open_connections() == 0; }, scaled(3000ms)));
    std::size_t n = 0;
    h.reg().for_each([&](srv::session_base&) {
        ++n;
        return true;
    });
    CHECK(n == 0);
}
#endif

// ------------------------------------------------------------------- 3. routable after HELLO

TEST_CASE("a connection that has not said HELLO receives nothing, and INFO and SEND agree it is not there") {
    auto o = lib_options();
    o.auth_token = "secret";
    embed_host h(o);
    client anon(h.port());  // never authenticates
    REQUIRE(eventually([&] { return first_unhandshaken(h.reg()).has_value(); }, scaled(2000ms)));
    const auto anon_id = *first_unhandshaken(h.reg());
    client b = h.connect_hello(R"({"auth":"secret"})");
    b.send_to(anon_id, "for your eyes only", "t1");
    frame f = b.skip_events();
    REQUIRE_MESSAGE(f.what == kind::ack, f.describe());
    REQUIRE(f.ack_error.has_value());
    const auto send_answer = *f.ack_error;
    CHECK((send_answer == error_code::unknown_session || send_answer == error_code::stale_session));
    b.send_raw("INFO " + anon_id.to_string() + "\r\n");
    f = b.skip_events();
    CHECK(f.is_err(send_answer));  // INFO and SEND give the same verdict
    CHECK(h.reg().send(anon_id, b.id(), "direct") == send_answer);
    // The unauthenticated connection got no MSG.
    std::vector<frame> before;
    REQUIRE(anon.ping(scaled(2000ms), &before));
    for (auto& fr : before) {
        CHECK_MESSAGE(fr.what != kind::msg, fr.describe());
    }
}

TEST_CASE("session ids are not predictable from one another, yet decode exactly") {
    embed_host h;
    std::vector<proto::session_id> ids;
    std::vector<client> cs;
    for (int i = 0; i < 32; ++i) {
        cs.push_back(h.connect_hello());
        ids.push_back(cs.back().id());
    }
    int plain = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
        const auto idx = h.reg().index_of(ids[i]);
        REQUIRE(idx.has_value());
        CHECK(idx->generation() != 0);
        CHECK(h.reg().find(ids[i]) != nullptr);
        // The wire id's low half is not "generation | slot" (the old, guessable layout).
        plain += (ids[i].lo == idx->lo) ? 1 : 0;
        if (i > 0) {
            CHECK(ids[i].lo != ids[i - 1].lo + 1);
        }
    }
    CHECK(plain == 0);
    // A neighbour of a real id is not a session.
    const proto::session_id guess{ids[0].hi, ids[0].lo + 1};
    CHECK(h.reg().find(guess) == nullptr);
}

// ------------------------------------------------------------------------- 4. throwing hooks

TEST_CASE("an on_open hook that throws closes that session with host_error, others are untouched") {
    srv::hooks hk;
    hk.on_open = [](srv::session& s) {
        if (s.name() == "bad") {
            throw std::runtime_error("host bug");
        }
    };
    embed_host h(lib_options(), hk);
    client good = h.connect_hello(R"({"name":"good"})");
    client bad(h.port());
    bad.send_raw(R"(HELLO {"name":"bad"})" "\r\n");
    frame last;
    CHECK(bad.wait_closed(scaled(2000ms), &last));
    CHECK(last.is_err(error_code::internal));
    CHECK(good.ping());
    CHECK(h.reg().stats().host_errors.load() == 1);
    CHECK(h.reg().stats().closed[static_cast<std::size_t>(srv::close_reason::host_error)].load() == 1);
}

TEST_CASE("an on_message hook that throws answers the SEND and closes only the sender") {
    srv::hooks hk;
    hk.on_message = [](srv::session&, proto::session_id, std::string_view payload) {
        if (payload == "boom") {
            throw std::logic_error("host bug");
        }
        return true;
    };
    embed_host h(lib_options(), hk);
    client rx = h.connect_hello();
    client tx = h.connect_hello();
    tx.send_to(rx.id(), "fine", "t1");
    CHECK(tx.skip_events().is_ack_ok("t1"));
    tx.send_to(rx.id(), "boom", "t2");
    frame f = tx.skip_events();
    CHECK(f.what == kind::ack);
    CHECK(f.ack_error == error_code::internal);
    CHECK(tx.wait_closed(scaled(2000ms)));
    frame m = rx.next_skip_ping();
    CHECK(m.what == kind::msg);
    CHECK(m.text == "fine");
    CHECK(rx.ping());
}

TEST_CASE("an on_close hook that throws: the kicked client is still told and disconnected, drain ends at once") {
    srv::hooks hk;
    hk.on_close = [](srv::session&, srv::close_reason) { throw std::runtime_error("host bug in on_close"); };
    embed_host h(lib_options(), hk);
    client a = h.connect_hello();
    client b = h.connect_hello();
    REQUIRE(h.reg().kick(a.id()));
    frame last;
    CHECK(a.wait_closed(scaled(2000ms), &last));
    CHECK(last.is_err(error_code::not_authorized));  // "kicked"
    b.send_raw("QUIT\r\n");
    CHECK(b.wait_closed(scaled(2000ms)));
    CHECK(eventually([&] { return h.reg().open_connections() == 0; }, scaled(2000ms)));
    const auto t0 = std::chrono::steady_clock::now();
    auto done = h.reg().async_shutdown(std::chrono::seconds(8), asio::use_future);
    REQUIRE(done.wait_for(scaled(2000ms)) == std::future_status::ready);
    CHECK_NOTHROW(done.get());  // use_future: an error would be thrown
    CHECK(std::chrono::steady_clock::now() - t0 < scaled(1000ms));
    CHECK(h.reg().stats().host_errors.load() == 2);
}

// ------------------------------------------------------------------------ 6. async_shutdown

TEST_CASE("async_shutdown with a callback: every session is told, flushed and closed before it completes") {
    embed_host h;
    std::vector<client> cs;
    for (int i = 0; i < 5; ++i) {
        cs.push_back(h.connect_hello());
    }
    std::promise<std::pair<std::error_code, std::size_t>> p;
    h.reg().async_shutdown(std::chrono::seconds(5), [&](std::error_code ec) {
        p.set_value({ec, h.reg().open_connections()});
    });
    auto f = p.get_future();
    REQUIRE(f.wait_for(scaled(3000ms)) == std::future_status::ready);
    const auto [ec, open] = f.get();
    CHECK(!ec);
    CHECK(open == 0);
    for (auto& c : cs) {
        frame last;
        CHECK(c.wait_closed(scaled(1000ms), &last));
        CHECK(last.is_err(error_code::draining));
    }
    // Admission is over: a new connection is told `draining`.
    client late(h.port());
    frame last;
    CHECK(late.wait_closed(scaled(2000ms), &last));
    CHECK(last.is_err(error_code::draining));
    // A second call completes at once with the same result.
    auto again = h.reg().async_shutdown(std::chrono::seconds(5), asio::use_future);
    REQUIRE(again.wait_for(scaled(2000ms)) == std::future_status::ready);
    CHECK_NOTHROW(again.get());
}

TEST_CASE("async_shutdown with use_awaitable and with deferred") {
#if defined(ASIO_HAS_CO_AWAIT)  // g++ 12 here; clang 14 with libstdc++ 12 has no Asio coroutines
    SUBCASE("use_awaitable") {
        embed_host h;
        client c = h.connect_hello();
        std::promise<bool> p;
        auto& reg = h.reg();
        asio::co_spawn(
            h.io(),
            [&reg, &p]() -> asio::awaitable<void> {
                // Separate statements for the awaited call (g++ 12, EMBEDDING.md).
                auto op = reg.async_shutdown(std::chrono::seconds(5), asio::use_awaitable);
                co_await std::move(op);
                p.set_value(reg.open_connections() == 0);
            },
            asio::detached);
        auto f = p.get_future();
        REQUIRE(f.wait_for(scaled(3000ms)) == std::future_status::ready);
        CHECK(f.get());
        CHECK(c.wait_closed(scaled(1000ms)));
    }
#endif
    SUBCASE("experimental::deferred") {
        embed_host h;
        client c = h.connect_hello();
        auto op = h.reg().async_shutdown(std::chrono::seconds(5), asio::experimental::deferred);
        CHECK(h.reg().open_connections() == 1);  // deferred: nothing started yet
        std::promise<std::error_code> p;
        std::move(op)([&](std::error_code ec) { p.set_value(ec); });
        auto f = p.get_future();
        REQUIRE(f.wait_for(scaled(3000ms)) == std::future_status::ready);
        CHECK(!f.get());
        CHECK(c.wait_closed(scaled(1000ms)));
    }
}

TEST_CASE("async_shutdown whose grace runs out closes the stragglers and completes with timed_out") {
    embed_host h;
    client feeder = h.connect_hello();
    client slow = stuck_client(h, feeder);
    const auto t0 = std::chrono::steady_clock::now();
    auto f = shutdown_result(h.reg(), std::chrono::milliseconds(300));
    REQUIRE(f.wait_for(scaled(3000ms)) == std::future_status::ready);
    CHECK(f.get() == asio::error::timed_out);
    CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);
    CHECK(h.reg().open_connections() == 0);
    CHECK(feeder.wait_closed(scaled(1000ms)));
}

TEST_CASE("async_shutdown honours per-operation cancellation: the wait ends, the shutdown goes on") {
    embed_host h;
    client feeder = h.connect_hello();
    client slow = stuck_client(h, feeder);  // keeps the shutdown from completing by itself
    asio::cancellation_signal sig;
    std::promise<std::error_code> p;
    h.reg().async_shutdown(std::chrono::seconds(30),
                           asio::bind_cancellation_slot(sig.slot(), [&](std::error_code ec) { p.set_value(ec); }));
    auto f = p.get_future();
    CHECK(f.wait_for(200ms) == std::future_status::timeout);  // still draining the stuck client
    asio::post(h.io(), [&] { sig.emit(asio::cancellation_type::terminal); });
    REQUIRE(f.wait_for(scaled(2000ms)) == std::future_status::ready);
    CHECK(f.get() == asio::error::operation_aborted);
    CHECK(h.reg().draining());  // the shutdown itself goes on
    CHECK(h.reg().open_connections() >= 1);
    // A second wait still completes, when the shutdown does (here: at its shorter grace).
    auto g = shutdown_result(h.reg(), std::chrono::milliseconds(100));
    REQUIRE(g.wait_for(scaled(3000ms)) == std::future_status::ready);
    CHECK(g.get() == asio::error::timed_out);
}

// -------------------------------------------------------------------------------- any stream

TEST_CASE("adopt takes a Unix stream socket: its session routes to and from a TCP one") {
    embed_host h;
    const std::string path = "/tmp/lariv-test-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path.c_str());
    asio::local::stream_protocol::acceptor ua(h.io(), asio::local::stream_protocol::endpoint(path));
    std::promise<void> accepted;
    ua.async_accept([&](std::error_code ec, asio::local::stream_protocol::socket s) {
        if (!ec) {
            h.reg().adopt(std::move(s));
        }
        accepted.set_value();
    });
    client u;
    REQUIRE(u.try_connect_unix(path));
    accepted.get_future().wait();
    REQUIRE(u.hello(R"({"name":"over-unix"})"));
    client t = h.connect_hello();
    u.send_to(t.id(), "from unix", "t1");
    CHECK(u.skip_events().is_ack_ok("t1"));
    frame m = t.next_skip_ping();
    CHECK(m.what == kind::msg);
    CHECK(m.from == u.id());
    CHECK(m.text == "from unix");
    t.send_to(u.id(), "to unix");
    m = u.next_skip_ping();
    CHECK(m.what == kind::msg);
    CHECK(m.text == "to unix");
    auto s = h.reg().find(u.id());
    REQUIRE(s);
    CHECK(s->remote().rfind("unix", 0) == 0);
    std::promise<void> closed;
    asio::post(h.io(), [&] {
        std::error_code ec;
        ua.close(ec);
        closed.set_value();
    });
    closed.get_future().wait();
    ::unlink(path.c_str());
}

// ---------------------------------------------------------------------- the host's sessions

namespace {
/// A host's own connection type: what a TPR server would register (no socket needed here).
class member : public std::enable_shared_from_this<member> {
public:
    explicit member(asio::any_io_executor ex, srv::registry& reg, bool detaches = true)
        : strand_(asio::make_strand(ex))
        , reg_(reg)
        , detaches_(detaches) {}
    asio::any_io_executor get_executor() const { return strand_; }
    srv::deliver_result deliver(proto::session_id from, std::string_view payload) {
        std::lock_guard lk(mu_);
        if (closed_) {
            return srv::deliver_result::closed;
        }
        if (got_.size() >= 4) {
            return srv::deliver_result::queue_full;  // a tiny bounded queue
        }
        got_.emplace_back(from, std::string(payload));
        return srv::deliver_result::ok;
    }
    void close(srv::close_reason why) {
        asio::post(strand_, [self = shared_from_this(), why] {
            {
                std::lock_guard lk(self->mu_);
                if (self->closed_) {
                    return;
                }
                self->closed_ = true;
                self->why_ = why;
            }
            if (self->detaches_) {
                self->reg_.detach(self->id);
            }
        });
    }
    srv::host_session_info info() const {
        std::lock_guard lk(mu_);
        return {"tpr-member", "tpr:test", 0, 0, got_.size()};
    }
    std::vector<std::pair<proto::session_id, std::string>> got() const {
        std::lock_guard lk(mu_);
        return got_;
    }
    std::optional<srv::close_reason> why() const {
        std::lock_guard lk(mu_);
        return closed_ ? std::optional(why_) : std::nullopt;
    }
    proto::session_id id;

private:
    asio::strand<asio::any_io_executor> strand_;
    srv::registry& reg_;  // the test keeps the registry alive longer than the member
    bool detaches_;
    mutable std::mutex mu_;
    bool closed_ = false;
    srv::close_reason why_{};
    std::vector<std::pair<proto::session_id, std::string>> got_;
};
static_assert(srv::host_session<member>);
}  // namespace

TEST_CASE("host sessions: attach, route in both directions, bounded queue, INFO/LIST, kick and detach") {
    embed_host h;
    auto m = std::make_shared<member>(h.io().get_executor(), h.reg());
    auto id = h.reg().attach(m);
    REQUIRE(id.has_value());
    m->id = *id;
    CHECK(h.reg().size() == 1);
    client c = h.connect_hello();
    // Lariv-protocol client -> host session.
    c.send_to(*id, "to the host", "t1");
    CHECK(c.skip_events().is_ack_ok("t1"));
    REQUIRE(m->got().size() == 1);
    CHECK(m->got()[0].first == c.id());
    CHECK(m->got()[0].second == "to the host");
    // Host session -> Lariv-protocol client, through the same routing.
    CHECK(!h.reg().send(c.id(), *id, "from the host"));
    frame f = c.next_skip_ping();
    CHECK(f.what == kind::msg);
    CHECK(f.from == *id);
    CHECK(f.text == "from the host");
    // Its bounded queue's verdict reaches the sender.
    for (int i = 0; i < 3; ++i) {
        c.send_to(*id, "fill", "f" + std::to_string(i));
        CHECK(c.skip_events().is_ack_ok("f" + std::to_string(i)));
    }
    c.send_to(*id, "one too many", "full");
    f = c.skip_events();
    CHECK(f.ack_error == error_code::queue_full);
    // INFO and LIST know it.
    auto info = c.info(*id);
    REQUIRE(info);
    CHECK((*info)["name"] == "tpr-member");
    const auto page = h.reg().list(std::nullopt, 10);
    CHECK(page.sessions.size() == 2);
    // Kick: the host is asked to close, it detaches, the id is gone.
    REQUIRE(h.reg().kick(*id));
    CHECK(eventually([&] { return h.reg().find(*id) == nullptr; }, scaled(2000ms)));
    CHECK(m->why() == srv::close_reason::kicked);
    CHECK(h.reg().size() == 1);
    CHECK_FALSE(h.reg().detach(*id));  // exactly once
    CHECK_FALSE(h.reg().detach(c.id()));  // a Lariv-protocol session is not the host's to detach
    CHECK(c.ping());
    c.send_to(*id, "gone", "t2");
    f = c.skip_events();
    CHECK(f.ack_error == error_code::stale_session);
}

TEST_CASE("async_shutdown drains host sessions, and one that never detaches is detached at the grace") {
    SUBCASE("well-behaved host session") {
        embed_host h;
        auto m = std::make_shared<member>(h.io().get_executor(), h.reg());
        m->id = h.reg().attach(m).value();
        auto f = h.reg().async_shutdown(std::chrono::seconds(5), asio::use_future);
        REQUIRE(f.wait_for(scaled(2000ms)) == std::future_status::ready);
        CHECK_NOTHROW(f.get());
        CHECK(m->why() == srv::close_reason::draining);
        CHECK_FALSE(h.reg().attach(std::make_shared<member>(h.io().get_executor(), h.reg())).has_value());
    }
    SUBCASE("host session that never detaches") {
        embed_host h;
        auto m = std::make_shared<member>(h.io().get_executor(), h.reg(), false);
        m->id = h.reg().attach(m).value();
        auto f = shutdown_result(h.reg(), std::chrono::milliseconds(200));
        REQUIRE(f.wait_for(scaled(3000ms)) == std::future_status::ready);
        CHECK(f.get() == asio::error::timed_out);
        CHECK(h.reg().open_connections() == 0);
        CHECK(h.reg().size() == 0);
    }
}

TEST_CASE("a shutdown still pending when the registry is destroyed completes (host and protocol sessions)") {
    // Found by the TPR relay's stop orders: ~registry took the host entries out without counting
    // them closed, so the pending shutdown never completed and its handler was dropped.
    embed_host h;
    auto m = std::make_shared<member>(h.io().get_executor(), h.reg(), false);
    m->id = h.reg().attach(m).value();
    client c = h.connect_hello();
    auto f = shutdown_result(h.reg(), std::chrono::seconds(30));
    h.stop_accepting();
    h.destroy_registry();
    REQUIRE(f.wait_for(scaled(3000ms)) == std::future_status::ready);
    CHECK(f.get() == asio::error::operation_aborted);  // cut by the destruction, not drained
    CHECK(c.wait_closed(scaled(1000ms)));
}

}  // TEST_SUITE("library")

// ---------------------------------------------------------------------- 5. SIGHUP clamp

TEST_CASE("reload (SIGHUP) applies the same fd clamp and validation as start-up") {
    auto cfg = test_config();
    cfg.max_sessions = 1'000'000'000;  // far above any RLIMIT_NOFILE here
    test_server s(cfg);
    const std::size_t clamped = s.get().max_sessions();
    REQUIRE(clamped < cfg.max_sessions);
    CHECK(s.reg().hot().max_sessions.load() == clamped);
    cfg.rate_limit = 7;
    s.get().reload(cfg);  // what larivd's SIGHUP handler calls
    CHECK(s.reg().hot().max_sessions.load() == clamped);  // the old main applied 1e9 here
    CHECK(s.reg().hot().rate_limit.load() == 7);
    auto bad = cfg;
    bad.max_queue_bytes = 10;  // cannot hold one max_payload message
    CHECK_THROWS_AS(s.get().reload(bad), srv::config_error);
    CHECK(s.reg().hot().max_queue_bytes.load() == cfg.max_queue_bytes);
    client c = s.connect_hello();  // still serving
    CHECK(c.ping());
}

// --------------------------------------------------------------------------------- 8. monitor

TEST_CASE("monitor: /connz reports the page limit it applied") {
    auto cfg = test_config();
    cfg.limits.max_list = 3;
    test_server s(cfg);
    std::vector<client> cs;
    for (int i = 0; i < 5; ++i) {
        cs.push_back(s.connect_hello());
    }
    auto r = srv::monitor::handle(s.reg(), "/connz?limit=5000");
    REQUIRE(r.status == 200);
    auto j = nlohmann::json::parse(r.body);
    CHECK(j["limit"] == 3);
    CHECK(j["sessions"].size() == 3);
    CHECK(!j["next"].is_null());
    r = srv::monitor::handle(s.reg(), "/connz");
    j = nlohmann::json::parse(r.body);
    CHECK(j["limit"] == 3);
}

TEST_CASE("monitor: connections over the cap get 503 at once, session accepts are unaffected") {
    auto cfg = test_config();
    cfg.monitor_port = free_port();
    cfg.max_monitor_connections = 4;
    test_server s(cfg);
    std::vector<client> idle;
    for (int i = 0; i < 4; ++i) {
        idle.emplace_back();
        REQUIRE(idle.back().try_connect(cfg.monitor_port));
    }
    std::this_thread::sleep_for(100ms);  // accepted by the monitor
    const auto t0 = std::chrono::steady_clock::now();
    const std::string over = http_get(cfg.monitor_port, "/healthz");
    CHECK(over.rfind("HTTP/1.1 503", 0) == 0);
    CHECK(std::chrono::steady_clock::now() - t0 < scaled(2000ms));
    client c = s.connect_hello();  // sessions still get in
    CHECK(c.ping());
    idle.clear();
    CHECK(eventually([&] { return http_get(cfg.monitor_port, "/healthz").rfind("HTTP/1.1 200", 0) == 0; },
                     scaled(2000ms)));
}

}  // namespace lariv::test
