// Regression test for a registry bug found with the TPR relay's stop orders.
//
// registry.hpp promises that async_shutdown "completes on the handler's associated executor,
// exactly once", and that destroying the registry "is safe at any moment". The bug: a shutdown
// still pending when the registry object was destroyed never completed once a host session had
// been attached. ~registry (registry_core::abandon) took the host entries out of the Lariv
// without counting their connections closed, and the host could no longer detach() (the front is
// gone), so open_connections() never reached 0; when the core died its waiters were destroyed
// uncompleted. The io_context even ran out of work, so io.run() returned with the handler
// silently dropped (a use_future got broken_promise; a co_await-ing coroutine was destroyed
// without resuming).
//
// Passes when the handler runs (with any error code) within 2 s (4x the grace), exit 0; failed
// with "completed=0, io.run() returned=1", exit 1. With any argument the registry is kept alive
// (control run): it completes with timed_out after the grace.
#include <asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>

#include "lariv/server/registry.hpp"

namespace srv = lariv::server;
namespace proto = lariv::protocol;
using namespace std::chrono_literals;

namespace {
/// The smallest host session: close() would close its transport and detach, but once the
/// registry object is destroyed there is nothing left to detach from.
struct host {
    asio::any_io_executor ex;
    asio::any_io_executor get_executor() const { return ex; }
    srv::deliver_result deliver(proto::session_id, std::string_view) {
        return srv::deliver_result::ok;
    }
    void close(srv::close_reason) {}
    srv::host_session_info info() const { return {}; }
};
}  // namespace

int main(int argc, char**) {
    const bool destroy = argc == 1;
    asio::io_context io;
    std::optional<srv::registry> reg(std::in_place, io.get_executor(), srv::registry_options{});
    (void)reg->attach(std::make_shared<host>(host{io.get_executor()}));
    std::atomic<bool> done{false};
    reg->async_shutdown(500ms, [&](std::error_code ec) {
        std::printf("async_shutdown completed: %s\n", ec ? ec.message().c_str() : "ok");
        done = true;
    });
    if (destroy) {
        reg.reset();  // "safe at any moment"
    }
    std::atomic<bool> ran_out{false};
    std::thread t([&] {
        io.run();  // nothing else is pending: returns once the shutdown is over
        ran_out = true;
    });
    const auto deadline = std::chrono::steady_clock::now() + 2s;  // 4x the grace
    while (!done && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(5ms);
    }
    std::printf("grace 500 ms, registry %s: completed=%d, io.run() returned=%d\n",
                destroy ? "destroyed" : "kept", done.load(), ran_out.load());
    io.stop();
    t.join();
    reg.reset();
    return done ? 0 : 1;
}
