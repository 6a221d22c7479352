// The installed lariv::registry on a host's io_context: a loopback acceptor hands one
// connection to the registry, a client says HELLO and must get +HELLO, then the registry drains
// and the program exits 0. Exit 1 on anything else.
#include <chrono>
#include <cstdio>
#include <string>

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <lariv/server/registry.hpp>

int main() {
    asio::io_context io;
    lariv::server::registry_options opts;
    opts.node_id = 7;
    lariv::server::registry reg(io.get_executor(), opts);

    asio::ip::tcp::acceptor acceptor(io, {asio::ip::address_v4::loopback(), 0});
    acceptor.async_accept([&](std::error_code ec, asio::ip::tcp::socket s) {
        if (!ec) {
            reg.adopt(std::move(s));
        }
    });

    bool ok = false;
    asio::ip::tcp::socket client(io);
    std::string reply;
    const std::string hello = "HELLO\r\n";
    auto finish = [&] {
        acceptor.close();
        reg.async_shutdown(std::chrono::milliseconds(200), [&](std::error_code) { io.stop(); });
    };
    client.async_connect(acceptor.local_endpoint(), [&](std::error_code ec) {
        if (ec) {
            return finish();
        }
        asio::async_write(client, asio::buffer(hello), [&](std::error_code wec, std::size_t) {
            if (wec) {
                return finish();
            }
            asio::async_read_until(
                client, asio::dynamic_buffer(reply), "\r\n", [&](std::error_code rec, std::size_t) {
                    ok = !rec && reply.rfind("+HELLO", 0) == 0;
                    std::printf("consumer: registry (node %u, %zu session) answered %s",
                                opts.node_id, reg.size(),
                                reply.substr(0, reply.find("\r\n") + 2).c_str());
                    finish();
                });
        });
    });
    asio::steady_timer deadline(io, std::chrono::seconds(10));
    deadline.async_wait([&](std::error_code ec) {
        if (!ec) {
            std::printf("consumer: no reply in 10 s\n");
            io.stop();
        }
    });
    io.run();
    std::printf("consumer: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
