// lariv/server/tls.hpp — TLS for Lariv-protocol sessions (OpenSSL through asio::ssl):
//   - make_server_tls_context(): a server context from PEM files (TLS 1.2 minimum, no
//     compression, no renegotiation; client certificates required when a CA is given);
//   - tls_stream: an ssl::stream over a TCP socket that shares ownership of its context, so a
//     context replaced at reload lives as long as the last stream made from it;
//   - async_server_handshake(): the server side of the handshake with a deadline.
// larivd's TLS listener (server.cpp) is these three plus registry::adopt(tls_stream); an embedder
// with its own acceptor can do the same.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <utility>

#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>

namespace lariv::server {

/// The PEM files of a server context. `ca` empty: no client certificates asked for.
struct tls_files {
    std::string cert;  ///< certificate chain, the server's own certificate first
    std::string key;   ///< its private key (unencrypted)
    std::string ca;    ///< CA bundle: if set, every client must present a certificate it verifies
};

/// A new server context from `f`. Throws config_error naming the key (tls_cert, tls_key, tls_ca)
/// when a file cannot be read or parsed, or the key does not match the certificate.
/// Settings: TLS 1.2 and 1.3 only, no compression, no renegotiation, a fresh (EC)DHE key per
/// handshake, the server's cipher preference, read/write buffers released while idle; with `ca`,
/// verify_peer | verify_fail_if_no_peer_cert and the CA names sent in the CertificateRequest.
std::shared_ptr<asio::ssl::context> make_server_tls_context(const tls_files& f);

/// asio::ssl::stream<tcp::socket> plus a share of its context. Holds the context first, so the
/// stream is destroyed before its context share is released. Move-constructible only (a move
/// assignment would release the old context before the old stream). Satisfies AsyncReadStream
/// and AsyncWriteStream, and has lowest_layer(), so registry::adopt() takes it as it is.
class tls_stream {
public:
    using next_layer_type = asio::ssl::stream<asio::ip::tcp::socket>;
    using lowest_layer_type = next_layer_type::lowest_layer_type;
    using executor_type = next_layer_type::executor_type;

    tls_stream(asio::ip::tcp::socket socket, std::shared_ptr<asio::ssl::context> ctx)
        : ctx_(std::move(ctx))
        , stream_(std::move(socket), *ctx_) {}
    tls_stream(tls_stream&&) = default;
    tls_stream& operator=(tls_stream&&) = delete;

    [[nodiscard]] executor_type get_executor() noexcept { return stream_.get_executor(); }
    [[nodiscard]] lowest_layer_type& lowest_layer() noexcept { return stream_.lowest_layer(); }
    [[nodiscard]] next_layer_type& ssl_stream() noexcept { return stream_; }
    [[nodiscard]] SSL* native_handle() { return stream_.native_handle(); }
    [[nodiscard]] const std::shared_ptr<asio::ssl::context>& context() const noexcept { return ctx_; }

    template <class MutableBufferSequence, class Token>
    decltype(auto) async_read_some(const MutableBufferSequence& buffers, Token&& token) {
        return stream_.async_read_some(buffers, std::forward<Token>(token));
    }
    template <class ConstBufferSequence, class Token>
    decltype(auto) async_write_some(const ConstBufferSequence& buffers, Token&& token) {
        return stream_.async_write_some(buffers, std::forward<Token>(token));
    }
    template <class Token>
    decltype(auto) async_handshake(asio::ssl::stream_base::handshake_type type, Token&& token) {
        return stream_.async_handshake(type, std::forward<Token>(token));
    }

private:
    std::shared_ptr<asio::ssl::context> ctx_;  // first: outlives stream_
    next_layer_type stream_;
};

/// Called once with the handshake's result and the stream (to adopt, or to drop).
using tls_handshake_handler = std::function<void(std::error_code, tls_stream&&)>;

/// Runs the server handshake on `s`. If it has not completed within `deadline`, the socket is
/// closed and `done` gets asio::error::timed_out. `done` runs once, on a strand of the stream's
/// executor made for this handshake (the stream itself stays on its own executor, so a session
/// made from it gets a strand of its own). Returns at once.
void async_server_handshake(tls_stream s, std::chrono::milliseconds deadline, tls_handshake_handler done);

}  // namespace lariv::server
