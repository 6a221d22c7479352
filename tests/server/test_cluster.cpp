// The cluster in process (issue 12): two lariv::server::server instances joined through a real
// etcd (etcd_fixture.hpp) route to each other, and the embedding API (cluster + registry on the
// host's own io_context) claims ids as documented. The multi-process suite (tests/cluster/)
// drives the larivd binary; these run the same code inside the sanitizer builds' test binary.
#include <doctest/doctest.h>

#include <future>
#include <thread>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/use_future.hpp>

#include "client.hpp"
#include "etcd_fixture.hpp"
#include "lariv/server/cluster.hpp"
#include "lariv/server/monitor.hpp"
#include "support.hpp"

using namespace lariv::test;

namespace {

srv::config member_config(const std::string& etcd, std::uint32_t node_id) {
    srv::config c = test_config();
    c.cluster_etcd = etcd;
    c.cluster_name = "inproc";
    c.cluster_token = "t0ken";
    c.cluster_lease_ttl_s = 3;
    c.peer_port = 0;
    c.admin_token = "adm";
    if (node_id == 0) {
        c.node_id_auto = true;
    } else {
        c.node_id = node_id;
    }
    return c;
}

bool meshed(srv::server& s, std::size_t peers) {
    const auto h = s.cluster_member()->health();
    return h["lease"] == "held" && h["peers"] == peers && h["peers_up"] == peers;
}

template <class F>
bool eventually(F&& f, ms timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
        if (f()) {
            return true;
        }
        std::this_thread::sleep_for(20ms);
    }
    return f();
}

}  // namespace

TEST_CASE("cluster: two in-process servers joined through etcd route SEND, ACK, INFO and KICK to each other") {
    etcd_process etcd;
    test_server s1(member_config(etcd.endpoint(), 1));
    test_server s2(member_config(etcd.endpoint(), 0));  // auto: the lowest free id, 2
    REQUIRE(s2.get().cluster_member()->node_id() == 2);
    REQUIRE(s2.reg().node_id() == 2);
    REQUIRE(eventually([&] { return meshed(s1.get(), 1) && meshed(s2.get(), 1); }, scaled(10000ms)));

    client a = s1.connect_hello(R"({"name":"a","auth":"adm"})");
    client b = s2.connect_hello(R"({"name":"b"})");
    const auto ia = a.id();
    const auto ib = b.id();
    REQUIRE(ia.node() == 1);
    REQUIRE(ib.node() == 2);

    // Tokened: the owner's verdict comes back as an ACK; the MSG carries the sender's id.
    REQUIRE(a.send_to(ib, "across", "t1"));
    auto f = a.next_skip_ping(scaled(3000ms));
    REQUIRE_MESSAGE(f.what == frame::kind::ack, f.describe());
    CHECK(f.token == "t1");
    CHECK_FALSE(f.ack_error.has_value());
    f = b.next_skip_ping(scaled(3000ms));
    REQUIRE_MESSAGE(f.what == frame::kind::msg, f.describe());
    CHECK(f.from == ia);
    CHECK(f.text == "across");
    // Untokened, the other way.
    REQUIRE(b.send_to(ia, "back"));
    f = a.next_skip_ping(scaled(3000ms));
    REQUIRE_MESSAGE(f.what == frame::kind::msg, f.describe());
    CHECK(f.from == ib);

    // INFO of the remote session, then a PING: the replies keep the commands' order.
    REQUIRE(a.send_raw("INFO " + ib.to_string() + "\r\nPING\r\n"));
    f = a.next(scaled(3000ms));
    REQUIRE_MESSAGE(f.what == frame::kind::body, f.describe());
    CHECK(nlohmann::json::parse(f.text)["name"] == "b");
    f = a.next(scaled(3000ms));
    CHECK_MESSAGE(f.what == frame::kind::pong, f.describe());

    // An id of an old boot of node 2, and of a node etcd does not list: unknown_session.
    for (const auto bad : {proto::session_id::make(2, ib.epoch() + 1, ib.generation(), ib.slot()),
                           proto::session_id::make(99, 1, 1, 1)}) {
        REQUIRE(a.send_to(bad, "x", "t2"));
        f = a.next_skip_ping(scaled(3000ms));
        REQUIRE_MESSAGE(f.what == frame::kind::ack, f.describe());
        CHECK(f.ack_error == proto::error_code::unknown_session);
    }

    // /routez names the peer, up, with the forwarded counts.
    const auto r = srv::monitor::handle(s1.reg(), "/routez", nullptr, s1.get().cluster_member());
    REQUIRE(r.status == 200);
    const auto rz = nlohmann::json::parse(r.body);
    REQUIRE(rz["peers"].size() == 1);
    CHECK(rz["peers"][0]["node"] == 2);
    CHECK(rz["peers"][0]["state"] == "up");
    CHECK(rz["peers"][0]["msgs_out"] == 1);  // "across" (the forged ids never left node 1)
    CHECK(rz["peers"][0]["msgs_in"] == 1);   // "back"
    CHECK(rz["etcd"]["lease"] == "held");

    // KICK (admin) of the remote session: it closes, and later SENDs to it are stale.
    REQUIRE(a.send_raw("KICK " + ib.to_string() + "\r\n"));
    f = a.next_skip_ping(scaled(3000ms));
    REQUIRE_MESSAGE(f.what == frame::kind::ok, f.describe());
    CHECK(b.wait_closed(scaled(3000ms)));
    REQUIRE(eventually(
        [&] {
            a.send_to(ib, "late", "t3");
            auto g = a.next_skip_ping(scaled(3000ms));
            return g.what == frame::kind::ack && g.ack_error == proto::error_code::stale_session;
        },
        scaled(3000ms)));

    // Node 2 leaves (its server stops: the lease is not revoked, the link drops): node 1's
    // senders get node_unreachable, never a hang.
    client b2 = s2.connect_hello(R"({"name":"b2"})");
    const auto ib2 = b2.id();
    s2.shutdown();
    REQUIRE(eventually(
        [&] {
            a.send_to(ib2, "gone", "t4");
            auto g = a.next_skip_ping(scaled(3000ms));
            return g.what == frame::kind::ack && (g.ack_error == proto::error_code::node_unreachable ||
                                                  g.ack_error == proto::error_code::unknown_session);
        },
        scaled(5000ms)));
}

TEST_CASE("cluster: the embedding API claims ids in etcd, and an explicit id a live node holds fails id_taken") {
    etcd_process etcd;
    asio::io_context io;
    auto work = asio::make_work_guard(io);
    std::thread t([&] { io.run(); });
    srv::cluster_options o;
    o.etcd = etcd.endpoint();
    o.name = "embed";
    o.lease_ttl = std::chrono::seconds(3);
    {
        srv::cluster first(io.get_executor(), o);  // auto
        auto fut = first.async_join(asio::use_future);
        REQUIRE(fut.wait_for(scaled(10000ms)) == std::future_status::ready);
        REQUIRE(fut.get() == 1);
        srv::registry_options ro;
        ro.node_id = first.node_id();
        ro.boot_epoch = first.boot_epoch();
        srv::registry reg(io.get_executor(), ro);
        first.attach(reg);
        CHECK(first.lease_held());

        // A registry built with another id is refused by attach (its ids would name no one).
        srv::registry_options wrong = ro;
        wrong.node_id = 5;
        srv::registry other(io.get_executor(), wrong);
        CHECK_THROWS_AS(first.attach(other), srv::config_error);

        srv::cluster_options o2 = o;
        o2.node_id = 1;
        srv::cluster second(io.get_executor(), o2);
        std::promise<std::error_code> p;
        second.async_join([&p](std::error_code ec, std::uint32_t) { p.set_value(ec); });
        auto f2 = p.get_future();
        REQUIRE(f2.wait_for(scaled(10000ms)) == std::future_status::ready);
        CHECK(f2.get() == srv::cluster_errc::id_taken);
        CHECK(second.last_error().find("node id 1 is held by 127.0.0.1:" + std::to_string(first.peer_port())) !=
              std::string::npos);

        srv::cluster_options o3 = o;  // auto again: the next free id
        srv::cluster third(io.get_executor(), o3);
        auto f3 = third.async_join(asio::use_future);
        REQUIRE(f3.wait_for(scaled(10000ms)) == std::future_status::ready);
        CHECK(f3.get() == 2);

        // A clean leave revokes the lease: the key is gone at once.
        auto left = first.async_leave(asio::use_future);
        REQUIRE(left.wait_for(scaled(5000ms)) == std::future_status::ready);
        CHECK_NOTHROW(left.get());
        CHECK_FALSE(first.lease_held());
    }
    work.reset();
    io.stop();
    t.join();
}
