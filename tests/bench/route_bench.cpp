// tests/bench/route_bench.cpp — routing throughput of the real larivd binary: SEND in, MSG out,
// over loopback TCP, measured from the outside (the "routing figures before/after" of a refactor).
//
// For every sample the tool starts the daemon itself on a free loopback port
// (`--port P --monitor-port 0 --threads T --log-level warn`), waits until it accepts, connects
// N sender/receiver pairs, drives them for --warmup + --seconds, drains, and stops the daemon
// (SIGTERM, then SIGKILL after 5 s). Each pair: the receiver HELLOs and takes its session id from
// +HELLO's "session", the sender HELLOs and SENDs to it.
//
// Modes:
//   open  pipelined SENDs without a token; the sender keeps at most --inflight KiB of MSG frames
//         that its receiver has not yet read, so the server's outbound queue (1 MiB by default)
//         never overflows and nothing is dropped by design.
//   ack   SENDs with an ack token, at most --window unacknowledged per sender (and the same
//         --inflight bound): the acknowledged path.
// Every payload carries its sequence number at both ends and a per-pair filler in between
// (bytes 0..255, so \r, \n and NUL travel too); the receiver checks sender id, size, order and
// contents of every MSG, and the sender checks every ACK. Any loss, corruption, reordering,
// error reply, unexpected close, or a daemon that dies (a crash) makes the exit status 1. The
// figures themselves never fail the run.
//
// Client side: plain POSIX sockets + poll(), the codec from lariv::protocol; pairs are spread over
// --client-threads threads (default min(pairs, nproc)); a pair's sender and receiver live in the
// same thread, so the in-flight bound is a plain counter.
//
// Transport: `--transport tcp,tls` (or `--tls` for tls alone) measures the same configurations
// over plaintext TCP and over TLS. For TLS the tool makes a self-signed P-256 certificate with the
// openssl CLI at start (in a temporary directory), starts larivd with --tls-cert/--tls-key on a
// second free port, and its clients speak TLS 1.3 (OpenSSL, non-blocking, partial writes) there.
//
// Several binaries: `--larivd A --compare B [--compare C]` runs the same configurations against
// each binary alternately (sample 1 of A, of B, sample 2 of A, of B, ...) so machine noise hits
// all of them, and prints the ratio of medians B/A.
//
// Output: a header (date, nproc, CPU model, binaries), then one line per configuration with
// msgs/s median [min..max] and MB/s (payload bytes, 10^6) for each binary, each followed by a
// JSON line (also appended to --json FILE when given).
//
// Usage: route_bench --larivd PATH [--compare PATH]... [--threads 1,2] [--pairs 1,4]
//                    [--size 16,256] [--ack | --mode open,ack] [--window 64] [--seconds 3]
//                    [--warmup 0.5] [--samples 5] [--inflight 256] [--client-threads N]
//                    [--server-arg ARG]... [--transport tcp,tls | --tls] [--json FILE] [--verbose]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/error.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/message.hpp"
#include "lariv/protocol/session_id.hpp"

namespace {

namespace proto = lariv::protocol;
using clock_type = std::chrono::steady_clock;

// ----------------------------------------------------------------------------------- options

struct options {
    std::vector<std::string> binaries;  // [0] is the reference ("A")
    std::vector<unsigned> threads{2};
    std::vector<unsigned> pairs{1};
    std::vector<std::size_t> sizes{16};
    std::vector<bool> modes{false};  // false = open, true = ack
    std::vector<bool> transports{false};  // false = tcp, true = tls
    unsigned window = 64;
    std::size_t inflight = 256U * 1024U;  // bytes of MSG frames sent but not yet received
    double seconds = 3.0;
    double warmup = 0.5;
    unsigned samples = 5;
    unsigned client_threads = 0;  // 0: min(pairs, nproc)
    double drain_timeout = 10.0;
    std::vector<std::string> server_args;
    std::string json_path;
    bool verbose = false;
};

[[noreturn]] void usage(const char* why) {
    if (why != nullptr) {
        std::fprintf(stderr, "route_bench: %s\n", why);
    }
    std::fprintf(stderr,
                 "usage: route_bench --larivd PATH [--compare PATH]... [--threads 1,2] [--pairs 1,4]\n"
                 "                   [--size 16,256] [--ack | --mode open,ack] [--window 64]\n"
                 "                   [--seconds 3] [--warmup 0.5] [--samples 5] [--inflight KiB]\n"
                 "                   [--client-threads N] [--server-arg ARG]... [--json FILE] [-v]\n"
                 "  --larivd PATH      daemon to measure (repeat, or use --compare, for more binaries;\n"
                 "                     the first is the reference A of the ratios)\n"
                 "  --threads LIST     larivd --threads values (default 2)\n"
                 "  --pairs LIST       sender/receiver pairs (default 1)\n"
                 "  --size LIST        payload bytes, >= 8 (default 16)\n"
                 "  --ack              tokened SENDs, at most --window unacked per sender\n"
                 "  --mode LIST        open, ack or open,ack (default open)\n"
                 "  --inflight KiB     MSG bytes in flight per pair, not yet received (default 256)\n"
                 "  --seconds S        measured seconds per sample (default 3)\n"
                 "  --warmup S         unmeasured seconds before each sample (default 0.5)\n"
                 "  --samples K        samples per configuration and binary (default 5)\n"
                 "  --server-arg ARG   extra larivd argument (repeatable)\n"
                 "  --transport LIST   tcp, tls or tcp,tls (default tcp); --tls = --transport tls\n"
                 "  --json FILE        also append the JSON lines to FILE\n");
    std::exit(2);
}

template <class T>
std::vector<T> parse_list(const std::string& s, const char* what) {
    std::vector<T> out;
    std::stringstream in(s);
    std::string item;
    while (std::getline(in, item, ',')) {
        char* end = nullptr;
        errno = 0;
        const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
        if (item.empty() || end == nullptr || *end != '\0' || errno != 0 || v == 0) {
            std::fprintf(stderr, "route_bench: bad %s value '%s'\n", what, item.c_str());
            std::exit(2);
        }
        out.push_back(static_cast<T>(v));
    }
    if (out.empty()) {
        usage("empty list");
    }
    return out;
}

double parse_double(const std::string& s, const char* what) {
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end == nullptr || *end != '\0' || !(v >= 0.0)) {
        std::fprintf(stderr, "route_bench: bad %s value '%s'\n", what, s.c_str());
        std::exit(2);
    }
    return v;
}

options parse_args(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        std::string v;
        bool has_inline = false;
        if (a.rfind("--", 0) == 0) {
            if (const auto eq = a.find('='); eq != std::string::npos) {
                v = a.substr(eq + 1);
                a = a.substr(0, eq);
                has_inline = true;
            }
        }
        auto value = [&]() -> std::string {
            if (has_inline) {
                return v;
            }
            if (i + 1 >= argc) {
                usage(("missing value for " + a).c_str());
            }
            return argv[++i];
        };
        if (a == "--larivd" || a == "--compare") {
            o.binaries.push_back(value());
        } else if (a == "--threads") {
            o.threads = parse_list<unsigned>(value(), "--threads");
        } else if (a == "--pairs") {
            o.pairs = parse_list<unsigned>(value(), "--pairs");
        } else if (a == "--size" || a == "--sizes") {
            o.sizes = parse_list<std::size_t>(value(), "--size");
        } else if (a == "--ack") {
            o.modes = {true};
        } else if (a == "--mode" || a == "--modes") {
            o.modes.clear();
            std::stringstream in(value());
            std::string item;
            while (std::getline(in, item, ',')) {
                if (item == "open") {
                    o.modes.push_back(false);
                } else if (item == "ack") {
                    o.modes.push_back(true);
                } else {
                    usage(("bad --mode '" + item + "' (open or ack)").c_str());
                }
            }
            if (o.modes.empty()) {
                usage("empty --mode");
            }
        } else if (a == "--tls") {
            o.transports = {true};
        } else if (a == "--transport" || a == "--transports") {
            o.transports.clear();
            std::stringstream in(value());
            std::string item;
            while (std::getline(in, item, ',')) {
                if (item == "tcp") {
                    o.transports.push_back(false);
                } else if (item == "tls") {
                    o.transports.push_back(true);
                } else {
                    usage(("bad --transport '" + item + "' (tcp or tls)").c_str());
                }
            }
            if (o.transports.empty()) {
                usage("empty --transport");
            }
        } else if (a == "--window") {
            o.window = parse_list<unsigned>(value(), "--window").at(0);
        } else if (a == "--inflight") {
            o.inflight = parse_list<std::size_t>(value(), "--inflight").at(0) * 1024U;
        } else if (a == "--seconds") {
            o.seconds = parse_double(value(), "--seconds");
        } else if (a == "--warmup") {
            o.warmup = parse_double(value(), "--warmup");
        } else if (a == "--samples") {
            o.samples = parse_list<unsigned>(value(), "--samples").at(0);
        } else if (a == "--client-threads") {
            o.client_threads = parse_list<unsigned>(value(), "--client-threads").at(0);
        } else if (a == "--drain-timeout") {
            o.drain_timeout = parse_double(value(), "--drain-timeout");
        } else if (a == "--server-arg") {
            o.server_args.push_back(value());
        } else if (a == "--json") {
            o.json_path = value();
        } else if (a == "-v" || a == "--verbose") {
            o.verbose = true;
        } else if (a == "-h" || a == "--help") {
            usage(nullptr);
        } else {
            usage(("unknown argument " + a).c_str());
        }
    }
    if (o.binaries.empty()) {
        usage("--larivd PATH is required");
    }
    if (o.seconds <= 0.0) {
        usage("--seconds must be > 0");
    }
    for (const std::size_t s : o.sizes) {
        if (s < 8 || s > 1024U * 1024U) {
            usage("--size must be 8..1048576 (the payload carries an 8-byte sequence number)");
        }
    }
    for (const auto& b : o.binaries) {
        if (::access(b.c_str(), X_OK) != 0) {
            std::fprintf(stderr, "route_bench: %s: not an executable (%s)\n", b.c_str(),
                         std::strerror(errno));
            std::exit(2);
        }
    }
    return o;
}

// ----------------------------------------------------------------------------------- failures

std::atomic<bool> g_failed{false};
std::mutex g_fail_mu;
std::string g_fail_msg;

void fail(const std::string& msg) {
    const std::lock_guard lock(g_fail_mu);
    if (!g_failed.exchange(true)) {
        g_fail_msg = msg;
    }
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// ----------------------------------------------------------------------------------- TLS

/// The certificate larivd serves in TLS samples, and the client context (made once, at start).
struct tls_setup {
    std::string dir, cert, key;
    SSL_CTX* client = nullptr;
    ~tls_setup() {
        if (client != nullptr) {
            SSL_CTX_free(client);
        }
        if (!dir.empty()) {
            const std::string cmd = "rm -rf '" + dir + "'";
            [[maybe_unused]] const int rc = std::system(cmd.c_str());
        }
    }
};
tls_setup g_tls;

/// Makes the self-signed certificate with the openssl CLI and the client context. Exits 2 when
/// it cannot (no openssl CLI, say).
void init_tls() {
    char tmpl[] = "/tmp/route_bench_tls.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
        std::fprintf(stderr, "route_bench: %s\n", errno_text("mkdtemp").c_str());
        std::exit(2);
    }
    g_tls.dir = tmpl;
    g_tls.cert = g_tls.dir + "/cert.pem";
    g_tls.key = g_tls.dir + "/key.pem";
    const std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
                            " -subj /CN=localhost -keyout '" + g_tls.key + "' -out '" + g_tls.cert +
                            "' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) {
        std::fprintf(stderr, "route_bench: --transport tls needs the openssl CLI to make a certificate\n");
        std::exit(2);
    }
    g_tls.client = SSL_CTX_new(TLS_client_method());
    if (g_tls.client == nullptr || SSL_CTX_load_verify_locations(g_tls.client, g_tls.cert.c_str(), nullptr) != 1) {
        std::fprintf(stderr, "route_bench: client TLS context failed\n");
        std::exit(2);
    }
    SSL_CTX_set_min_proto_version(g_tls.client, TLS1_2_VERSION);
    SSL_CTX_set_verify(g_tls.client, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_mode(g_tls.client, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

/// The last OpenSSL error as text (the queue is cleared).
std::string ssl_error_text() {
    std::string out;
    while (const unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        out += out.empty() ? "" : "; ";
        out += buf;
    }
    return out.empty() ? std::string("no OpenSSL error queued") : out;
}

// ----------------------------------------------------------------------------------- the daemon

std::uint16_t free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;
    }
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    socklen_t len = sizeof sa;
    std::uint16_t port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0) {
        port = ntohs(sa.sin_port);
    }
    ::close(fd);
    return port;
}

int connect_loopback(std::uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) {
        return "exit status " + std::to_string(WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
        const int sig = WTERMSIG(status);
        const char* name = ::strsignal(sig);
        return "killed by signal " + std::to_string(sig) + " (" + (name != nullptr ? name : "?") +
               ")" + (WCOREDUMP(status) ? ", core dumped" : "");
    }
    return "status " + std::to_string(status);
}

/// One larivd process, started on a free loopback port, output in a temporary log file.
class daemon_process {
public:
    daemon_process() = default;
    daemon_process(const daemon_process&) = delete;
    daemon_process& operator=(const daemon_process&) = delete;
    ~daemon_process() {
        kill_hard();
        if (!log_path_.empty()) {
            ::unlink(log_path_.c_str());
        }
    }

    /// Starts `bin` and waits until it accepts; false (with `err`) when it cannot.
    bool start(const std::string& bin, unsigned threads, const std::vector<std::string>& extra,
               bool tls, std::string& err) {
        if (log_path_.empty()) {
            char tmpl[] = "/tmp/route_bench_larivd.XXXXXX";
            const int fd = ::mkstemp(tmpl);
            if (fd < 0) {
                err = errno_text("mkstemp");
                return false;
            }
            ::close(fd);
            log_path_ = tmpl;
        }
        for (int attempt = 0; attempt < 5; ++attempt) {
            port_ = free_port();
            if (port_ == 0) {
                err = errno_text("no free port");
                return false;
            }
            std::vector<std::string> args{bin,           "--port",      std::to_string(port_),
                                          "--monitor-port", "0",       "--threads",
                                          std::to_string(threads), "--log-level", "warn"};
            tls_port_ = 0;
            if (tls) {
                do {
                    tls_port_ = free_port();
                } while (tls_port_ == port_);
                args.insert(args.end(), {"--tls-cert", g_tls.cert, "--tls-key", g_tls.key,
                                         "--tls-port", std::to_string(tls_port_)});
            }
            args.insert(args.end(), extra.begin(), extra.end());
            if (!spawn(args, err)) {
                return false;
            }
            const auto deadline = clock_type::now() + std::chrono::seconds(10);
            bool exited = false;
            while (clock_type::now() < deadline) {
                if (!alive()) {
                    exited = true;
                    break;
                }
                const int fd = connect_loopback(client_port());
                if (fd >= 0) {
                    ::close(fd);
                    return true;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            }
            if (!exited) {
                err = bin + " did not accept on 127.0.0.1:" + std::to_string(client_port()) + " within 10 s";
                kill_hard();
                return false;
            }
            // It exited at once: most likely the port was taken in the meantime; try another.
            err = bin + " exited at start (" + describe_status(status_) + ")\n" + log_tail();
        }
        return false;
    }

    /// True while the process runs; records its status when it has ended.
    bool alive() {
        if (pid_ <= 0) {
            return false;
        }
        int st = 0;
        const pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            status_ = st;
            pid_ = -1;
            return false;
        }
        return true;
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns "" for a clean stop, else what went wrong;
    /// `crashed` is set when the daemon died on its own or on a signal other than ours.
    std::string stop(bool& crashed, std::chrono::milliseconds grace = std::chrono::seconds(5)) {
        crashed = false;
        if (!alive()) {
            crashed = true;
            return "larivd had already exited (" + describe_status(status_) + ")";
        }
        ::kill(pid_, SIGTERM);
        const auto deadline = clock_type::now() + grace;
        while (clock_type::now() < deadline) {
            if (!alive()) {
                if (WIFEXITED(status_) && WEXITSTATUS(status_) == 0) {
                    return {};
                }
                if (WIFSIGNALED(status_) && WTERMSIG(status_) == SIGTERM) {
                    return {};  // no handler: the default action is a clean enough stop
                }
                crashed = true;
                return "larivd stopped badly after SIGTERM (" + describe_status(status_) + ")";
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        kill_hard();
        return "larivd ignored SIGTERM for " + std::to_string(grace.count()) + " ms; SIGKILLed";
    }

    [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
    /// Where the clients connect: the TLS port in TLS samples, else the plaintext one.
    [[nodiscard]] std::uint16_t client_port() const noexcept { return tls_port_ != 0 ? tls_port_ : port_; }

    /// The last lines the daemon wrote, for failure reports.
    [[nodiscard]] std::string log_tail(std::size_t max_bytes = 3000) const {
        std::ifstream in(log_path_, std::ios::binary);
        std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (s.empty()) {
            return "(larivd wrote nothing)";
        }
        if (s.size() > max_bytes) {
            s = "..." + s.substr(s.size() - max_bytes);
        }
        return "larivd log:\n" + s;
    }

private:
    bool spawn(const std::vector<std::string>& args, std::string& err) {
        std::vector<char*> argv;
        argv.reserve(args.size() + 1);
        for (const auto& a : args) {
            argv.push_back(const_cast<char*>(a.c_str()));
        }
        argv.push_back(nullptr);
        const pid_t parent = ::getpid();
        const pid_t pid = ::fork();
        if (pid < 0) {
            err = errno_text("fork");
            return false;
        }
        if (pid == 0) {
            // Child: die with the benchmark, write to the log, run the daemon.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) {
                ::_exit(127);
            }
            const int log = ::open(log_path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
            const int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (log >= 0) {
                ::dup2(log, 1);
                ::dup2(log, 2);
            }
            if (null_in >= 0) {
                ::dup2(null_in, 0);
            }
            ::signal(SIGPIPE, SIG_DFL);
            ::execv(argv[0], argv.data());
            const char msg[] = "route_bench: execv failed\n";
            [[maybe_unused]] const ssize_t w = ::write(2, msg, sizeof msg - 1);
            ::_exit(127);
        }
        pid_ = pid;
        status_ = 0;
        return true;
    }

    void kill_hard() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            int st = 0;
            ::waitpid(pid_, &st, 0);
            status_ = st;
            pid_ = -1;
        }
    }

    pid_t pid_ = -1;
    int status_ = 0;
    std::uint16_t port_ = 0;
    std::uint16_t tls_port_ = 0;
    std::string log_path_;
};

// ----------------------------------------------------------------------------------- clients

/// One client connection: non-blocking socket, reply decoder, pending output.
struct connection {
    int fd = -1;
    SSL* ssl = nullptr;  // TLS samples: all I/O goes through it
    proto::reply_decoder dec;
    std::string out;
    std::size_t out_off = 0;
    proto::session_id id{};
    std::string name;

    connection() = default;
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection() { close(); }
    void close() noexcept {
        if (ssl != nullptr) {
            SSL_free(ssl);
            ssl = nullptr;
        }
        if (fd >= 0) {
            ::close(fd);
            fd = -1;
        }
    }
    [[nodiscard]] bool pending() const noexcept { return out_off < out.size(); }

    /// SSL_write of what is pending, as send(2) would report it (-1 with EAGAIN: try later).
    ssize_t tls_send() {
        const int len = static_cast<int>(std::min<std::size_t>(out.size() - out_off, 1U << 30));
        const int n = SSL_write(ssl, out.data() + out_off, len);
        if (n > 0) {
            return n;
        }
        const int e = SSL_get_error(ssl, n);
        errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
        if (errno == EPIPE) {
            fail(name + ": SSL_write: " + ssl_error_text());
        }
        return -1;
    }
    /// recv(2) or SSL_read, as recv(2) reports it (-1 with EAGAIN: nothing now; 0: closed).
    ssize_t receive(char* buf, std::size_t len) {
        if (ssl == nullptr) {
            return ::recv(fd, buf, len, MSG_DONTWAIT);
        }
        const int n = SSL_read(ssl, buf, static_cast<int>(std::min<std::size_t>(len, 1U << 30)));
        if (n > 0) {
            return n;
        }
        const int e = SSL_get_error(ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            errno = EAGAIN;
            return -1;
        }
        ERR_clear_error();
        return 0;  // close_notify, an alert or the socket closed: the connection is over
    }

    /// Writes what the socket takes now. False (after fail()) on a socket error.
    bool flush() {
        while (out_off < out.size()) {
            const ssize_t n = ssl != nullptr ? tls_send() : ::send(fd, out.data() + out_off, out.size() - out_off,
                                     MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    break;
                }
                fail(name + ": send: " + std::strerror(errno));
                return false;
            }
            out_off += static_cast<std::size_t>(n);
        }
        if (out_off == out.size()) {
            out.clear();
            out_off = 0;
        } else if (out_off > (1U << 20)) {
            out.erase(0, out_off);
            out_off = 0;
        }
        return true;
    }
};

bool connect_client(connection& c, std::uint16_t port, bool tls, std::string& err) {
    c.fd = connect_loopback(port);
    if (c.fd < 0) {
        err = c.name + ": " + errno_text("connect");
        return false;
    }
    int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (g_tls.client != nullptr && tls) {
        // Blocking handshake first, then the socket goes non-blocking like a plaintext one.
        c.ssl = SSL_new(g_tls.client);
        SSL_set_fd(c.ssl, c.fd);
        SSL_set_tlsext_host_name(c.ssl, "localhost");
        if (SSL_connect(c.ssl) != 1) {
            err = c.name + ": TLS handshake: " + ssl_error_text();
            return false;
        }
    }
    const int fl = ::fcntl(c.fd, F_GETFL);
    ::fcntl(c.fd, F_SETFL, fl | O_NONBLOCK);
    return true;
}

/// HELLO and wait (at most 5 s) for +HELLO; keeps the session id in c.id.
bool handshake(connection& c, std::string& err) {
    proto::hello_msg h;
    h.name = c.name;
    proto::encode(c.out, h);
    const auto deadline = clock_type::now() + std::chrono::seconds(5);
    char buf[8192];
    while (clock_type::now() < deadline) {
        if (!c.flush()) {
            err = g_fail_msg;
            return false;
        }
        pollfd p{c.fd, static_cast<short>(POLLIN | (c.pending() ? POLLOUT : 0)), 0};
        if (::poll(&p, 1, 50) <= 0) {
            continue;
        }
        const ssize_t n = c.receive(buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }
        if (n <= 0) {
            err = c.name + ": connection closed during HELLO";
            return false;
        }
        std::string_view in(buf, static_cast<std::size_t>(n));
        while (!in.empty()) {
            auto r = c.dec.decode(in);
            in.remove_prefix(r.consumed);
            if (r.status == proto::decode_status::need_more) {
                break;
            }
            if (r.status == proto::decode_status::bad) {
                err = c.name + ": undecodable reply to HELLO: " + std::string(r.detail);
                return false;
            }
            if (const auto* b = std::get_if<proto::body_msg>(&r.message);
                b != nullptr && b->kind == proto::body_kind::hello) {
                auto hr = proto::parse_body<proto::hello_reply>(b->json, c.dec.limits());
                if (!hr) {
                    err = c.name + ": bad +HELLO JSON: " + std::string(b->json);
                    return false;
                }
                c.id = hr->session;
                if (!in.empty()) {
                    err = c.name + ": unexpected bytes after +HELLO";
                    return false;
                }
                return true;
            }
            if (std::holds_alternative<proto::ping_msg>(r.message)) {
                c.out += "PONG\r\n";
                continue;
            }
            if (const auto* e = std::get_if<proto::err_msg>(&r.message)) {
                err = c.name + ": HELLO refused: -ERR " + std::string(proto::to_string(e->code)) +
                      " " + std::string(e->message);
                return false;
            }
            err = c.name + ": unexpected reply to HELLO";
            return false;
        }
    }
    err = c.name + ": no +HELLO within 5 s";
    return false;
}

constexpr std::size_t token_digits = 16;  // ack token: the sequence number, 16 hex digits

/// One sender/receiver pair and its verification state. Touched by one client thread only,
/// except `delivered`, which the main thread reads.
struct pair_state {
    unsigned index = 0;
    std::size_t size = 0;
    bool ack = false;
    unsigned window = 0;
    std::size_t inflight_cap = 0;

    connection rx;  // receiver
    connection tx;  // sender

    std::string frame;          // one SEND frame; the sequence number is patched in
    std::size_t token_off = 0;  // offset of the token digits in `frame` (ack mode)
    std::size_t payload_off = 0;
    std::string filler;            // expected payload bytes between the sequence numbers
    std::size_t msg_frame_bytes = 0;  // size of the MSG frame the receiver reads per message

    std::uint64_t next_seq = 0;  // SENDs generated
    std::uint64_t recv_seq = 0;  // MSGs received and verified (= next expected sequence)
    std::uint64_t ack_low = 0;   // every seq below this is acknowledged
    std::vector<std::uint8_t> acked;  // window ring: acked[seq % window]
    std::uint64_t acks = 0;

    std::atomic<std::uint64_t> delivered{0};  // recv_seq, published for the main thread
};

void build_templates(pair_state& p) {
    p.filler.resize(p.size >= 16 ? p.size - 16 : p.size - 8);
    for (std::size_t i = 0; i < p.filler.size(); ++i) {
        p.filler[i] = static_cast<char>((i * 7 + p.index * 31 + 13) & 0xff);
    }
    std::string payload(p.size, '\0');
    std::memcpy(payload.data() + 8, p.filler.data(), p.filler.size());
    p.frame.clear();
    proto::encode_send_header(p.frame, p.rx.id, p.size,
                              p.ack ? std::string_view("0000000000000000") : std::string_view());
    if (p.ack) {
        p.token_off = p.frame.size() - 2 - token_digits;
    }
    p.payload_off = p.frame.size();
    p.frame += payload;
    p.frame += "\r\n";
    std::string header;
    proto::encode_deliver_header(header, p.tx.id, p.size);
    p.msg_frame_bytes = header.size() + p.size + 2;
    if (p.ack) {
        p.acked.assign(p.window, 0);
    }
}

void put_token(char* out, std::uint64_t seq) {
    static constexpr char hex[] = "0123456789abcdef";
    for (std::size_t i = token_digits; i-- > 0;) {
        out[i] = hex[seq & 0xf];
        seq >>= 4;
    }
}

std::optional<std::uint64_t> parse_token(std::string_view t) {
    if (t.size() != token_digits) {
        return std::nullopt;
    }
    std::uint64_t v = 0;
    for (const char ch : t) {
        unsigned d = 0;
        if (ch >= '0' && ch <= '9') {
            d = static_cast<unsigned>(ch - '0');
        } else if (ch >= 'a' && ch <= 'f') {
            d = static_cast<unsigned>(ch - 'a' + 10);
        } else {
            return std::nullopt;
        }
        v = (v << 4) | d;
    }
    return v;
}

/// Appends SEND frames while the in-flight bound, the ack window and an output-chunk cap allow.
void generate(pair_state& p) {
    constexpr std::size_t chunk = 64U * 1024U;
    const std::size_t cap_msgs = std::max<std::size_t>(1, p.inflight_cap / p.msg_frame_bytes);
    while (p.tx.out.size() - p.tx.out_off < chunk) {
        if (p.next_seq - p.recv_seq >= cap_msgs) {
            return;
        }
        if (p.ack && p.next_seq - p.ack_low >= p.window) {
            return;
        }
        const std::size_t at = p.tx.out.size();
        p.tx.out += p.frame;
        char* f = p.tx.out.data() + at;
        const std::uint64_t seq = p.next_seq;
        std::memcpy(f + p.payload_off, &seq, 8);
        if (p.size >= 16) {
            std::memcpy(f + p.payload_off + p.size - 8, &seq, 8);
        }
        if (p.ack) {
            put_token(f + p.token_off, seq);
        }
        ++p.next_seq;
    }
}

std::string err_text(const proto::err_msg& e) {
    return "-ERR " + std::string(proto::to_string(e.code)) + " " + std::string(e.message);
}


/// The replies both ends handle alike: PING (answered), PONG (ignored), -ERR (a failure).
/// nullopt for anything else.
std::optional<bool> control_reply(std::string& out, const std::string& who, const proto::reply& m) {
    if (std::holds_alternative<proto::ping_msg>(m)) {
        out += "PONG\r\n";
        return true;
    }
    if (std::holds_alternative<proto::pong_msg>(m)) {
        return true;
    }
    if (const auto* e = std::get_if<proto::err_msg>(&m)) {
        fail(who + ": " + err_text(*e));
        return false;
    }
    return std::nullopt;
}
/// Checks one MSG at the receiver.
bool on_receiver_reply(pair_state& p, const proto::reply& m) {
    const std::string who = "pair " + std::to_string(p.index) + " receiver";
    if (const auto* d = std::get_if<proto::deliver_msg>(&m)) {
        if (d->from != p.tx.id) {
            fail(who + ": MSG from " + d->from.to_string() + ", expected the sender " +
                 p.tx.id.to_string());
            return false;
        }
        const std::string_view pl = d->payload;
        if (pl.size() != p.size) {
            fail(who + ": MSG of " + std::to_string(pl.size()) + " bytes, expected " +
                 std::to_string(p.size) + " (message " + std::to_string(p.recv_seq) + ")");
            return false;
        }
        std::uint64_t seq = 0;
        std::memcpy(&seq, pl.data(), 8);
        if (seq != p.recv_seq) {
            fail(who + ": got message " + std::to_string(seq) + ", expected " +
                 std::to_string(p.recv_seq) + (seq > p.recv_seq ? " (loss)" : " (duplicate/reorder)"));
            return false;
        }
        std::uint64_t tail = seq;
        if (p.size >= 16) {
            std::memcpy(&tail, pl.data() + p.size - 8, 8);
        }
        if (tail != seq || std::memcmp(pl.data() + 8, p.filler.data(), p.filler.size()) != 0) {
            fail(who + ": payload of message " + std::to_string(seq) + " is corrupt");
            return false;
        }
        ++p.recv_seq;
        if (p.recv_seq > p.next_seq) {
            fail(who + ": more messages received than sent");
            return false;
        }
        return true;
    }
    if (auto handled = control_reply(p.rx.out, who, m)) {
        return *handled;
    }
    fail(who + ": unexpected reply");
    return false;
}

/// Checks one reply at the sender: ACKs (ack mode), PINGs; anything else is a failure.
bool on_sender_reply(pair_state& p, const proto::reply& m) {
    const std::string who = "pair " + std::to_string(p.index) + " sender";
    if (const auto* a = std::get_if<proto::ack_msg>(&m)) {
        const auto seq = parse_token(a->token);
        if (!p.ack || !seq) {
            fail(who + ": unexpected ACK " + std::string(a->token));
            return false;
        }
        if (a->error) {
            fail(who + ": ACK " + std::string(a->token) + " " +
                 std::string(proto::to_string(*a->error)) + " (message " + std::to_string(*seq) +
                 " refused)");
            return false;
        }
        if (*seq < p.ack_low || *seq >= p.next_seq || p.acked[*seq % p.window] != 0) {
            fail(who + ": ACK for message " + std::to_string(*seq) +
                 " that is not outstanding (duplicate or unknown)");
            return false;
        }
        p.acked[*seq % p.window] = 1;
        ++p.acks;
        while (p.ack_low < p.next_seq && p.acked[p.ack_low % p.window] != 0) {
            p.acked[p.ack_low % p.window] = 0;
            ++p.ack_low;
        }
        return true;
    }
    if (auto handled = control_reply(p.tx.out, who, m)) {
        return *handled;
    }
    if (std::holds_alternative<proto::deliver_msg>(m)) {
        fail(who + ": unexpected MSG (nobody sends to the sender)");
        return false;
    }
    fail(who + ": unexpected reply");
    return false;
}

/// Reads what the socket has (a few buffers at most) and hands every reply to `handle`.
template <class Handle>
bool read_side(connection& c, std::vector<char>& buf, Handle&& handle) {
    for (int round = 0; round < 4; ++round) {
        const ssize_t n = c.receive(buf.data(), buf.size());
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                return true;
            }
            fail(c.name + ": recv: " + std::strerror(errno));
            return false;
        }
        if (n == 0) {
            fail(c.name + ": the server closed the connection");
            return false;
        }
        std::string_view in(buf.data(), static_cast<std::size_t>(n));
        while (!in.empty()) {
            auto r = c.dec.decode(in);
            in.remove_prefix(r.consumed);
            if (r.status == proto::decode_status::need_more) {
                break;
            }
            if (r.status == proto::decode_status::bad) {
                fail(c.name + ": undecodable frame from the server: " + std::string(r.detail));
                return false;
            }
            if (!handle(r.message)) {
                return false;
            }
        }
        if (static_cast<std::size_t>(n) < buf.size()) {
            return true;
        }
    }
    return true;
}

std::atomic<bool> g_stop{false};

/// One client thread: drives its pairs until g_stop, then drains (every SEND received, every
/// ACK back) within `drain_timeout` seconds.
void client_loop(std::vector<pair_state*> pairs, double drain_timeout) {
    std::vector<char> buf(256U * 1024U);
    std::vector<pollfd> pfds(pairs.size() * 2);
    std::optional<clock_type::time_point> drain_deadline;
    for (;;) {
        if (g_failed.load(std::memory_order_relaxed)) {
            return;
        }
        const bool stopping = g_stop.load(std::memory_order_relaxed);
        if (stopping && !drain_deadline) {
            drain_deadline = clock_type::now() +
                             std::chrono::duration_cast<clock_type::duration>(
                                 std::chrono::duration<double>(drain_timeout));
        }
        bool done = true;
        for (std::size_t i = 0; i < pairs.size(); ++i) {
            pair_state& p = *pairs[i];
            if (!stopping) {
                generate(p);
            }
            if (!p.tx.flush() || !p.rx.flush()) {
                return;
            }
            if (p.tx.pending() || p.rx.pending() || p.recv_seq != p.next_seq ||
                (p.ack && p.ack_low != p.next_seq)) {
                done = false;
            }
            pfds[2 * i] = {p.rx.fd, static_cast<short>(POLLIN | (p.rx.pending() ? POLLOUT : 0)), 0};
            pfds[2 * i + 1] = {p.tx.fd, static_cast<short>(POLLIN | (p.tx.pending() ? POLLOUT : 0)),
                               0};
        }
        if (stopping && done) {
            return;
        }
        if (stopping && clock_type::now() > *drain_deadline) {
            std::string what;
            for (const pair_state* p : pairs) {
                if (p->recv_seq != p->next_seq || (p->ack && p->ack_low != p->next_seq)) {
                    what += " pair " + std::to_string(p->index) + ": sent " +
                            std::to_string(p->next_seq) + ", received " + std::to_string(p->recv_seq) +
                            (p->ack ? ", acked " + std::to_string(p->acks) : std::string()) + ";";
                }
            }
            fail("messages missing " + std::to_string(drain_timeout) + " s after the stop:" + what);
            return;
        }
        const int pr = ::poll(pfds.data(), static_cast<nfds_t>(pfds.size()), 20);
        if (pr < 0) {
            if (errno == EINTR) {
                continue;
            }
            fail(errno_text("poll"));
            return;
        }
        if (pr == 0) {
            continue;
        }
        for (std::size_t i = 0; i < pairs.size(); ++i) {
            pair_state& p = *pairs[i];
            if ((pfds[2 * i].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
                if (!read_side(p.rx, buf, [&](const proto::reply& m) { return on_receiver_reply(p, m); })) {
                    return;
                }
                p.delivered.store(p.recv_seq, std::memory_order_relaxed);
            }
            if ((pfds[2 * i + 1].revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
                if (!read_side(p.tx, buf, [&](const proto::reply& m) { return on_sender_reply(p, m); })) {
                    return;
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------------- one sample

struct config {
    unsigned threads = 2;
    unsigned pairs = 1;
    std::size_t size = 16;
    bool ack = false;
    bool tls = false;
};

std::string config_name(const config& c) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%-4s size=%-5zu pairs=%-2u threads=%u %s", c.ack ? "ack" : "open",
                  c.size, c.pairs, c.threads, c.tls ? "tls" : "tcp");
    return buf;
}

unsigned nproc() {
    const long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<unsigned>(n) : 1U;
}

void sleep_watching(double seconds) {
    const auto until = clock_type::now() + std::chrono::duration_cast<clock_type::duration>(
                                               std::chrono::duration<double>(seconds));
    while (!g_failed.load(std::memory_order_relaxed)) {
        const auto now = clock_type::now();
        if (now >= until) {
            return;
        }
        std::this_thread::sleep_for(std::min<clock_type::duration>(until - now,
                                                                    std::chrono::milliseconds(10)));
    }
}

/// Runs one sample against `bin`; msgs/s, or nullopt after a failure (g_fail_msg says why).
std::optional<double> run_sample(const std::string& bin, const config& c, const options& o) {
    daemon_process d;
    std::string err;
    if (!d.start(bin, c.threads, o.server_args, c.tls, err)) {
        fail(err);
        return std::nullopt;
    }
    std::vector<std::unique_ptr<pair_state>> pairs;
    for (unsigned i = 0; i < c.pairs; ++i) {
        auto p = std::make_unique<pair_state>();
        p->index = i;
        p->size = c.size;
        p->ack = c.ack;
        p->window = o.window;
        p->inflight_cap = o.inflight;
        p->rx.name = "route-bench-rx-" + std::to_string(i);
        p->tx.name = "route-bench-tx-" + std::to_string(i);
        if (!connect_client(p->rx, d.client_port(), c.tls, err) || !handshake(p->rx, err) ||
            !connect_client(p->tx, d.client_port(), c.tls, err) || !handshake(p->tx, err)) {
            fail(err + "\n" + d.log_tail());
            return std::nullopt;
        }
        build_templates(*p);
        pairs.push_back(std::move(p));
    }

    const unsigned nthreads =
        std::min(c.pairs, o.client_threads != 0 ? o.client_threads : std::max(1U, nproc()));
    std::vector<std::vector<pair_state*>> groups(nthreads);
    for (unsigned i = 0; i < c.pairs; ++i) {
        groups[i % nthreads].push_back(pairs[i].get());
    }
    g_stop.store(false);
    std::vector<std::thread> threads;
    threads.reserve(nthreads);
    for (auto& g : groups) {
        threads.emplace_back(client_loop, g, o.drain_timeout);
    }
    auto delivered = [&] {
        std::uint64_t n = 0;
        for (const auto& p : pairs) {
            n += p->delivered.load(std::memory_order_relaxed);
        }
        return n;
    };
    sleep_watching(o.warmup);
    const std::uint64_t c0 = delivered();
    const auto t0 = clock_type::now();
    sleep_watching(o.seconds);
    const std::uint64_t c1 = delivered();
    const auto t1 = clock_type::now();
    g_stop.store(true);
    for (auto& t : threads) {
        t.join();
    }
    const bool client_failed = g_failed.load();
    std::uint64_t sent = 0;
    for (const auto& p : pairs) {
        sent += p->next_seq;
    }
    for (auto& p : pairs) {
        p->tx.close();
        p->rx.close();
    }
    bool crashed = false;
    const std::string stop_msg = d.stop(crashed);
    if (crashed || client_failed) {
        fail(stop_msg);  // recorded only when nothing failed before
        const std::lock_guard lock(g_fail_mu);
        if (crashed && client_failed) {
            g_fail_msg += "\n" + stop_msg;
        }
        g_fail_msg += "\n" + d.log_tail();
        return std::nullopt;
    }
    if (!stop_msg.empty()) {
        std::fprintf(stderr, "route_bench: warning: %s\n", stop_msg.c_str());
    }
    if (c1 == c0) {
        fail("no message delivered in " + std::to_string(o.seconds) + " s (sent " +
             std::to_string(sent) + ")");
        return std::nullopt;
    }
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    return static_cast<double>(c1 - c0) / secs;
}

// ----------------------------------------------------------------------------------- reporting

struct summary {
    double median = 0, min = 0, max = 0;
};

summary summarize(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    summary s;
    s.min = v.front();
    s.max = v.back();
    const std::size_t n = v.size();
    s.median = n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
    return s;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (const char ch : s) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (static_cast<unsigned char>(ch) < 0x20) {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(ch)));
            out += b;
        } else {
            out += ch;
        }
    }
    return out;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            if (const auto colon = line.find(':'); colon != std::string::npos) {
                auto v = line.substr(colon + 1);
                v.erase(0, v.find_first_not_of(" \t"));
                return v;
            }
        }
    }
    return "unknown";
}

std::string now_utc() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string binary_info(const std::string& bin) {
    std::string info;
    struct stat st{};
    if (::stat(bin.c_str(), &st) == 0) {
        std::tm tm{};
        ::gmtime_r(&st.st_mtime, &tm);
        char buf[64];
        std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
        info = std::to_string(st.st_size) + " bytes, modified " + buf;
    }
    const std::string cmd = "'" + bin + "' --version 2>/dev/null";
    if (FILE* f = ::popen(cmd.c_str(), "r")) {
        char line[256] = {0};
        if (std::fgets(line, sizeof line, f) != nullptr) {
            std::string v = line;
            while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) {
                v.pop_back();
            }
            info = v + ", " + info;
        }
        ::pclose(f);
    }
    return info;
}

std::string label(std::size_t i) { return std::string(1, static_cast<char>('A' + std::min<std::size_t>(i, 25))); }

std::string fmt_g(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

std::string fmt_rate(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    const options o = parse_args(argc, argv);

    std::vector<config> configs;
    for (const unsigned t : o.threads) {
        for (const bool ack : o.modes) {
            for (const std::size_t s : o.sizes) {
                for (const unsigned p : o.pairs) {
                    for (const bool tls : o.transports) {
                        configs.push_back({t, p, s, ack, tls});
                    }
                }
            }
        }
    }
    if (std::find(o.transports.begin(), o.transports.end(), true) != o.transports.end()) {
        init_tls();
    }

    std::FILE* json = nullptr;
    if (!o.json_path.empty()) {
        json = std::fopen(o.json_path.c_str(), "a");
        if (json == nullptr) {
            std::fprintf(stderr, "route_bench: %s: %s\n", o.json_path.c_str(), std::strerror(errno));
            return 2;
        }
    }

    utsname un{};
    ::uname(&un);
    const std::string date = now_utc();
    const std::string model = cpu_model();
    std::printf("# route_bench: larivd routing throughput (SEND -> MSG via the real daemon, loopback TCP%s)\n",
                g_tls.client != nullptr ? "; tls = TLS 1.3, P-256 certificate" : "");
    std::printf("# date %s  host %s  kernel %s  nproc %u  cpu \"%s\"\n", date.c_str(), un.nodename,
                un.release, nproc(), model.c_str());
    for (std::size_t i = 0; i < o.binaries.size(); ++i) {
        std::printf("# %s = %s (%s)\n", label(i).c_str(), o.binaries[i].c_str(),
                    binary_info(o.binaries[i]).c_str());
    }
    std::printf("# per sample: fresh larivd, %.2g s warm-up, %.3g s measured; %u sample(s)%s;"
                " open: <= %zu KiB in flight per pair; ack: window %u\n",
                o.warmup, o.seconds, o.samples,
                o.binaries.size() > 1 ? ", binaries alternate" : "", o.inflight / 1024, o.window);
    std::printf("# msgs/s = MSGs verified at the receivers (all pairs), median [min..max]; MB/s = payload 1e6 B/s\n");
    std::fflush(stdout);

    std::vector<double> log_ratios(o.binaries.size(), 0.0);
    for (const config& c : configs) {
        std::vector<std::vector<double>> rates(o.binaries.size());
        for (unsigned k = 0; k < o.samples; ++k) {
            for (std::size_t b = 0; b < o.binaries.size(); ++b) {
                const auto r = run_sample(o.binaries[b], c, o);
                if (!r) {
                    std::fflush(stdout);
                    std::fprintf(stderr, "route_bench: FAIL [%s, %s sample %u, %s]: %s\n",
                                 config_name(c).c_str(), label(b).c_str(), k + 1,
                                 o.binaries[b].c_str(), g_fail_msg.c_str());
                    return 1;
                }
                if (o.verbose) {
                    std::fprintf(stderr, "  %s  %s sample %u: %.0f msgs/s\n", config_name(c).c_str(),
                                 label(b).c_str(), k + 1, *r);
                }
                rates[b].push_back(*r);
            }
        }
        std::string line = config_name(c);
        std::string js = "{\"bench\":\"route\",\"date\":\"" + date + "\",\"mode\":\"" +
                         (c.ack ? "ack" : "open") + "\",\"transport\":\"" + (c.tls ? "tls" : "tcp") +
                         "\",\"size\":" + std::to_string(c.size) +
                         ",\"pairs\":" + std::to_string(c.pairs) + ",\"threads\":" +
                         std::to_string(c.threads) + ",\"seconds\":" + fmt_g(o.seconds) +
                         ",\"warmup\":" + fmt_g(o.warmup) + ",\"window\":" +
                         (c.ack ? std::to_string(o.window) : std::string("null")) + ",\"nproc\":" +
                         std::to_string(nproc()) + ",\"cpu\":\"" + json_escape(model) + "\",\"results\":[";
        const summary base = summarize(rates[0]);
        std::string ratios;
        for (std::size_t b = 0; b < o.binaries.size(); ++b) {
            const summary s = summarize(rates[b]);
            const double mbs = s.median * static_cast<double>(c.size) / 1e6;
            char buf[160];
            std::snprintf(buf, sizeof buf, "  | %s %9s msgs/s [%s..%s] %7.2f MB/s", label(b).c_str(),
                          fmt_rate(s.median).c_str(), fmt_rate(s.min).c_str(), fmt_rate(s.max).c_str(),
                          mbs);
            line += buf;
            js += std::string(b == 0 ? "" : ",") + "{\"label\":\"" + label(b) + "\",\"binary\":\"" +
                  json_escape(o.binaries[b]) + "\",\"msgs_per_s\":{\"median\":" + fmt_rate(s.median) +
                  ",\"min\":" + fmt_rate(s.min) + ",\"max\":" + fmt_rate(s.max) + "},\"mb_per_s\":";
            std::snprintf(buf, sizeof buf, "%.3f", mbs);
            js += buf;
            js += ",\"samples\":[";
            for (std::size_t k = 0; k < rates[b].size(); ++k) {
                js += (k == 0 ? "" : ",") + fmt_rate(rates[b][k]);
            }
            js += "]}";
            if (b > 0) {
                const double ratio = s.median / base.median;
                log_ratios[b] += std::log(ratio);
                std::snprintf(buf, sizeof buf, "  %s/A %.3f", label(b).c_str(), ratio);
                line += buf;
                std::snprintf(buf, sizeof buf, "%s\"%s/A\":%.4f", ratios.empty() ? "" : ",",
                              label(b).c_str(), ratio);
                ratios += buf;
            }
        }
        js += "]";
        if (!ratios.empty()) {
            js += ",\"ratio\":{" + ratios + "}";
        }
        js += "}";
        std::printf("%s\n%s\n", line.c_str(), js.c_str());
        std::fflush(stdout);
        if (json != nullptr) {
            std::fprintf(json, "%s\n", js.c_str());
            std::fflush(json);
        }
    }
    for (std::size_t b = 1; b < o.binaries.size(); ++b) {
        std::printf("# %s/A geometric mean of the median ratios over %zu configurations: %.3f\n",
                    label(b).c_str(), configs.size(),
                    std::exp(log_ratios[b] / static_cast<double>(configs.size())));
    }
    if (json != nullptr) {
        std::fclose(json);
    }
    return 0;
}
