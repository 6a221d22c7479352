// tests/server/client.hpp — a small blocking test client for larivd and lariv::registry.
//
// Plain POSIX sockets (no Asio, so the client shares no machinery with the server under test),
// frames decoded with lariv::protocol::reply_decoder and copied into an owned `frame`. Every read
// has a timeout; nothing here can hang a test. Not thread-safe: one client per thread at a time.
//
// TLS: start_tls() runs a client handshake with OpenSSL directly on the connected socket (again no
// asio::ssl, so the server's TLS code is not tested against itself); from then on every command
// goes through TLS. tls_client_context() builds the SSL_CTX: what to trust, which certificate to
// present, which protocol versions to offer.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <fcntl.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/message.hpp"

namespace lariv::test {

namespace proto = lariv::protocol;
using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;

/// One server-to-client frame, owned (the decoder's views are copied out).
struct frame {
    enum class kind {
        ok,       ///< +OK [text]
        err,      ///< -ERR code [message]
        ping,     ///< PING
        pong,     ///< PONG
        msg,      ///< MSG from n + payload
        ack,      ///< ACK token ok|code
        body,     ///< +HELLO/+INFO/+LIST/+STATS + json
        closed,   ///< the server closed the connection (EOF or reset)
        timeout,  ///< nothing complete arrived in time
        bad,      ///< the server sent something the reply decoder rejects
    };
    kind what = kind::timeout;
    std::string text;                 ///< ok text, err message, msg payload, body json, bad detail
    proto::error_code code = proto::error_code::internal;  ///< err code
    std::optional<proto::error_code> ack_error;              ///< ack: nullopt = ok
    std::string token;                ///< ack token
    proto::session_id from;           ///< msg sender
    proto::body_kind body = proto::body_kind::stats;

    [[nodiscard]] bool is_err(proto::error_code c) const { return what == kind::err && code == c; }
    [[nodiscard]] bool is_ack_ok(std::string_view t) const {
        return what == kind::ack && token == t && !ack_error;
    }
    [[nodiscard]] std::string describe() const {
        switch (what) {
            case kind::ok: return "+OK " + text;
            case kind::err: return "-ERR " + std::string(proto::to_string(code)) + " " + text;
            case kind::ping: return "PING";
            case kind::pong: return "PONG";
            case kind::msg: return "MSG " + from.to_string() + " (" + std::to_string(text.size()) + " bytes)";
            case kind::ack:
                return "ACK " + token + " " +
                       (ack_error ? std::string(proto::to_string(*ack_error)) : std::string("ok"));
            case kind::body: return "+" + std::string(proto::to_string(body)) + " " + text;
            case kind::closed: return "<closed>";
            case kind::timeout: return "<timeout>";
            case kind::bad: return "<bad: " + text + ">";
        }
        return "?";
    }
};

/// What a TLS test client trusts, presents and offers.
struct tls_options {
    std::string ca;         ///< PEM CA file to verify the server with; "" = no verification
    std::string host;       ///< name the server certificate must carry (checked when ca is set)
    std::string cert, key;  ///< client certificate and key (mTLS); "" = none
    int min_version = TLS1_2_VERSION;
    int max_version = 0;     ///< 0 = the highest the library has
    int security_level = -1; ///< -1 = OpenSSL's default; 0 lets a test offer TLS 1.0/1.1
};

/// The last OpenSSL error of this thread as text (the queue is cleared), "" if none.
inline std::string openssl_error_text() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) {
            out += "; ";
        }
        out += buf;
    }
    return out;
}

/// A client SSL_CTX for `o`. Throws std::runtime_error when a file does not load.
inline std::shared_ptr<SSL_CTX> tls_client_context(const tls_options& o) {
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
    if (!ctx) {
        throw std::runtime_error("SSL_CTX_new: " + openssl_error_text());
    }
    SSL_CTX* h = ctx.get();
    if (o.security_level >= 0) {
        SSL_CTX_set_security_level(h, o.security_level);
        SSL_CTX_set_cipher_list(h, "DEFAULT:@SECLEVEL=0");
    }
    SSL_CTX_set_min_proto_version(h, o.min_version);
    SSL_CTX_set_max_proto_version(h, o.max_version);
    if (!o.ca.empty()) {
        if (SSL_CTX_load_verify_locations(h, o.ca.c_str(), nullptr) != 1) {
            throw std::runtime_error("load CA " + o.ca + ": " + openssl_error_text());
        }
        SSL_CTX_set_verify(h, SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(h, SSL_VERIFY_NONE, nullptr);
    }
    if (!o.cert.empty()) {
        if (SSL_CTX_use_certificate_chain_file(h, o.cert.c_str()) != 1 ||
            SSL_CTX_use_PrivateKey_file(h, o.key.c_str(), SSL_FILETYPE_PEM) != 1) {
            throw std::runtime_error("load client certificate " + o.cert + ": " + openssl_error_text());
        }
    }
    return ctx;
}

class client {
public:
    client() = default;
    explicit client(std::uint16_t port, int rcvbuf = 0) { connect(port, rcvbuf); }
    ~client() { close(); }
    client(const client&) = delete;
    client& operator=(const client&) = delete;
    client(client&& o) noexcept { *this = std::move(o); }
    client& operator=(client&& o) noexcept {
        if (this != &o) {
            close();
            fd_ = std::exchange(o.fd_, -1);
            ssl_ = std::exchange(o.ssl_, nullptr);
            tls_ctx_ = std::move(o.tls_ctx_);
            tls_error_ = std::move(o.tls_error_);
            rx_ = std::move(o.rx_);
            dec_ = std::move(o.dec_);
            eof_ = o.eof_;
            id_ = o.id_;
            hello_ = std::move(o.hello_);
        }
        return *this;
    }

    /// Connects to 127.0.0.1:port. `rcvbuf` > 0 sets SO_RCVBUF first (a small window makes a
    /// client that does not read look slow to the server quickly). Returns false on failure.
    bool try_connect(std::uint16_t port, int rcvbuf = 0) { return connect_tcp(port, rcvbuf, nullptr); }
    /// Connects to 127.0.0.1:port from the local address `from` (e.g. "127.0.0.2": another
    /// loopback address, so the server sees another peer IP). Returns false on failure.
    bool try_connect_from(std::uint16_t port, const char* from) { return connect_tcp(port, 0, from); }
    /// Connects to the Unix stream socket at `path`. Returns false on failure.
    bool try_connect_unix(const std::string& path) {
        close();
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) {
            return false;
        }
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
        return finish_connect(::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa));
    }
    /// A TCP connection to 127.0.0.1:port, bound first to `from` when given.
    bool connect_tcp(std::uint16_t port, int rcvbuf, const char* from) {
        close();
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd_ < 0) {
            return false;
        }
        if (rcvbuf > 0) {
            ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        }
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (from != nullptr) {
            sockaddr_in local{};
            local.sin_family = AF_INET;
            ::inet_pton(AF_INET, from, &local.sin_addr);
            if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
                ::close(fd_);
                fd_ = -1;
                return false;
            }
        }
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return finish_connect(::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa));
    }
    /// After connect(2) returned `rc`: a fresh decoder on success, no descriptor on failure.
    bool finish_connect(int rc) {
        if (rc != 0) {
            ::close(fd_);
            fd_ = -1;
            return false;
        }
        rx_.clear();
        dec_ = proto::reply_decoder(big_limits());
        eof_ = false;
        return true;
    }
    void connect(std::uint16_t port, int rcvbuf = 0) {
        if (!try_connect(port, rcvbuf)) {
            throw std::runtime_error("connect to port " + std::to_string(port) + ": " + std::strerror(errno));
        }
    }
    [[nodiscard]] bool is_open() const noexcept { return fd_ >= 0; }
    [[nodiscard]] int fd() const noexcept { return fd_; }

    /// Orderly close (FIN; over TLS a close_notify first, without waiting for the peer's).
    void close() noexcept {
        if (ssl_ != nullptr) {
            (void)SSL_shutdown(ssl_);
            SSL_free(ssl_);
            ssl_ = nullptr;
            ERR_clear_error();
        }
        tls_ctx_.reset();
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    /// Abrupt close: SO_LINGER 0, so the kernel sends RST (over TLS: no close_notify).
    void reset() noexcept {
        if (ssl_ != nullptr) {
            SSL_free(ssl_);
            ssl_ = nullptr;
        }
        if (fd_ >= 0) {
            linger l{1, 0};
            ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
            close();
        }
    }

    // ---- TLS ------------------------------------------------------------------------------

    /// Client handshake on the connected socket, within `timeout`. True once it completed; from
    /// then on send_raw and the reads go through TLS. False (tls_error() says why) when it failed.
    /// Under TLS 1.3 the client finishes before the server has checked the client certificate: a
    /// refused certificate shows as a close (with an alert in tls_error()) on the first read.
    bool start_tls(std::shared_ptr<SSL_CTX> ctx, const std::string& host = {}, ms timeout = 5000ms) {
        ERR_clear_error();
        tls_error_.clear();
        if (fd_ < 0) {
            tls_error_ = "not connected";
            return false;
        }
        ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
        tls_ctx_ = std::move(ctx);
        ssl_ = SSL_new(tls_ctx_.get());
        SSL_set_fd(ssl_, fd_);
        SSL_set_connect_state(ssl_);
        if (!host.empty()) {
            SSL_set_tlsext_host_name(ssl_, host.c_str());
            SSL_set1_host(ssl_, host.c_str());
        }
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const int r = SSL_do_handshake(ssl_);
            if (r == 1) {
                return true;
            }
            const int err = SSL_get_error(ssl_, r);
            if ((err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) ||
                !wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                tls_error_ = describe_tls_failure(err);
                if (tls_error_.empty()) {
                    tls_error_ = "handshake timed out";
                }
                SSL_free(ssl_);
                ssl_ = nullptr;
                return false;
            }
        }
    }
    /// try_connect + start_tls.
    bool connect_tls(std::uint16_t port, std::shared_ptr<SSL_CTX> ctx, const std::string& host = {}) {
        return try_connect(port) && start_tls(std::move(ctx), host);
    }
    [[nodiscard]] bool tls() const noexcept { return ssl_ != nullptr; }
    /// Why the handshake or the last TLS read failed (OpenSSL's words, alerts included).
    [[nodiscard]] const std::string& tls_error() const noexcept { return tls_error_; }
    /// The negotiated version ("TLSv1.3", ...), "" without TLS.
    [[nodiscard]] std::string tls_version() const { return ssl_ ? SSL_get_version(ssl_) : ""; }
    /// The server certificate's subject (one line, "/CN=...") and serial (hex), "" if none.
    [[nodiscard]] std::string peer_subject() const { return peer_field(false); }
    [[nodiscard]] std::string peer_serial() const { return peer_field(true); }
    /// Half close: FIN, but keep reading.
    void shutdown_write() noexcept {
        if (fd_ >= 0) {
            ::shutdown(fd_, SHUT_WR);
        }
    }

    /// Writes all of `bytes` (blocking). False when the peer is gone (no SIGPIPE).
    bool send_raw(std::string_view bytes) {
        if (ssl_ != nullptr) {
            return tls_send(bytes);
        }
        while (!bytes.empty()) {
            const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return false;
            }
            bytes.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }
    /// Writes what fits now without blocking; returns bytes written (0 when full), -1 on error.
    /// Plaintext only.
    ssize_t send_some(std::string_view bytes) {
        const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            return 0;
        }
        return n;
    }

    /// The next frame, waiting at most `timeout`.
    frame next(ms timeout = 2000ms) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (auto f = decode_one()) {
                return *f;
            }
            if (eof_) {
                frame f;
                f.what = frame::kind::closed;
                return f;
            }
            const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
            if (left.count() < 0 || !fill(left)) {
                if (eof_) {
                    continue;
                }
                return frame{};  // timeout
            }
        }
    }
    /// Like next(), but answers server PINGs with PONG and skips them.
    frame next_skip_ping(ms timeout = 2000ms) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
            frame f = next(left.count() > 0 ? left : 0ms);
            if (f.what != frame::kind::ping) {
                return f;
            }
            send_raw("PONG\r\n");
        }
    }
    /// Reads and discards frames until the server closes; true if it did within `timeout`.
    /// `last` gets the last frame before the close (often the closing -ERR).
    bool wait_closed(ms timeout, frame* last_err = nullptr) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                return false;
            }
            frame f = next(left);
            if (f.what == frame::kind::closed) {
                return true;
            }
            if (f.what == frame::kind::timeout) {
                return false;
            }
            if (last_err != nullptr && f.what == frame::kind::err) {
                *last_err = f;
            }
        }
    }

    // ---- commands -------------------------------------------------------------------------

    /// Sends HELLO with `json` (empty: bare HELLO) and returns the reply frame.
    frame hello_raw(const std::string& json = {}, ms timeout = 2000ms) {
        send_raw(json.empty() ? std::string("HELLO\r\n") : "HELLO " + json + "\r\n");
        return next_skip_ping(timeout);
    }
    /// HELLO that must succeed: returns the parsed +HELLO, and remembers the session id.
    std::optional<proto::hello_reply> hello(const std::string& json = {}, ms timeout = 2000ms) {
        send_raw(json.empty() ? std::string("HELLO\r\n") : "HELLO " + json + "\r\n");
        return finish_hello(timeout);
    }
    /// Reads the +HELLO for a HELLO sent earlier (pipelined handshakes); remembers the id.
    std::optional<proto::hello_reply> finish_hello(ms timeout = 2000ms) {
        frame f = next_skip_ping(timeout);
        if (f.what != frame::kind::body || f.body != proto::body_kind::hello) {
            last_failure_ = f.describe();
            return std::nullopt;
        }
        auto r = proto::parse_body<proto::hello_reply>(f.text, big_limits());
        if (r) {
            id_ = r->session;
            hello_ = r;
            hello_json_ = f.text;
        }
        return r;
    }
    [[nodiscard]] proto::session_id id() const noexcept { return id_; }
    [[nodiscard]] const std::string& hello_json() const noexcept { return hello_json_; }
    [[nodiscard]] const std::string& last_failure() const noexcept { return last_failure_; }

    /// Writes SEND (token may be empty).
    bool send_to(proto::session_id to, std::string_view payload, std::string_view token = {}) {
        std::string out;
        proto::encode(out, proto::send_msg{to, payload, token});
        return send_raw(out);
    }
    /// Appends a SEND to `out` (for batching many SENDs into one write).
    static void append_send(std::string& out, proto::session_id to, std::string_view payload,
                            std::string_view token = {}) {
        proto::encode(out, proto::send_msg{to, payload, token});
    }
    /// A command that answers with a body; returns the parsed JSON or nullopt (see last_failure).
    std::optional<nlohmann::json> body_command(const std::string& line, ms timeout = 2000ms) {
        send_raw(line + "\r\n");
        frame f = skip_events(timeout);
        if (f.what != frame::kind::body) {
            last_failure_ = f.describe();
            return std::nullopt;
        }
        return proto::parse_json(f.text, big_limits());
    }
    std::optional<nlohmann::json> stats() { return body_command("STATS"); }
    std::optional<nlohmann::json> info(proto::session_id id) { return body_command("INFO " + id.to_string()); }
    /// The next frame that is not a PING or a MSG (MSGs are counted in skipped_msgs()).
    frame skip_events(ms timeout = 2000ms) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
            frame f = next_skip_ping(left.count() > 0 ? left : 0ms);
            if (f.what != frame::kind::msg) {
                return f;
            }
            ++skipped_msgs_;
        }
    }
    [[nodiscard]] std::size_t skipped_msgs() const noexcept { return skipped_msgs_; }
    /// Round trip: PING and wait for PONG; everything before it is returned through `before`.
    bool ping(ms timeout = 2000ms, std::vector<frame>* before = nullptr) {
        send_raw("PING\r\n");
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
            frame f = next(left.count() > 0 ? left : 0ms);
            if (f.what == frame::kind::pong) {
                return true;
            }
            if (f.what == frame::kind::timeout || f.what == frame::kind::closed) {
                return false;
            }
            if (f.what == frame::kind::ping) {
                send_raw("PONG\r\n");
                continue;
            }
            if (before != nullptr) {
                before->push_back(f);
            }
        }
    }

    /// Limits wide enough for any reply the server may send in tests.
    static proto::limits big_limits() {
        proto::limits l;
        l.max_payload = 64U << 20;
        l.max_json = 64U << 20;
        l.max_json_depth = 64;
        l.max_line = 64U << 10;
        return l;
    }

private:
    std::optional<frame> decode_one() {
        std::string_view in(rx_);
        auto r = dec_.decode(in);
        std::optional<frame> out;
        if (r.status == proto::decode_status::good) {
            out = convert(r.message);
        } else if (r.status == proto::decode_status::bad) {
            frame f;
            f.what = frame::kind::bad;
            f.text = std::string(r.detail);
            out = f;
        }
        rx_.erase(0, r.consumed);
        if (r.status == proto::decode_status::bad && r.fatal) {
            eof_ = true;
            rx_.clear();
        }
        return out;
    }
    static frame convert(const proto::reply& m) {
        frame f;
        std::visit(
            [&](const auto& v) {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_same_v<T, proto::ok_msg>) {
                    f.what = frame::kind::ok;
                    f.text = std::string(v.text);
                } else if constexpr (std::is_same_v<T, proto::err_msg>) {
                    f.what = frame::kind::err;
                    f.code = v.code;
                    f.text = std::string(v.message);
                } else if constexpr (std::is_same_v<T, proto::ping_msg>) {
                    f.what = frame::kind::ping;
                } else if constexpr (std::is_same_v<T, proto::pong_msg>) {
                    f.what = frame::kind::pong;
                } else if constexpr (std::is_same_v<T, proto::deliver_msg>) {
                    f.what = frame::kind::msg;
                    f.from = v.from;
                    f.text = std::string(v.payload);
                } else if constexpr (std::is_same_v<T, proto::ack_msg>) {
                    f.what = frame::kind::ack;
                    f.token = std::string(v.token);
                    f.ack_error = v.error;
                } else if constexpr (std::is_same_v<T, proto::body_msg>) {
                    f.what = frame::kind::body;
                    f.body = v.kind;
                    f.text = std::string(v.json);
                }
            },
            m);
        return f;
    }
    /// Waits up to `timeout` for bytes; false on timeout or close (eof_ set).
    bool fill(ms timeout) {
        if (fd_ < 0) {
            eof_ = true;
            return false;
        }
        if (ssl_ != nullptr) {
            return tls_fill(timeout);
        }
        pollfd p{fd_, POLLIN, 0};
        const int pr = ::poll(&p, 1, static_cast<int>(timeout.count()));
        if (pr <= 0) {
            return false;
        }
        char buf[64 * 1024];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) {
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
                return true;
            }
            eof_ = true;
            return false;
        }
        rx_.append(buf, static_cast<std::size_t>(n));
        return true;
    }

    /// Polls the socket for `events` until `deadline`; false on timeout or error.
    bool wait_io(short events, std::chrono::steady_clock::time_point deadline) const {
        for (;;) {
            const auto left = std::chrono::duration_cast<ms>(deadline - std::chrono::steady_clock::now());
            if (left.count() < 0) {
                return false;
            }
            pollfd p{fd_, events, 0};
            const int pr = ::poll(&p, 1, static_cast<int>(left.count()));
            if (pr > 0) {
                return true;
            }
            if (pr == 0 || errno != EINTR) {
                return false;
            }
        }
    }
    /// OpenSSL's reason for a failed call (error queue, verify result), "" if it has none.
    std::string describe_tls_failure(int err) {
        std::string why = openssl_error_text();
        if (ssl_ != nullptr) {
            const long v = SSL_get_verify_result(ssl_);
            if (v != X509_V_OK) {
                why += (why.empty() ? "" : "; ") + std::string("verify: ") + X509_verify_cert_error_string(v);
            }
        }
        if (why.empty() && err == SSL_ERROR_SYSCALL) {
            why = "connection closed during the handshake";
        }
        if (why.empty() && err == SSL_ERROR_ZERO_RETURN) {
            why = "close_notify";
        }
        return why;
    }
    bool tls_send(std::string_view bytes) {
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (!bytes.empty()) {
            const int chunk = static_cast<int>(std::min<std::size_t>(bytes.size(), 1U << 20));
            const int n = SSL_write(ssl_, bytes.data(), chunk);
            if (n > 0) {
                bytes.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            const int err = SSL_get_error(ssl_, n);
            if ((err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) ||
                !wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                tls_error_ = describe_tls_failure(err);
                return false;
            }
        }
        return true;
    }
    bool tls_fill(ms timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            char buf[16 * 1024];
            const int n = SSL_read(ssl_, buf, sizeof buf);
            if (n > 0) {
                rx_.append(buf, static_cast<std::size_t>(n));
                return true;
            }
            const int err = SSL_get_error(ssl_, n);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                // Nothing yet (or only TLS 1.3 post-handshake messages): wait for more.
                if (!wait_io(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                    return false;
                }
                continue;
            }
            // close_notify, an alert (a refused client certificate), or the socket closed.
            tls_error_ = describe_tls_failure(err);
            eof_ = true;
            return false;
        }
    }
    std::string peer_field(bool serial) const {
        if (ssl_ == nullptr) {
            return {};
        }
        X509* cert = SSL_get1_peer_certificate(ssl_);
        if (cert == nullptr) {
            return {};
        }
        std::string out;
        if (serial) {
            BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), nullptr);
            char* hex = BN_bn2hex(bn);
            out = hex;
            OPENSSL_free(hex);
            BN_free(bn);
        } else {
            char buf[512];
            X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
            out = buf;
        }
        X509_free(cert);
        return out;
    }

    int fd_ = -1;
    SSL* ssl_ = nullptr;
    std::shared_ptr<SSL_CTX> tls_ctx_;
    std::string tls_error_;
    std::string rx_;
    proto::reply_decoder dec_{big_limits()};
    bool eof_ = false;
    proto::session_id id_{};
    std::optional<proto::hello_reply> hello_;
    std::string hello_json_;
    std::string last_failure_;
    std::size_t skipped_msgs_ = 0;
};

}  // namespace lariv::test
