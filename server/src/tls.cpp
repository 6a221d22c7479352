// TLS server contexts and the server handshake with a deadline (tls.hpp).
#include "lariv/server/tls.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>

#include <asio/bind_executor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lariv/server/options.hpp"

namespace lariv::server {

namespace {

/// "config: <key>: <what> <path>: <why>", with the OpenSSL error queue cleared.
[[noreturn]] void fail(const char* key, const std::string& what, const std::string& path,
                       const std::string& why) {
    ERR_clear_error();
    throw config_error(std::string("config: ") + key + ": " + what + " " + path + ": " + why);
}

/// The file must exist and be readable: a clearer message than OpenSSL's for the common case.
void check_readable(const char* key, const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        fail(key, "cannot read", path, std::strerror(errno));
    }
}

}  // namespace

std::shared_ptr<asio::ssl::context> make_server_tls_context(const tls_files& f) {
    namespace ssl = asio::ssl;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    SSL_CTX* h = ctx->native_handle();
    ctx->set_options(ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                     ssl::context::no_tlsv1_1 | ssl::context::single_dh_use |
                     ssl::context::no_compression);
    SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
    SSL_CTX_set_options(h, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    // A registry holds many mostly idle sessions: do not keep ~34 KiB of buffers for each.
    SSL_CTX_set_mode(h, SSL_MODE_RELEASE_BUFFERS);
    // An encrypted key must fail at once, not prompt on a terminal the daemon does not have.
    SSL_CTX_set_default_passwd_cb(h, [](char*, int, int, void*) { return 0; });

    std::error_code ec;
    check_readable("tls_cert", f.cert);
    ctx->use_certificate_chain_file(f.cert, ec);
    if (ec) {
        fail("tls_cert", "cannot load the certificate chain from", f.cert, ec.message());
    }
    check_readable("tls_key", f.key);
    ctx->use_private_key_file(f.key, ssl::context::pem, ec);
    if (ec) {
        fail("tls_key", "cannot load the private key (PEM, unencrypted) from", f.key, ec.message());
    }
    if (SSL_CTX_check_private_key(h) != 1) {
        fail("tls_key", "the key in", f.key, "does not match the certificate in tls_cert");
    }
    if (!f.ca.empty()) {
        check_readable("tls_ca", f.ca);
        ctx->load_verify_file(f.ca, ec);
        if (ec) {
            fail("tls_ca", "cannot load CA certificates from", f.ca, ec.message());
        }
        // The CA names go into the CertificateRequest, so a client can pick the right certificate.
        if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(f.ca.c_str())) {
            SSL_CTX_set_client_CA_list(h, names);
        }
        ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
        // Session resumption with client certificates needs a session id context.
        static constexpr unsigned char sid_ctx[] = "larivd";
        SSL_CTX_set_session_id_context(h, sid_ctx, sizeof sid_ctx - 1);
    } else {
        ctx->set_verify_mode(ssl::verify_none);
    }
    ERR_clear_error();
    return ctx;
}

namespace {

/// One server handshake: the stream, its deadline timer, and the strand both run on.
struct handshake_op : std::enable_shared_from_this<handshake_op> {
    handshake_op(tls_stream s, tls_handshake_handler f)
        : strand(asio::make_strand(s.get_executor()))
        , timer(strand)
        , stream(std::move(s))
        , done(std::move(f)) {}

    void start(std::chrono::milliseconds deadline) {
        // The timer and the handshake both start on the strand, so a deadline that expires at once
        // cannot close the socket while the handshake is being started on another thread.
        asio::post(strand, [self = shared_from_this(), deadline] {
            self->timer.expires_after(deadline);
            self->timer.async_wait([self](std::error_code ec) {
                if (ec || self->finished) {
                    return;
                }
                // The pending handshake completes (operation_aborted) and reports timed_out.
                self->timed_out = true;
                std::error_code ignored;
                self->stream.lowest_layer().close(ignored);
            });
            self->stream.async_handshake(
                asio::ssl::stream_base::server,
                asio::bind_executor(self->strand, [self](std::error_code ec) { self->finish(ec); }));
        });
    }

    void finish(std::error_code ec) {
        finished = true;
        timer.cancel();
        if (timed_out) {
            ec = asio::error::timed_out;
        }
        auto f = std::move(done);
        f(ec, std::move(stream));
    }

    asio::strand<asio::any_io_executor> strand;
    asio::steady_timer timer;
    tls_stream stream;
    tls_handshake_handler done;
    bool finished = false;   // strand only
    bool timed_out = false;  // strand only
};

}  // namespace

void async_server_handshake(tls_stream s, std::chrono::milliseconds deadline, tls_handshake_handler done) {
    std::make_shared<handshake_op>(std::move(s), std::move(done))->start(deadline);
}

}  // namespace lariv::server
