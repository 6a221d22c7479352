#include "lariv/server/listener.hpp"

#include <asio/bind_executor.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>

#include "lariv/server/log.hpp"
#include "lariv/server/options.hpp"

namespace lariv::server {

std::string endpoint_text(const asio::ip::tcp::endpoint& ep) {
    const std::string a = ep.address().to_string();
    return (ep.address().is_v6() ? "[" + a + "]" : a) + ":" + std::to_string(ep.port());
}

asio::ip::tcp::endpoint resolve_endpoint(std::string_view key, const std::string& host, std::uint16_t port) {
    std::error_code ec;
    const auto addr = asio::ip::make_address(host, ec);
    if (!ec) {
        return {addr, port};
    }
    // A name: getaddrinfo's first answer (its order is the system's: /etc/gai.conf).
    asio::io_context io;
    asio::ip::tcp::resolver r(io);
    const auto results = r.resolve(host, std::to_string(port), asio::ip::tcp::resolver::numeric_service, ec);
    if (ec || results.empty()) {
        throw config_error("config: " + std::string(key) + " = " + log::quote(host) +
                           ": not an IP address, and the name does not resolve (" +
                           (ec ? ec.message() : std::string("no address")) + ")");
    }
    return results.begin()->endpoint();
}

listener::listener(asio::any_io_executor ex, const asio::ip::tcp::endpoint& ep, on_accept_fn f,
                   options o, std::function<void()> on_error)
    : ex_(ex)
    , strand_(asio::make_strand(ex))
    , acceptor_(strand_)
    , backoff_timer_(strand_)
    , on_accept_(std::move(f))
    , on_error_(std::move(on_error))
    , opt_(o) {
    try {
        acceptor_.open(ep.protocol());
        acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
        acceptor_.bind(ep);
        acceptor_.listen(asio::socket_base::max_listen_connections);
        endpoint_ = acceptor_.local_endpoint();
    } catch (const std::system_error& e) {
        throw listen_error(opt_.name, endpoint_text(ep), e);
    }
    port_ = endpoint_.port();
}

void listener::start() {
    asio::post(strand_, [self = shared_from_this()] { self->do_accept(); });
}

void listener::stop(std::function<void()> then) {
    asio::post(strand_, [self = shared_from_this(), then = std::move(then)] {
        self->stopped_ = true;
        std::error_code ec;
        self->acceptor_.close(ec);
        self->backoff_timer_.cancel();
        if (then) {
            then();
        }
    });
}

void listener::do_accept() {
    if (stopped_) {
        return;
    }
    // The new socket is bound to the I/O executor, not to this strand: a session wraps its
    // stream's executor in a strand of its own, and a strand of this one would serialise every
    // session behind the listener.
    acceptor_.async_accept(opt_.socket_executor ? opt_.socket_executor() : ex_, asio::bind_executor(
        strand_, [self = shared_from_this()](std::error_code ec, asio::ip::tcp::socket s) {
            self->on_accept(ec, std::move(s));
        }));
}

void listener::on_accept(std::error_code ec, asio::ip::tcp::socket s) {
    if (stopped_ || ec == asio::error::operation_aborted) {
        return;
    }
    if (!ec) {
        backoff_ = {};
        on_accept_(std::move(s));
        do_accept();
        return;
    }
    if (on_error_) {
        on_error_();
    }
    const auto v = ec.value();
    const bool resource = v == EMFILE || v == ENFILE || v == ENOBUFS || v == ENOMEM;
    if (!resource) {
        // A per-connection failure (ECONNABORTED, EPERM, ...): the next accept may succeed.
        do_accept();
        return;
    }
    // Out of descriptors: the pending connection stays in the backlog and the listener stays
    // readable, so re-arming at once would spin. Back off, doubling up to the maximum.
    backoff_ = backoff_.count() == 0 ? opt_.backoff_min : std::min(backoff_ * 2, opt_.backoff_max);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_log_ >= std::chrono::seconds(1)) {
        last_log_ = now;
        log::event(spdlog::level::warn, "accept failed",
                   {{"listener", opt_.name}, {"address", endpoint_text(endpoint_)},
                    {"error", ec.message()}, {"retry_ms", backoff_.count()}});
    }
    backoff_timer_.expires_after(backoff_);
    backoff_timer_.async_wait([self = shared_from_this()](std::error_code e) {
        if (!e) {
            self->do_accept();
        }
    });
}

}  // namespace lariv::server
